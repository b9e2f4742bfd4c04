"""RL on the training mesh: the same tiny GRPO (with a KL reference) and PPO runs on 1 device and on 4 CPU devices
as data x FSDP shards give the same completions (rewards) and losses. The 4-device runs are in a subprocess (the
device count is fixed when JAX starts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO
from tests.rl_configs import tiny_rl_config

RUNS = {"grpo": "  beta: 0.05\n  num_iterations: 2", "ppo": "  num_mini_batches: 2"}
MESHES = {"dp4": "{data: 4}", "dp2_fsdp2": "{data: 2, fsdp: 2}"}

DRIVER = """
import json, pathlib, sys
from tests.rl_configs import tiny_rl_config
from jaxfin.train import train
tmp, runs, meshes = pathlib.Path(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3])
for obj, extra in runs.items():
    for name, mesh in meshes.items():
        train(tiny_rl_config(tmp, f"{obj}_{name}", obj, objective_extra=extra, top_extra=f"mesh: {mesh}"))
"""


def _curve(run) -> list[tuple[float, float]]:
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["loss"], r["reward"]) for r in recs]


@pytest.mark.slow
def test_rl_on_four_devices_equals_one(tmp_path):
    from jaxfin.train import train

    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(tmp_path), json.dumps(RUNS), json.dumps(MESHES)],
                          capture_output=True, text=True, cwd=REPO, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    for obj, extra in RUNS.items():
        train(tiny_rl_config(tmp_path, f"{obj}_one", obj, objective_extra=extra))
        one = np.array(_curve(tmp_path / f"{obj}_one"))
        assert len(one) == 3 and np.ptp(one[:, 1]) > 0  # three steps, rewards that move
        for name in MESHES:
            np.testing.assert_allclose(np.array(_curve(tmp_path / f"{obj}_{name}")), one, rtol=1e-5, atol=1e-6,
                                       err_msg=f"{obj} on {name}")  # fmt: skip
