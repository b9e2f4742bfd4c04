"""Each training hook on its own (jaxfin/train/hooks.py), with a fake step function: no model, no compile. The
whole loop with real hooks runs in test_train.py, test_resume.py, test_eval_training.py and test_post_training.py."""

from __future__ import annotations

import os
import signal

import pytest

from jaxfin.train.hooks import (
    SIGTERM,
    STEPS,
    AtEnd,
    Checkpoint,
    DevEval,
    Hook,
    KeepBest,
    LogRecord,
    Loop,
    StopFlag,
    StopOnSignal,
    TaskEval,
    WriteMetrics,
    run,
)


def _step(state, step):
    """A fake step: the state counts steps; loss 1/step, 10 tokens a step."""
    return {"n": state["n"] + 1}, {"loss": 1.0 / step, "lr": 0.1, "tokens": 10}


def _loop(last=6, start=0) -> Loop:
    return Loop(step=start, last_step=last, state={"n": start})


class Recorder(Hook):
    """The steps and records every hook before it left, and the calls it got."""

    def __init__(self):
        self.steps, self.records, self.ended, self.closed = [], [], None, False

    def on_step(self, loop):
        self.steps.append(loop.step)
        self.records.append(None if loop.record is None else dict(loop.record))

    def on_end(self, loop):
        self.ended = (loop.step, loop.stop_reason)

    def close(self):
        self.closed = True


def test_run_calls_the_step_and_every_hook_in_order_and_ends_and_closes():
    seen = []

    class Note(Hook):
        def __init__(self, name):
            self.name = name

        def on_step(self, loop):
            seen.append((loop.step, self.name, loop.state["n"]))

    rec = Recorder()
    loop = run(_loop(last=3, start=1), _step, [Note("a"), Note("b"), rec])
    assert seen == [(2, "a", 2), (2, "b", 2), (3, "a", 3), (3, "b", 3)]  # resumed at 1: steps 2 and 3
    assert loop.step == 3 and loop.state == {"n": 3} and loop.stop_reason == STEPS
    assert rec.ended == (3, STEPS) and rec.closed


def test_a_hook_stops_the_run_after_the_steps_hooks_and_close_runs_on_errors():
    class StopAt(Hook):
        def on_step(self, loop):
            if loop.step == 2:
                loop.stop_reason = "enough"

    rec = Recorder()
    loop = run(_loop(), _step, [StopAt(), rec])
    assert rec.steps == [1, 2] and loop.step == 2 and rec.ended == (2, "enough")  # the later hook saw step 2

    class Boom(Hook):
        def on_step(self, loop):
            raise RuntimeError("boom")

    rec = Recorder()
    with pytest.raises(RuntimeError, match="boom"):
        run(_loop(), _step, [rec, Boom()])
    assert rec.closed and rec.ended is None


def test_log_record_every_n_steps_and_at_the_end_with_tokens_per_second_without_eval_time():
    now = [100.0]
    clock = lambda: now[0]  # noqa: E731
    log = LogRecord(every=4, extra=lambda step: {"mix/a": step / 10}, clock=clock)
    rec = Recorder()

    class Tick(Hook):  # 1 s per step; 2 s of "evaluation" at step 2 (kept out of tokens/s)
        def on_step(self, loop):
            now[0] += 1.0
            if loop.step == 2:
                now[0] += 2.0
                loop.excluded_s += 2.0

    loop = _loop(last=6)
    run(loop, _step, [Tick(), log, rec])
    got = [r for r in rec.records if r is not None]
    assert [r["step"] for r in got] == [4, 6]
    assert got[0] == {"step": 4, "loss": 0.25, "lr": 0.1, "tokens_per_s": 40 / 4.0, "mix/a": 0.4}
    assert got[1]["tokens_per_s"] == 20 / 2.0 and loop.excluded_s == 0.0
    assert LogRecord(every=0).every == 0 and not _loop().due(0)  # every 0: never (due reads it)


