"""`jaxfin compile` on what this CPU machine has (no libtpu): target names, the per-step cost extension against
XLA's own analysis of the fully unrolled step, the collectives parser, the memory split, the roofline arithmetic and
the errors. Compiling for real TPU topologies is tests/tpu/ (run by `make compile-check` in a libtpu venv)."""

import dataclasses
import json
import math
import os
import subprocess
import sys

import pytest
from conftest import REPO

from jaxfin.compile import aot
from jaxfin.compile.hlo import collectives
from jaxfin.compile.targets import CHIPS, Chip, Target, parse_target
from jaxfin.config import load_config
from jaxfin.config.errors import ConfigError


# ------------------------------------------------------------------------------------------------ targets
@pytest.mark.parametrize(
    "name, topology",
    [
        # Cloud TPU's published slice shapes (cloud.google.com/tpu/docs/v5p, v4, v5e, v6e): v4/v5p names count
        # TensorCores (2 per chip), v5e/v6e names count chips
        ("v5p-8", "v5p:2x2x1"), ("v5p-16", "v5p:2x2x2"), ("v5p-64", "v5p:2x4x4"), ("v5p-128", "v5p:4x4x4"),
        ("v5p-256", "v5p:4x4x8"), ("v5p-512", "v5p:4x8x8"), ("v4-32", "v4:2x2x4"), ("v4-1024", "v4:8x8x8"),
        ("v5litepod-16", "v5e:4x4"), ("v5e-32", "v5e:4x8"), ("v6e-256", "v6e:16x16"), ("v6e-8", "v6e:2x4"),
        ("v5p:4x4x2", "v5p:4x4x2"), ("V6E:8x8", "v6e:8x8"),
        ("h100x8", "gpu:8"), ("2xH100", "gpu:16"), ("mi300x8", "gpu:8"), ("cpu:4", "cpu:4"),
    ],
)  # fmt: skip
def test_target_names_as_users_write_them(name, topology):
    assert parse_target(name).topology == topology


def test_bad_target_names_say_what_is_accepted():
    with pytest.raises(ConfigError, match="unknown topology 'v9-8'.*v5p-64"):
        parse_target("v9-8")
    with pytest.raises(ConfigError, match="2 per chip"):
        parse_target("v5p-9")
    with pytest.raises(ConfigError, match="no standard slice shape for 24 chips"):
        parse_target("v5p-48")


def test_gpu_targets_refuse_deviceless_compilation_with_a_reason():
    from jaxfin.compile.targets import devices

    with pytest.raises(ConfigError, match="cannot compile for a GPU without one"):
        devices(parse_target("h100x8"))


# --------------------------------------------------------------------------------------------- per-step costs
@pytest.fixture(scope="module")
def tiny(small_config):
    return aot.resolve(load_config(small_config, ["model.num_layers=3"]))


def test_probe_costs_match_xla_on_the_fully_unrolled_step(tiny):
    """The cost extension (module doc of jaxfin/compile/aot.py) against XLA's cost analysis of the real step with
    every layer unrolled (nothing inside a loop to be undercounted)."""
    cfg = tiny
    mesh = aot.mesh_for(cfg, parse_target("cpu:1"))
    est = aot.step_costs(cfg, mesh)
    unrolled = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, scan_layers=False))
    real = aot._costs_of(aot._compile(unrolled, mesh)[0])
    assert est["flops"] == pytest.approx(real["flops"], rel=0.01)
    assert est["bytes"] == pytest.approx(real["bytes"], rel=0.05)
    scanned = aot._costs_of(aot._compile(cfg, mesh)[0])  # the scanned step counts one layer body
    assert scanned["flops"] < 0.8 * real["flops"]


def test_probe_costs_grow_with_micro_batches_like_the_work(tiny):
    """Two micro-batches of the same rows each: the forward/backward FLOPs double, the optimizer's do not."""
    mesh = aot.mesh_for(tiny, parse_target("cpu:1"))
    one = aot.step_costs(tiny, mesh)
    two = aot.step_costs(
        dataclasses.replace(tiny, train=dataclasses.replace(tiny.train, micro_batches=2,
                                                             batch_size=2 * tiny.train.batch_size)), mesh)  # fmt: skip
    assert 1.85 * one["flops"] < two["flops"] < 2.0 * one["flops"]


def test_model_flops_follow_the_6n_formula(tiny):
    from jaxfin.bench.train import flops_params

    m = tiny.model
    n, tokens = flops_params(m), tiny.train.batch_size * tiny.data.seq_len
    attn = 12 * m.num_layers * m.num_heads * m.head_size * tiny.data.seq_len / 2  # causal
    assert aot.model_flops_per_device(tiny, 2) == pytest.approx((6 * n + attn) * tokens / 2)


# ------------------------------------------------------------------------------------------------ collectives
HLO = """
  %all-gather.1 = bf16[8,128]{1,0} all-gather(bf16[2,128]{1,0} %p), replica_groups=[2,4]<=[8], dimensions={0}
  %ag-start = (bf16[2,64]{1,0}, bf16[8,64]{1,0}) all-gather-start(bf16[2,64]{1,0} %q), replica_groups={{0,1,2,3}}
  %ag-done = bf16[8,64]{1,0} all-gather-done((bf16[2,64]{1,0}, bf16[8,64]{1,0}) %ag-start)
  %rs = f32[4,32]{1,0} reduce-scatter(f32[16,32]{1,0} %g), replica_groups=[2,4]<=[8], dimensions={0}
  %ar = (f32[10]{0}, f32[6]{0}) all-reduce(f32[10]{0} %a, f32[6]{0} %b), replica_groups={{0,1}}, to_apply=%add
  %cp = (f32[16]{0}, f32[16]{0}, u32[], u32[]) collective-permute-start(f32[16]{0} %x), source_target_pairs={{0,1}}
  %cpd = f32[16]{0} collective-permute-done((f32[16]{0}, f32[16]{0}, u32[], u32[]) %cp)
"""


