"""Orbax checkpoints of a training run: `OUTPUT_DIR/checkpoints/<step>/{state,meta}`.

`state` holds params, optimizer state, step and RNG together; `meta` (JSON) holds the data-iterator position
and the early-stopping record, so a restarted run continues exactly where it left off. A checkpoint that fails
to restore (truncated by a crash or a full disk) is moved aside to `checkpoints_corrupt/` with a warning and
the previous one is used.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path

import jax
import orbax.checkpoint as ocp

from jaxfin.config.schema import CheckpointConfig
from jaxfin.parallel.distributed import barrier

log = logging.getLogger("jaxfin")


def _manager(run_dir: Path, cfg: CheckpointConfig | None = None) -> ocp.CheckpointManager:
    cfg = cfg or CheckpointConfig(async_save=False)
    options = ocp.CheckpointManagerOptions(max_to_keep=cfg.keep, enable_async_checkpointing=cfg.async_save, create=True)
    return ocp.CheckpointManager(
        Path(run_dir).absolute() / "checkpoints", options=options, item_names=("state", "meta")
    )


class Checkpointer:
    """Saves every `checkpoint.every` steps (keeping the last K) and restores the newest readable one."""

    def __init__(self, run_dir: str | Path, cfg: CheckpointConfig):
        self.run_dir, self.cfg = Path(run_dir), cfg
        self.manager = _manager(self.run_dir, cfg)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, meta: dict, force: bool = False) -> bool:
        if step in self.manager.all_steps():
            return False
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        return self.manager.save(step, args=args, force=force)

    def restore(self, abstract_state):
        """(state, meta) from the newest checkpoint that restores, or None when there is none."""
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore())
                out = self.manager.restore(step, args=args)
                return out["state"], out["meta"]
            except Exception as e:  # noqa: BLE001 - any failure to read means this checkpoint is unusable
                self._set_aside(step, e)
        return None

    def _set_aside(self, step: int, error: Exception) -> None:
        src = self.run_dir.absolute() / "checkpoints" / str(step)
        dst = self.run_dir.absolute() / "checkpoints_corrupt" / str(step)
        log.warning(
            "checkpoint %s could not be restored (%s: %s); moved to %s and trying the previous one",
            src,
            type(error).__name__,
            str(error).splitlines()[0][:200] if str(error) else "",
            dst,
        )
        if jax.process_index() == 0:  # one process moves it (the run dir is shared); the others wait for that
            dst.parent.mkdir(parents=True, exist_ok=True)
            if dst.exists():
                shutil.rmtree(dst)
            shutil.move(str(src), str(dst))
        barrier("jaxfin-checkpoint-set-aside")
        self.manager.close()
        self.manager = _manager(self.run_dir, self.cfg)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def restore_params(run_dir: str | Path) -> dict:
    """The params of the newest readable checkpoint of a training run."""
    ckpt = Checkpointer(run_dir, CheckpointConfig(async_save=False))
    try:
        for step in sorted(ckpt.manager.all_steps(), reverse=True):
            try:
                with warnings.catch_warnings():  # no target sharding: params come back as saved, which we want
                    warnings.filterwarnings("ignore", message="Sharding info not provided")
                    out = ckpt.manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore()))
                return out["state"]["params"]
            except Exception as e:  # noqa: BLE001
                log.warning("checkpoint %s of %s could not be restored (%s); trying the previous one", step, run_dir, e)
        raise FileNotFoundError(f"no readable checkpoint under {Path(run_dir) / 'checkpoints'}")
    finally:
        ckpt.close()