def test_dev_eval_tracks_first_best_bad_evaluations_and_stops_on_patience():
    losses = iter([3.0, 2.0, 2.5, 2.2, 1.0])
    dev = DevEval(lambda state: {"dev_loss": next(losses), "dev_loss/a": 0.0}, every=2, patience=2)
    rec = Recorder()
    loop = run(_loop(last=10), _step, [dev, rec])
    # dev at 2 (3.0), 4 (2.0, best), 6 (2.5, 1 bad), 8 (2.2, 2 bad: stop)
    assert loop.step == 8 and "has not improved for 2 evaluations" in loop.stop_reason
    assert loop.meta == {"dev_first": 3.0, "dev_best": 2.0, "dev_bad_evals": 2, "patience_best": 2.0}
    assert dev.last == 2.2
    assert rec.records[1] == {"step": 2, "loss": 0.5, "lr": 0.1, "dev_loss": 3.0, "dev_loss/a": 0.0}
    assert rec.records[0] is None  # no dev at step 1: no record made

    resumed = _loop(last=10, start=8)
    resumed.meta = {
        "dev_first": 3.0,
        "dev_best": 2.0,
        "dev_bad_evals": 1,
        "patience_best": 2.0,
    }  # restored from a checkpoint
    run(resumed, _step, [DevEval(lambda state: {"dev_loss": 1.5}, every=2, patience=2)])
    assert (
        resumed.meta == {"dev_first": 3.0, "dev_best": 1.5, "dev_bad_evals": 0, "patience_best": 1.5}
        and resumed.stop_reason == STEPS
    )


def test_patience_watches_the_best_metric_when_the_dev_evaluation_reports_it():
    """Preference accuracy (higher is better) stops the run while the dev loss still falls; a metric the dev
    evaluation does not report falls back to the dev loss."""
    evals = iter([(3.0, 0.5), (2.9, 0.6), (2.8, 0.6), (2.7, 0.55), (2.6, 0.7)])

    def dev(state):
        loss, acc = next(evals)
        return {"dev_loss": loss, "dev_rewards/accuracy": acc}

    loop = run(_loop(last=10), _step, [DevEval(dev, every=2, patience=2, metric="dev_rewards/accuracy", mode="max")])
    assert loop.step == 8 and loop.stop_reason.startswith("early stop: dev_rewards/accuracy has not improved for 2")
    assert loop.meta["dev_best"] == 2.7 and loop.meta["patience_best"] == 0.6
    losses = iter([3.0, 2.0, 2.5, 2.2, 1.0])
    other = DevEval(lambda state: {"dev_loss": next(losses)}, every=2, patience=2, metric="eval/fpb/acc", mode="max")
    loop = run(_loop(last=10), _step, [other])
    assert loop.step == 8 and "dev loss has not improved" in loop.stop_reason


def test_task_eval_adds_its_metrics_on_its_steps_and_at_the_last():
    seen = []
    tasks = TaskEval(lambda state: seen.append(state["n"]) or {"eval/fpb/accuracy": 0.5}, every=4)
    rec = Recorder()
    run(_loop(last=6), _step, [tasks, rec])
    assert seen == [4, 6]
    assert rec.records[3] == {"step": 4, "loss": 0.25, "lr": 0.1, "eval/fpb/accuracy": 0.5}


@pytest.mark.parametrize("mode, values, saved", [("min", [3, 2, 4, 1], [2, 4, 8]), ("max", [3, 2, 4, 1], [2, 6])])
def test_keep_best_saves_only_improvements_of_its_metric(mode, values, saved):
    it = iter(values)
    saves = []
    best = KeepBest("dev_loss", mode, lambda state, b: saves.append((state["n"], dict(b))))
    dev = DevEval(lambda state: {"dev_loss": float(next(it))}, every=2)
    loop = run(_loop(last=8), _step, [LogRecord(every=1), dev, best])
    assert [s for s, _ in saves] == saved
    want = min(values) if mode == "min" else max(values)
    assert loop.meta["best"] == {"metric": "dev_loss", "value": want, "step": saved[-1]} == saves[-1][1]
    nothing = []
    run(_loop(last=3), _step, [LogRecord(every=1), KeepBest("dev_loss", "min", lambda s, b: nothing.append(b))])
    assert nothing == []  # the metric is never in the record


