"""The training loop as a short loop over hooks: `run` calls the step function, then each hook in turn, at every
step. A hook is a small object with `on_step(loop)` and optionally `on_start(loop)` (before the first step; a record it
makes is the run's step-0 record), `on_end(loop)` (after the last step, or the step a hook stopped at) and
`close()` (always, also on an error). What a step logs, evaluates, keeps, checkpoints or
exports is the list of hooks `jaxfin/train/loop.py` builds; a recipe stage or an RL trainer runs the same `run`
with its own step function and hooks.

The order matters and is the list's: the log record is made first, evaluations add to it, the best model and the
metrics file read it, and the stop decision comes before the checkpoint, so a stopping step is saved.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

STEPS = "steps"  # the stop reason of a run that reached train.steps
SIGTERM = "SIGTERM"


@dataclass
class Loop:
    """What the hooks read and change. `meta` is checkpointed with the state (and restored on resume)."""

    step: int  # the step just run (the restored or start step before the first)
    last_step: int  # train.steps
    state: dict  # the train state
    meta: dict = field(default_factory=lambda: {"dev_best": None, "dev_bad_evals": 0, "dev_first": None})
    metrics: dict = field(default_factory=dict)  # this step's metrics from the step function (on device)
    record: dict | None = None  # this step's log record, or None when nothing is logged at this step
    stop_reason: str | None = None  # set by a hook: the loop ends after this step's hooks
    excluded_s: float = 0.0  # seconds spent in evaluation since the last log record (kept out of tokens/s)

    def log(self) -> dict:
        """This step's record, made (step, loss, lr) if no hook has made it yet."""
        if self.record is None:
            self.record = {"step": self.step, "loss": float(self.metrics["loss"]), "lr": float(self.metrics["lr"])}
        return self.record

    def due(self, every: int) -> bool:
        """Every `every` steps and at the last step; never when every is 0."""
        return bool(every) and (self.step % every == 0 or self.step == self.last_step)


class Hook:
    def on_start(self, loop: Loop) -> None:
        pass

    def on_step(self, loop: Loop) -> None:
        pass

    def on_end(self, loop: Loop) -> None:
        pass

    def close(self) -> None:
        pass


def run(loop: Loop, step_fn: Callable[[dict, int], tuple[dict, dict]], hooks: Iterable[Hook]) -> Loop:
    """Steps loop.step+1 .. loop.last_step: `state, metrics = step_fn(state, step)`, then every hook's on_step;
    stops early when a hook sets loop.stop_reason (else it is STEPS), then every hook's on_end."""
    hooks = list(hooks)
    try:
        for hook in hooks:
            hook.on_start(loop)
        loop.record = None
        for step in range(loop.step + 1, loop.last_step + 1):
            loop.state, loop.metrics = step_fn(loop.state, step)
            loop.step, loop.record = step, None
            for hook in hooks:
                hook.on_step(loop)
            if loop.stop_reason:
                break
        loop.stop_reason = loop.stop_reason or STEPS
        for hook in hooks:
            hook.on_end(loop)
    finally:
        for hook in hooks:
            hook.close()
    return loop


class LogRecord(Hook):
    """Every `every` steps and at the last: the step's metrics, tokens/s over the steps since the last record
    (evaluation time left out) and `extra()` (the data mixture). Token counts stay on device between records."""

    def __init__(self, every: int, extra: Callable[[int], dict] = lambda step: {}, clock=time.time):
        self.every, self.extra, self.clock = every, extra, clock
        self.tokens, self.t0 = 0, clock()

    def on_step(self, loop: Loop) -> None:
        self.tokens = self.tokens + loop.metrics["tokens"]  # a device add: no sync per step
        if not loop.due(self.every):
            return
        now = self.clock()
        seconds = max(now - self.t0 - loop.excluded_s, 1e-9)
        rec = {k: float(v) for k, v in loop.metrics.items() if k != "tokens"}
        rec.update(step=loop.step, tokens_per_s=float(self.tokens) / seconds, **self.extra(loop.step))
        loop.log().update(rec)
        self.tokens, self.t0, loop.excluded_s = 0, now, 0.0


class Timed(Hook):
    """An evaluation hook: its on_step time is kept out of the next tokens/s."""

    clock = staticmethod(time.time)

    def on_step(self, loop: Loop) -> None:
        t0 = self.clock()
        self.evaluate(loop)
        loop.excluded_s += self.clock() - t0

    def evaluate(self, loop: Loop) -> None:
        raise NotImplementedError


