"""Fast, single-process checks of the scale-out pieces: the sharding rules and their error messages, cluster
detection, our XLA flags, and the remat policies (same gradients, less saved)."""

import dataclasses
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO
from jax.sharding import AbstractMesh, PartitionSpec
from tolerances import assert_close_to_scale, rounding_tol

from jaxfin.config.errors import ConfigError
from jaxfin.config.schema import ModelConfig
from jaxfin.model import forward, init_params, param_axes, param_shapes
from jaxfin.parallel.distributed import detect
from jaxfin.parallel.mesh import AXES
from jaxfin.parallel.rules import check_divisible, param_specs
from jaxfin.parallel.xla_flags import DEFAULT_FLAGS, apply_xla_flags, merged_flags

CFG = ModelConfig(
    vocab_size=128, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2,
    compute_dtype="float32",
)  # fmt: skip


def _mesh(data=1, fsdp=1, tensor=1, expert=1):
    return AbstractMesh((data, fsdp, expert, tensor), AXES)


# ------------------------------------------------------------------------------------------- rules
def test_every_parameter_of_every_variant_has_a_rule_and_one_name_per_dimension():
    lora = dataclasses.replace(CFG.lora, rank=2, targets=["q_proj", "o_proj", "down_proj"])
    for cfg in (CFG, dataclasses.replace(CFG, attention_bias=True, tie_embeddings=True, lora=lora)):
        shapes = param_shapes(cfg)
        axes = param_axes(cfg)
        specs = param_specs(jax.tree.map(lambda s: jax.ShapeDtypeStruct(s, jnp.float32), shapes,
                                         is_leaf=lambda x: isinstance(x, tuple)), axes)  # fmt: skip
        for (path, shape), spec in zip(
            jax.tree.leaves_with_path(shapes, is_leaf=lambda x: isinstance(x, tuple)), jax.tree.leaves(specs)
        ):
            name = "/".join(k.key for k in path)
            assert len(axes[name]) == len(shape), name
            assert isinstance(spec, PartitionSpec)


def test_fsdp_splits_the_model_dimension_and_tensor_splits_heads_mlp_vocab():
    specs = param_specs(init_params(CFG, jax.random.key(0)), param_axes(CFG))
    assert specs["layers"]["self_attn"]["q_proj"]["kernel"] == PartitionSpec(None, "fsdp", "tensor", None)
    assert specs["layers"]["self_attn"]["o_proj"]["kernel"] == PartitionSpec(None, "tensor", None, "fsdp")
    assert specs["layers"]["mlp"]["down_proj"]["kernel"] == PartitionSpec(None, "tensor", "fsdp")
    assert specs["embed_tokens"]["embedding"] == PartitionSpec("tensor", "fsdp")
    assert specs["lm_head"]["kernel"] == PartitionSpec("fsdp", "tensor")
    assert specs["norm"]["scale"] == PartitionSpec(None)


def test_indivisible_dimensions_name_the_setting_to_change():
    with pytest.raises(ConfigError, match=r"model.num_kv_heads=2 is not divisible by mesh.tensor=4"):
        check_divisible("parameter layers/self_attn/k_proj/kernel", 2, "kv_heads", _mesh(tensor=4))
    with pytest.raises(ConfigError, match=r"batch_size.*=6 is not divisible by mesh.data=4 x mesh.fsdp=1"):
        check_divisible("each micro-batch", 6, "batch", _mesh(data=4))
    check_divisible("each micro-batch", 8, "batch", _mesh(data=2, fsdp=4))  # divides: no error


