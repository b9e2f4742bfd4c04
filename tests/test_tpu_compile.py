"""Real TPU compilation on a CPU host: the Mosaic attention kernel (forward and backward, GQA, segment ids) for v4,
v5e, v5p and v6e, and the tiny config's whole train step for small slices, through libtpu's deviceless topologies.

Needs the TPU build of jax (libtpu); skipped without it. `make compile-check` builds that venv and runs this file,
so a kernel or model change that breaks TPU compilation fails CI.
"""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO

pytest.importorskip("libtpu", reason="needs the TPU build of jax: make compile-check")

from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402

from jaxfin.compile import aot  # noqa: E402
from jaxfin.compile.targets import devices, parse_target  # noqa: E402
from jaxfin.config import load_config  # noqa: E402
from jaxfin.config.schema import MeshConfig  # noqa: E402
from jaxfin.kernels.attention import attention  # noqa: E402
from jaxfin.parallel import make_mesh  # noqa: E402

TINY = REPO / "configs/tiny.yaml"
GENERATIONS = {"v4": "v4:2x2x1", "v5e": "v5e:2x2", "v5p": "v5p:2x2x1", "v6e": "v6e:2x2"}


def _segments(b, s):
    rng = np.random.default_rng(0)
    seg = np.zeros((b, s), np.int32)
    for r in range(b):  # documents of random lengths, then padding
        pos, doc = 0, 1
        while pos < s - 64:
            n = int(rng.integers(30, 200))
            seg[r, pos : min(pos + n, s - 64)] = doc
            pos, doc = pos + n, doc + 1
    return seg


def _kernel_hlo(topology: str, mesh_cfg: MeshConfig, grad: bool) -> str:
    mesh = make_mesh(mesh_cfg, devices(parse_target(topology)))
    b, s, hq, hkv, d = 4, 512, 8, 2, 128  # GQA 4:1
    rows = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
    q = jax.ShapeDtypeStruct((b, s, hq, d), jnp.bfloat16, sharding=rows)
    kv = jax.ShapeDtypeStruct((b, s, hkv, d), jnp.bfloat16, sharding=rows)
    seg = jax.ShapeDtypeStruct((b, s), jnp.int32, sharding=rows)

    def fwd(q, k, v, seg):
        return attention(q, k, v, segment_ids=seg, causal=True, backend="pallas")

    def loss(q, k, v, seg):
        return jnp.sum(fwd(q, k, v, seg).astype(jnp.float32) ** 2)

    f = jax.grad(loss, argnums=(0, 1, 2)) if grad else fwd
    with jax.set_mesh(mesh):  # Mosaic reads the chip generation from the mesh's devices
        compiled = jax.jit(f).lower(q, kv, kv, seg).compile()
    return compiled.as_text()


@pytest.mark.parametrize("gen", list(GENERATIONS))
@pytest.mark.parametrize("grad", [False, True], ids=["fwd", "fwd+bwd"])
def test_mosaic_kernel_compiles_for_each_generation(gen, grad):
    """On 4 chips, rows split over `data` (shard_map): the forward is one Mosaic call, the backward two more (dq,
    dk/dv), none of them interpreted (the interpreter would leave no tpu_custom_call)."""
    hlo = _kernel_hlo(GENERATIONS[gen], MeshConfig(data=4, fsdp=1, tensor=1), grad)
    names = {n for n in ("jaxfin_flash_tpu_fwd", "jaxfin_flash_tpu_bwd_dq", "jaxfin_flash_tpu_bwd_dkv") if n in hlo}
    assert hlo.count("tpu_custom_call") >= (3 if grad else 1)
    assert names == ({"jaxfin_flash_tpu_fwd", "jaxfin_flash_tpu_bwd_dq", "jaxfin_flash_tpu_bwd_dkv"} if grad
                     else {"jaxfin_flash_tpu_fwd"})  # fmt: skip


def test_mosaic_kernel_compiles_with_heads_split_over_tensor():
    hlo = _kernel_hlo("v5p:2x2x1", MeshConfig(data=2, fsdp=1, tensor=2), grad=True)
    assert hlo.count("tpu_custom_call") >= 3