class DevEval(Timed):
    """Every `every` steps: `evaluate(state)` -> {dev_loss, ...} into the record; tracks the first, best and last
    dev loss and the evaluations since the best value of `metric` (in loop.meta, so they survive a resume). With
    `patience` > 0 the run stops after that many evaluations without a new best of `metric` (lower for mode min,
    higher for max; dev_loss when the evaluation does not report `metric`)."""

    def __init__(self, evaluate: Callable[[dict], dict], every: int, patience: int = 0, metric: str = "dev_loss",
                 mode: str = "min"):  # fmt: skip
        self.dev, self.every, self.patience = evaluate, every, patience
        self.metric, self.mode = metric, mode
        self.last: float | None = None

    def evaluate(self, loop: Loop) -> None:
        if not loop.due(self.every):
            return
        devs = self.dev(loop.state)
        loop.log().update(devs)
        self.last = value = devs["dev_loss"]
        meta = loop.meta
        if meta["dev_first"] is None:
            meta["dev_first"] = value
        if meta["dev_best"] is None or value < meta["dev_best"]:
            meta["dev_best"] = value
        metric, mode = (self.metric, self.mode) if self.metric in devs else ("dev_loss", "min")
        watched, best = float(devs[metric]), meta.get("patience_best")
        if best is None or (watched < best if mode == "min" else watched > best):
            meta["patience_best"], meta["dev_bad_evals"] = watched, 0
        else:
            meta["dev_bad_evals"] += 1
        if self.patience and meta["dev_bad_evals"] >= self.patience:
            what = "dev loss" if metric == "dev_loss" else metric
            loop.stop_reason = f"early stop: {what} has not improved for {self.patience} evaluations"


class TaskEval(Timed):
    """Every `every` steps: `evaluate(state)` -> {eval/<task>/<metric>: value} into the record. With `at_start`,
    also the starting model's, as a step-0 record, when a run starts afresh (an RL run's curve starts there)."""

    def __init__(self, evaluate: Callable[[dict], dict], every: int, at_start: bool = False):
        self.tasks, self.every, self.at_start = evaluate, every, at_start

    def on_start(self, loop: Loop) -> None:
        if self.at_start and loop.step == 0:
            loop.record = {"step": 0, **(loop.record or {}), **self.tasks(loop.state)}

    def evaluate(self, loop: Loop) -> None:
        if loop.due(self.every):
            loop.log().update(self.tasks(loop.state))


class KeepBest(Hook):
    """When the record has `metric` and it beats the best so far (lower for mode min, higher for max):
    `save(state, best)` with best = {metric, value, step}, kept in loop.meta["best"]."""

    def __init__(self, metric: str, mode: str, save: Callable[[dict, dict], None]):
        self.metric, self.mode, self.save = metric, mode, save

    def on_step(self, loop: Loop) -> None:
        rec = loop.record
        if not self.metric or rec is None or self.metric not in rec:
            return
        value, best = float(rec[self.metric]), loop.meta.get("best")
        if best is not None and not (value < best["value"] if self.mode == "min" else value > best["value"]):
            return
        loop.meta["best"] = {"metric": self.metric, "value": value, "step": loop.step}
        self.save(loop.state, loop.meta["best"])


class WriteMetrics(Hook):
    """Each record to the metrics file (a MetricsWriter) and a progress line (a Progress) to stdout."""

    def __init__(self, writer, progress):
        self.writer, self.progress = writer, progress

    def on_start(self, loop: Loop) -> None:
        self.on_step(loop)

    def on_step(self, loop: Loop) -> None:
        if loop.record is None:
            return
        rec = dict(loop.record)
        self.writer.write({"step": rec.pop("step"), **rec})
        print(self.progress.line(loop.step, rec), flush=True)

    def close(self) -> None:
        self.writer.close()


class StopFlag:
    """SIGTERM (preemption) asks the loop to checkpoint and exit cleanly at the next step boundary; installed
    from the start of a run, so a SIGTERM while data loads or the step compiles is honoured too."""

    def __init__(self):
        self.set = False
        self.previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        self.set = True

    def restore(self):
        signal.signal(signal.SIGTERM, self.previous)


class StopOnSignal(Hook):
    """Stop (reason SIGTERM) when any process saw the flag. `agree(flag)` asks every process; with several it is
    a collective, so it is asked only on steps with a record (already a sync point), and all stop at one step."""

    def __init__(self, flag: StopFlag, agree: Callable[[bool], bool], processes: int = 1):
        self.flag, self.agree, self.processes = flag, agree, processes

    def on_step(self, loop: Loop) -> None:
        if loop.stop_reason is None and (loop.record is not None or self.processes == 1) and self.agree(self.flag.set):
            loop.stop_reason = SIGTERM


class Checkpoint(Hook):
    """A checkpoint every `every` steps, at a stopping step, and at the end of the run (force: whatever the
    checkpointer's own schedule), with loop.meta and `extra()` (the data position) beside the state."""

    def __init__(self, checkpointer, every: int, extra: Callable[[], dict] = dict):
        self.ckpt, self.every, self.extra = checkpointer, every, extra

    def _save(self, loop: Loop, **kw) -> None:
        self.ckpt.save(loop.step, loop.state, {**loop.meta, **self.extra(), "step": loop.step}, **kw)

    def on_step(self, loop: Loop) -> None:
        if (self.every and loop.step % self.every == 0) or loop.stop_reason:
            self._save(loop)

    def on_end(self, loop: Loop) -> None:
        if loop.step == loop.last_step:
            self._save(loop, force=True)

    def close(self) -> None:
        self.ckpt.close()


class AtEnd(Hook):
    """`fn(state)` once the run ends, unless it stopped for SIGTERM (a preempted run exports when it finishes)."""

    def __init__(self, fn: Callable[[dict], None]):
        self.fn = fn

    def on_end(self, loop: Loop) -> None:
        if loop.stop_reason != SIGTERM:
            self.fn(loop.state)