def test_a_bad_mesh_is_refused_before_anything_compiles(small_config, tmp_path):
    """1 CPU device here: a tensor axis of 2 cannot be built; the CLI says so in one line, exit 2."""
    proc = subprocess.run(
        [sys.executable, "-m", "jaxfin.cli", "train", str(small_config), f"output_dir={tmp_path}/r", "mesh.tensor=2"],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "error: mesh {'data': -1, 'fsdp': 1, 'expert': 1, 'tensor': 2} does not fit 1 devices" in proc.stderr
    assert "compiled the train step" not in proc.stdout and "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------------------- cluster detection
def test_single_process_without_any_cluster():
    assert detect(None, None, None, env={}) is None


def test_explicit_flags_and_environment():
    want = {"coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 3}
    assert detect("10.0.0.1:1234", 4, 3, env={}) == want
    env = {"JAXFIN_COORDINATOR": "10.0.0.1:1234", "JAXFIN_NUM_PROCESSES": "4", "JAXFIN_PROCESS_ID": "3"}
    assert detect(None, None, None, env=env) == want
    assert detect(None, None, 1, env=env)["process_id"] == 1  # a flag beats the environment


def test_kubernetes_indexed_job_takes_the_pod_index():
    env = {"JAXFIN_COORDINATOR": "job-0.svc:1234", "JAXFIN_NUM_PROCESSES": "2", "JOB_COMPLETION_INDEX": "1"}
    assert detect(None, None, None, env=env) == {
        "coordinator_address": "job-0.svc:1234", "num_processes": 2, "process_id": 1,
    }  # fmt: skip


def test_incomplete_or_bad_multi_host_settings_are_explained():
    with pytest.raises(ValueError, match="missing: process-id"):
        detect("h:1", 2, None, env={})
    with pytest.raises(ValueError, match="not in 0..1"):
        detect("h:1", 2, 2, env={})
    with pytest.raises(ValueError, match="JAXFIN_NUM_PROCESSES='two' is not an integer"):
        detect(None, None, None, env={"JAXFIN_NUM_PROCESSES": "two"})


def test_slurm_is_left_to_jax_and_one_task_per_node_owns_all_gpus():
    base = {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "16", "SLURM_NNODES": "2"}  # one task per GPU
    assert detect(None, None, None, env=base) == {}
    per_node = {**base, "SLURM_NTASKS": "2", "SLURM_GPUS_ON_NODE": "8"}
    assert detect(None, None, None, env=per_node) == {"local_device_ids": list(range(8))}
    assert detect(None, None, None, env={**base, "SLURM_NTASKS": "1"}) is None  # one task: nothing to join


def test_gke_tpu_slice_is_left_to_jax():
    assert detect(None, None, None, env={"TPU_WORKER_HOSTNAMES": "w0,w1"}) == {}


# ------------------------------------------------------------------------------------------- XLA flags
def test_xla_flags_are_added_and_the_users_own_win():
    merged = merged_flags("--xla_gpu_enable_latency_hiding_scheduler=false --xla_dump_to=/tmp/x")
    assert "--xla_gpu_enable_latency_hiding_scheduler=false" in merged and "=true" not in merged.split()[0]
    assert merged.count("xla_gpu_enable_latency_hiding_scheduler") == 1
    assert "--xla_dump_to=/tmp/x" in merged
    for k in DEFAULT_FLAGS:
        assert f"--{k}=" in merged
    assert merged_flags("--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT").count("ynn") == 1
    env = {"XLA_FLAGS": "--a=1", "JAXFIN_XLA_FLAGS": "0"}
    apply_xla_flags(env)
    assert env["XLA_FLAGS"] == "--a=1"


def test_xla_flags_are_known_to_this_xla_and_take_effect():
    """XLA aborts on an unknown flag, so a renamed flag would break every launch: start a backend with them. On CPU
    the matmul must then compile to Eigen's dot, not a YNNPACK fusion (the CPU flag's whole point)."""
    code = "import os; from jaxfin.parallel.xla_flags import apply_xla_flags; apply_xla_flags(); import jax; "
    code += (
        "a = jax.numpy.ones((64, 64)); print(float(a.sum()), jax.jit(jax.numpy.dot).lower(a, a).compile().as_text())"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAXFIN_XLA_FLAGS")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    total, hlo = proc.stdout.split(" ", 1)
    assert total == "4096.0" and " dot(" in hlo and "ynn" not in hlo, hlo


# ------------------------------------------------------------------------------------------- remat
def _saved(cfg, params, tokens, capsys) -> int:
    """Elements the backward pass keeps from the forward, read from jax's own residual report."""
    jax.ad_checkpoint.print_saved_residuals(lambda p: forward(p, cfg, tokens).sum(), params)
    lines = capsys.readouterr().out.splitlines()
    total = 0
    for line in lines:
        m = re.match(r"\s*\w+\[([\d,]*)\]", line)
        assert m, line
        total += int(np.prod([int(x) for x in m.group(1).split(",") if x]))
    return total


def test_remat_policies_keep_gradients_and_save_less(capsys):
    params = init_params(CFG, jax.random.key(0))
    b, s = 2, 32
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, CFG.vocab_size, (b, s)))
    grads, saved = {}, {}
    for policy in ("none", "full", "save_matmuls", "save_projections"):
        cfg = dataclasses.replace(CFG, remat=policy)
        grads[policy] = jax.jit(jax.grad(lambda p, c=cfg: forward(p, c, tokens).sum()))(params)
        saved[policy] = _saved(cfg, params, tokens, capsys)
    # recomputation may reorder float32 sums: depth 4L reductions of up to max(V, F, B*S) terms (the LM head's
    # backward, the MLP, weight gradients over tokens), relative to each gradient's max-abs
    tol = rounding_tol(np.float32, max(CFG.vocab_size, CFG.intermediate_size, b * s), depth=4 * CFG.num_layers)  # ~6e-5
    for policy in ("full", "save_matmuls", "save_projections"):
        for a, g in zip(jax.tree.leaves(grads["none"]), jax.tree.leaves(grads[policy])):
            assert_close_to_scale(g, a, tol, err_msg=policy)
    assert saved["none"] > saved["save_matmuls"] > saved["save_projections"] > saved["full"]
    # save_projections keeps at least q, k, v, gate and up of every layer on top of what `full` keeps
    hd, hkv, f = CFG.num_heads * CFG.head_size, CFG.num_kv_heads * CFG.head_size, CFG.intermediate_size
    assert saved["save_projections"] - saved["full"] >= CFG.num_layers * b * s * (hd + 2 * hkv + 2 * f)


def test_unknown_remat_policy_is_refused():
    from jaxfin.config.validate import validate_model_config

    with pytest.raises(ConfigError, match="'model.remat' must be one of none, full, save_matmuls, save_projections"):
        validate_model_config(dataclasses.replace(CFG, remat="some"))