def test_write_metrics_writes_records_and_progress_lines(capsys):
    class Writer:
        def __init__(self):
            self.rows, self.closed = [], False

        def write(self, row):
            self.rows.append(row)

        def close(self):
            self.closed = True

    class Progress:
        def line(self, step, rec):
            return f"step {step} loss {rec['loss']:.2f} keys {sorted(rec)}"

    w = Writer()
    run(_loop(last=4), _step, [LogRecord(every=2), WriteMetrics(w, Progress())])
    assert [r["step"] for r in w.rows] == [2, 4] and w.closed
    assert list(w.rows[0])[0] == "step"
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "step 2 loss 0.50 keys ['loss', 'lr', 'tokens_per_s']",
        "step 4 loss 0.25 keys ['loss', 'lr', 'tokens_per_s']",
    ]


def test_sigterm_stops_at_the_next_step_and_several_processes_agree_only_on_logged_steps():
    flag = StopFlag()
    try:

        class Kill(Hook):
            def on_step(self, loop):
                if loop.step == 2:
                    os.kill(os.getpid(), signal.SIGTERM)

        loop = run(_loop(), _step, [Kill(), StopOnSignal(flag, lambda f: f)])
        assert flag.set and loop.step == 2 and loop.stop_reason == SIGTERM
    finally:
        flag.restore()
    assert signal.getsignal(signal.SIGTERM) == flag.previous  # the handler before it is back

    asked = []
    flag = type("Flag", (), {"set": True})()
    loop = run(_loop(), _step, [LogRecord(every=3), StopOnSignal(flag, lambda f: asked.append(f) or f, processes=2)])
    assert asked == [True] and loop.step == 3 and loop.stop_reason == SIGTERM  # asked first at the logged step 3

    class Done(Hook):
        def on_step(self, loop):
            loop.stop_reason = "early stop"

    early = run(_loop(), _step, [Done(), StopOnSignal(flag, lambda f: f)])
    assert early.step == 1 and early.stop_reason == "early stop"  # an earlier stop reason is kept


def test_checkpoint_every_n_on_a_stop_and_forced_at_the_end():
    class Ckpt:
        def __init__(self):
            self.saves, self.closed = [], False

        def save(self, step, state, meta, force=False):
            self.saves.append((step, state["n"], meta["data"], meta["step"], force))

        def close(self):
            self.closed = True

    c = Ckpt()
    run(_loop(last=5), _step, [Checkpoint(c, every=2, extra=lambda: {"data": "pos"})])
    assert c.saves == [(2, 2, "pos", 2, False), (4, 4, "pos", 4, False), (5, 5, "pos", 5, True)] and c.closed

    class StopAt3(Hook):
        def on_step(self, loop):
            loop.stop_reason = SIGTERM if loop.step == 3 else None

    c = Ckpt()
    run(_loop(last=5), _step, [StopAt3(), Checkpoint(c, every=0, extra=lambda: {"data": 0})])
    assert c.saves == [(3, 3, 0, 3, False)]  # the stopping step; not the end (it was not reached)


def test_at_end_runs_once_unless_the_run_was_preempted():
    done = []
    run(_loop(last=3), _step, [AtEnd(lambda state: done.append(state["n"]))])
    assert done == [3]

    class Term(Hook):
        def on_step(self, loop):
            loop.stop_reason = SIGTERM

    run(_loop(last=3), _step, [Term(), AtEnd(lambda state: done.append(state["n"]))])
    assert done == [3]