def test_collectives_are_counted_once_per_async_pair_and_sized_by_ring_cost():
    c = collectives(HLO)
    assert c["all-gather"] == {"count": 2, "bytes": 8 * 128 * 2 + 8 * 64 * 2}
    assert c["reduce-scatter"] == {"count": 1, "bytes": 4 * 32 * 4 * 4}  # the operand: result x group of 4
    assert c["all-reduce"] == {"count": 1, "bytes": 2 * (10 + 6) * 4}
    assert c["collective-permute"] == {"count": 1, "bytes": 16 * 4}
    assert c["all-to-all"] == {"count": 0, "bytes": 0.0}


# ---------------------------------------------------------------------------------------------------- roofline
def test_roofline_terms_are_the_costs_over_the_chip_rates():
    chip = Chip("x", "tpu", peak_tflops=100.0, hbm_gib=16, hbm_gbps=1000.0, link_gbps=100.0, source="")
    costs = {"flops": 2e12, "bytes": 1e10, **{f"{k}.bytes": 0.0 for k in
                                              ("all-gather", "reduce-scatter", "all-reduce", "all-to-all")},
             "collective-permute.bytes": 3e9}  # fmt: skip
    r = aot.roofline(costs, Target("x", chip, "v5p:1x1x1"), model_flops=1e12)
    assert (r["compute_s"], r["hbm_s"], r["collectives_s"]) == pytest.approx((0.02, 0.01, 0.03))
    assert r["dominant"] == "collectives" and r["step_s"] == pytest.approx(0.03)
    assert r["mfu_bound"] == pytest.approx(1e12 / (100e12 * 0.03))
    # an HLO count below the model's own FLOPs (loops counted once) gives way to the model's: still a lower bound
    low = aot.roofline({**costs, "flops": 1e11}, Target("x", chip, "v5p:1x1x1"), model_flops=1e12)
    assert low["compute_s"] == pytest.approx(0.01)


def test_chip_table_matches_the_bench_peaks():
    """One dense-bf16 peak per chip: the compile table agrees with jaxfin bench train's (both from vendor pages)."""
    from jaxfin.bench.train import peak_tflops

    kinds = {"v4": "TPU v4", "v5e": "TPU v5 lite", "v5p": "TPU v5", "v6e": "TPU v6 lite", "h100": "NVIDIA H100 80GB "
             "HBM3", "h200": "NVIDIA H200", "mi300x": "AMD Instinct MI300X"}  # fmt: skip
    for key, chip in CHIPS.items():
        assert peak_tflops(kinds[key]) == chip.peak_tflops, key


# ------------------------------------------------------------------------------------- the command, 4 CPU devices
def _compile_cli(cfg_path, *args, devices=4):
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-m", "jaxfin", "compile", str(cfg_path), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


@pytest.mark.slow
def test_compile_command_on_four_cpu_devices_splits_the_state_and_gathers_weights(small_config, tmp_path):
    out = tmp_path / "r.json"
    p = _compile_cli(small_config, "--topology", "cpu:4", "mesh.data=1", "mesh.fsdp=4", "--json", "--out", str(out),
                     "--dump-hlo", str(tmp_path / "hlo"))  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads(out.read_text())
    assert r == json.loads(p.stdout)
    from jaxfin.bench.train import param_count

    cfg = load_config(small_config)
    params = param_count(cfg.model) * 4  # float32
    assert r["devices"] == 4 and r["mesh"] == {"data": 1, "fsdp": 4, "expert": 1, "tensor": 1}
    mem = r["memory_gib"]
    assert mem["params"] * 2**30 == pytest.approx(params / 4, rel=0.02)  # FSDP: a quarter of every weight
    assert mem["optimizer_state"] * 2**30 == pytest.approx(2 * params / 4, rel=0.02)  # Adam's mu and nu, split too
    assert mem["fits"] is None  # a CPU has no HBM table
    coll = r["per_step"]["collectives"]
    assert coll["all-gather"]["count"] > 0  # FSDP gathers the weights where they are used
    assert coll["reduce-scatter"]["count"] + coll["all-reduce"]["count"] > 0  # and reduces the gradients
    assert (tmp_path / "hlo" / "train_step.cpu_4.hlo.txt").read_text().count("all-gather") > 0
    assert math.isclose(r["per_step"]["model_flops"], aot.model_flops_per_device(aot.resolve(cfg), 4))


def test_a_mesh_that_does_not_divide_names_the_setting(small_config):
    p = _compile_cli(small_config, "--topology", "cpu:4", "mesh.data=1", "mesh.fsdp=1", "mesh.tensor=4",
                     "model.num_heads=2", "model.num_kv_heads=2", devices=4)  # fmt: skip
    assert p.returncode == 2, p.stderr[-2000:]
    assert "model.num_kv_heads=2 is not divisible by mesh.tensor=4" in p.stderr


def test_max_batch_needs_a_chip_with_known_memory(tiny):
    with pytest.raises(ConfigError, match="--max-batch needs a target with known HBM"):
        aot.max_batch(tiny, parse_target("cpu"))
