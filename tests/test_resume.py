"""Kill/resume: a SIGKILLed or SIGTERMed run, restarted with the same command, logs exactly (bitwise, CPU) the
losses of an uninterrupted run; a truncated latest checkpoint is set aside and the previous one is used."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from tolerances import assert_close_to_scale, rounding_tol

REPO = Path(__file__).resolve().parents[1]
STEPS = 60  # small_config (conftest.py) runs 60 steps


def _losses(run: Path) -> dict[int, str]:
    """step -> loss as written (JSON text of the float, so equality is bitwise)."""
    out = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        out[rec["step"]] = repr(rec["loss"])
    return out


def _cmd(config: Path, run: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "jaxfin.launch", str(config), f"output_dir={run}", *extra]


def _run(config, run, *extra) -> subprocess.CompletedProcess:
    p = subprocess.run(_cmd(config, run, *extra), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return p


@pytest.fixture(scope="module")
def reference_run(small_config, tmp_path_factory):
    run = tmp_path_factory.mktemp("ref") / "run"
    _run(small_config, run)
    losses = _losses(run)
    assert sorted(losses) == list(range(1, STEPS + 1))
    return run, losses


def _start(config, run):
    return subprocess.Popen(_cmd(config, run), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(pred, proc, timeout=300):
    t0 = time.time()
    while not pred():
        assert proc.poll() is None, "the run ended before it could be interrupted"
        assert time.time() - t0 < timeout
        time.sleep(0.02)


def _logged_steps(run: Path) -> int:
    p = run / "metrics.jsonl"
    return len(p.read_text().splitlines()) if p.exists() else 0


@pytest.mark.slow
def test_sigkill_then_resume_is_bitwise(small_config, reference_run, tmp_path):
    _, ref = reference_run
    run = tmp_path / "run"
    proc = _start(small_config, run)
    _wait_for(lambda: (run / "checkpoints" / "8").is_dir(), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = _logged_steps(run)
    assert killed_at < STEPS

    p = _run(small_config, run)
    assert "resumed from" in p.stdout
    resumed = int(p.stdout.split("resumed from")[1].split()[0].rsplit("/", 1)[-1])
    assert 8 <= resumed < STEPS
    got = _losses(run)
    assert sorted(got) == list(range(1, STEPS + 1))  # no step lost or logged twice
    assert all(got[s] == ref[s] for s in range(resumed + 1, STEPS + 1)), "resumed losses differ from uninterrupted run"


@pytest.mark.slow
def test_sigterm_saves_and_exits_cleanly(small_config, reference_run, tmp_path):
    _, ref = reference_run
    run = tmp_path / "run"
    proc = _start(small_config, run)
    _wait_for(lambda: _logged_steps(run) >= 6, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    assert "SIGTERM" in out
    stopped = max(_losses(run))
    assert stopped < STEPS
    assert (run / "checkpoints" / str(stopped)).is_dir(), "SIGTERM must checkpoint the step it stopped at"

    p = _run(small_config, run)
    assert f"resumed from {run / 'checkpoints' / str(stopped)}" in p.stdout
    got = _losses(run)
    assert got == ref


@pytest.mark.slow
def test_truncated_latest_checkpoint_falls_back(small_config, reference_run, tmp_path):
    ref_run, ref = reference_run
    run = tmp_path / "run"
    _run(small_config, run, "train.steps=12", "checkpoint.keep=3")
    steps = sorted(int(p.name) for p in (run / "checkpoints").iterdir())
    assert steps == [4, 8, 12]
    # Cut the biggest array file of the newest checkpoint in half, as a crash mid-write would.
    files = [f for f in (run / "checkpoints" / "12").rglob("*") if f.is_file()]
    biggest = max(files, key=lambda f: f.stat().st_size)
    with biggest.open("r+b") as f:
        f.truncate(biggest.stat().st_size // 2)

    p = _run(small_config, run)
    assert "checkpoint" in p.stderr and "12" in p.stderr and "could not be restored" in p.stderr
    assert f"resumed from {run / 'checkpoints' / '8'}" in p.stdout
    assert (run / "checkpoints_corrupt" / "12").is_dir()
    assert _losses(run) == ref


def test_run_outputs(reference_run):
    run, _ = reference_run
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    for key in ("step", "loss", "lr", "grad_norm", "tokens_per_s"):
        assert all(key in r for r in recs), key
    assert [r["step"] for r in recs if "dev_loss" in r] == list(range(10, STEPS + 1, 10))
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["train"]["steps"] == STEPS and resolved["output_dir"] == str(run)
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    devs = [r["dev_loss"] for r in recs if "dev_loss" in r]
    assert devs[-1] < devs[0] - 0.5, devs  # it learns
    # keep the last 3 checkpoints
    assert sorted(int(p.name) for p in (run / "checkpoints").iterdir()) == [52, 56, 60]


def test_convert_run_dir_to_hf_with_cli(reference_run, tmp_path):
    """`jaxfin convert RUN_DIR HF_DIR` exports the latest checkpoint; transformers gives jaxfin's logits."""
    import numpy as np
    import torch
    import transformers

    import jaxfin

    run, _ = reference_run
    p = subprocess.run(
        [sys.executable, "-m", "jaxfin.cli", "convert", str(run), str(tmp_path / "hf")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    tokens = np.arange(5, 29)[None]
    ours = np.asarray(jaxfin.load_model(run).logits(tokens))
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        theirs = hf(torch.tensor(tokens)).logits.numpy()
    # float32, two implementations: depth ~4L+2 reductions of <= max(I, S) terms, relative to max|logit| (~2e-4 of 3
    # here). Measured 1e-6; jaxfin is as far from its own float64 logits
    c = hf.config
    tol = rounding_tol(np.float32, max(c.intermediate_size, tokens.shape[1]), depth=4 * c.num_hidden_layers + 2)
    assert_close_to_scale(ours, theirs, tol)
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert tok.decode(tok("Revenue rose 12%").input_ids, skip_special_tokens=True) == "Revenue rose 12%"
