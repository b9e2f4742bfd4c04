"""Deviceless GPU: the Pallas Triton kernel (jaxfin/kernels/pallas_gpu.py) lowered for CUDA and ROCm on this CPU host
through jax.export, forward and forward+backward, GQA and segment ids. This is as far as a GPU compile gets without
a GPU here (README, "Will it compile, and fit?"): the Triton custom calls are emitted (and their kernels lowered to
Triton IR); PTX / AMDGPU code and the XLA GPU compile need the device's plugin."""

import contextlib

import jax
import jax.numpy as jnp
import pytest
from jax import export
from jax.sharding import AbstractDevice, AbstractMesh

from jaxfin.kernels.pallas_gpu import pallas_attention

TRITON = "__gpu$xla.gpu.triton"
Q = jax.ShapeDtypeStruct((2, 256, 4, 64), jnp.bfloat16)  # GQA 2:1
KV = jax.ShapeDtypeStruct((2, 256, 2, 64), jnp.bfloat16)
SEG = jax.ShapeDtypeStruct((2, 256), jnp.int32)
KINDS = {"cuda": "NVIDIA H100 80GB HBM3", "rocm": "gfx942"}  # H100, MI300X


def _on(platform):
    """The GPU being lowered for, as an abstract device: JAX >= 0.11's Triton lowering reads its compute capability
    (architecture) from it when no GPU is present; JAX 0.10 ignores it."""
    mesh = AbstractMesh((1,), ("x",), abstract_device=AbstractDevice(KINDS[platform], None, "gpu"))
    return (
        jax.sharding.use_abstract_mesh(mesh) if hasattr(jax.sharding, "use_abstract_mesh") else contextlib.nullcontext()
    )


def _fwd(q, k, v, seg):
    return pallas_attention(q, k, v, segment_ids=seg, causal=True, interpret=False)


def _grads(q, k, v, seg):
    return jax.grad(lambda *a: jnp.sum(_fwd(*a, seg).astype(jnp.float32) ** 2), argnums=(0, 1, 2))(q, k, v)


@pytest.mark.parametrize("platform", ["cuda", "rocm"])
@pytest.mark.parametrize("fn, calls", [(_fwd, 1), (_grads, 3)], ids=["fwd", "fwd+bwd"])
def test_triton_kernels_lower_for_gpu_platforms_without_a_gpu(platform, fn, calls):
    """The forward is one Triton call; forward+backward adds the dq and dk/dv kernels. The export check that refuses
    custom calls by default is the only thing lifted."""
    with _on(platform):
        lift = [export.DisabledSafetyCheck.custom_call(TRITON)]
        exp = export.export(jax.jit(fn), platforms=[platform], disabled_checks=lift)(Q, KV, KV, SEG)
    assert exp.mlir_module().count(TRITON) == calls
    assert exp.platforms == (platform,)


def test_without_lifting_the_check_export_refuses_the_custom_call():
    with _on("cuda"), pytest.raises(ValueError, match="custom call"):
        export.export(jax.jit(_fwd), platforms=["cuda"])(Q, KV, KV, SEG)