# ------------------------------------------------------------------------------------------ the whole step
def _report(tmp_path, *overrides, topology="v5p-8", costs=False):
    cfg = load_config(TINY, ["model.attention_backend=pallas", *overrides])
    r = aot.compile_report(cfg, parse_target(topology), dump_hlo=str(tmp_path), costs=costs)
    hlo = (tmp_path / f"train_step.{topology}.hlo.txt").read_text() if r["compiled"] else ""
    return r, hlo


def test_tiny_train_step_compiles_for_v5p_8_with_the_pallas_kernel(tmp_path):
    r, hlo = _report(tmp_path, "mesh.data=2", "mesh.fsdp=2", costs=True)
    assert r["compiled"] and r["memory_gib"]["fits"] and r["device_kind"] == "TPU v5"
    assert hlo.count("tpu_custom_call") >= 3  # the kernel's forward and both backward calls, compiled by Mosaic
    s = r["per_step"]
    # remat=full recomputes each layer's forward: the compiled step does 6N+attention plus up to one more forward
    assert s["model_flops"] < s["flops"] < 1.5 * s["model_flops"]
    assert s["collectives"]["all-gather"]["count"] > 0  # fsdp=2
    json.dumps(r)  # the report is JSON as it is


OBJECTIVES = {
    "dpo-frozen": ["objective.type=dpo", "objective.reference=frozen"],
    "dpo-precomputed": ["objective.type=dpo", "objective.reference=precomputed"],
    "dpo-none": ["objective.type=dpo", "objective.reference=none"],
    "reward": ["objective.type=reward"],
    "lora": ["model.lora.rank=4"],
    "partial": ["train.trainable=[layers/mlp/*]"],
    "micro-batches": ["train.micro_batches=2"],
    **{f"remat-{p}": [f"model.remat={p}"] for p in ("none", "full", "save_matmuls", "save_projections")},
}


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_every_objective_and_training_mode_compiles_on_a_tensor_parallel_mesh(tmp_path, name):
    r, hlo = _report(tmp_path, "mesh.data=2", "mesh.tensor=2", *OBJECTIVES[name])
    assert r["compiled"], r.get("error")
    assert hlo.count("tpu_custom_call") >= 3
    if name == "dpo-frozen":
        assert r["memory_gib"]["reference_params"] == pytest.approx(r["memory_gib"]["params"])
    if name in ("lora", "partial"):  # only the trained values have Adam moments
        full, _ = _report(tmp_path / "full", "mesh.data=2", "mesh.tensor=2")
        assert r["memory_gib"]["optimizer_state"] < 0.8 * full["memory_gib"]["optimizer_state"]


def test_a_head_dim_the_kernel_cannot_tile_names_the_setting(tmp_path):
    with pytest.raises(aot.CompileError, match=r"pallas attention \(model.attention_backend\).*head dim"):
        _report(tmp_path, "model.hidden_size=80", "model.num_heads=4", "model.num_kv_heads=2")


def test_out_of_memory_is_a_result_and_max_batch_finds_the_edge(tmp_path):
    """A v5e chip has 16 GiB: the tiny model at 8K tokens with the XLA attention (S^2 scores) runs out of it at some
    batch; --max-batch's answer fits and the next multiple does not, each by the compiler's own memory figure."""
    over = [
        "model.attention_backend=xla",
        "model.remat=none",
        "data.seq_len=8192",
        "model.max_position_embeddings=8192",
    ]
    cfg = load_config(TINY, over)
    target = parse_target("v5e:2x2")
    big = aot.compile_report(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, batch_size=512)), target,
                             costs=False)  # fmt: skip
    assert not big["memory_gib"]["fits"]
    r = aot.max_batch(cfg, target)
    best = r["max_batch_size"]
    assert best > 0 and best % r["unit"] == 0
    verdict = {t["batch_size"]: t["fits"] for t in r["tries"]}
    assert verdict[best] and not verdict[best + r["unit"]]
