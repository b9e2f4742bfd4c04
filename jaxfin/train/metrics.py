"""Run outputs: metrics.jsonl (one JSON object per logged step), TensorBoard events, a progress line."""

from __future__ import annotations

import json
import time
from pathlib import Path


class MetricsWriter:
    """Appends to OUTPUT_DIR/metrics.jsonl; on resume, drops records past the restored step first."""

    def __init__(self, run_dir: Path, resume_step: int | None):
        self.path = run_dir / "metrics.jsonl"
        if self.path.exists():
            keep = []
            for line in self.path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a kill
                    continue
                if resume_step is not None and rec.get("step", 0) <= resume_step:
                    keep.append(line)
            self.path.write_text("".join(x + "\n" for x in keep))
        from tensorboardX import SummaryWriter

        self.tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=(resume_step or 0) + 1)

    def write(self, record: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        for k, v in record.items():
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                self.tb.add_scalar(k, v, record["step"])

    def close(self) -> None:
        self.tb.close()


class Progress:
    """`step 120/300  loss 3.412  lr 2.9e-04  tok/s 18,230  ETA 0:01:05` lines on stdout."""

    def __init__(self, total_steps: int, start_step: int):
        self.total, self.start_step, self.t0 = total_steps, start_step, time.time()

    def line(self, step: int, rec: dict) -> str:
        done = step - self.start_step
        rate = (time.time() - self.t0) / max(done, 1)
        eta = int(rate * (self.total - step))
        parts = [f"step {step}/{self.total}"]
        parts += [f"{k} {rec[k]:{f}}" for k, f in (("loss", ".4f"), ("lr", ".2e"), ("reward", ".3f")) if k in rec]
        if "tokens_per_s" in rec:
            parts.append(f"tok/s {rec['tokens_per_s']:,.0f}")
        if "moe/aux_loss" in rec:  # a mixture of experts: balance (E*sum f*p, 1 when even) and the busiest expert
            parts.append(f"moe aux {rec['moe/aux_loss']:.3f} load_max {rec['moe/load_max']:.3f}")
        if "dev_loss" in rec:
            parts.append(f"dev {rec['dev_loss']:.4f}")
        if "dev_reward" in rec:  # RL: the held-out reward of greedy completions
            parts.append(f"dev_reward {rec['dev_reward']:.3f}")
        if done == 0:  # the step-0 record (the starting model's evaluation): no rate yet
            return "  ".join(parts)
        parts.append(f"ETA {eta // 3600}:{eta // 60 % 60:02d}:{eta % 60:02d}")
        return "  ".join(parts)
