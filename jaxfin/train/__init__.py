"""Training: loop, objectives, optimizer and schedules, checkpointing. Entry point: `train(cfg)`."""

from jaxfin.train.loop import train

__all__ = ["train"]
