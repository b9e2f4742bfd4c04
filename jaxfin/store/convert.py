"""`jaxfin convert SRC DST`: HF dir -> jaxfin checkpoint; jaxfin checkpoint or training run dir -> HF dir."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from jaxfin.hf.convert import is_hf_dir, load_hf, save_hf, stored_dtype
from jaxfin.hf.safetensors_io import SafetensorsReader
from jaxfin.store.jaxfin_dir import load_jaxfin, save_jaxfin


def _count(params: dict) -> tuple[int, int]:
    leaves = jax.tree.leaves(params)
    return len(leaves), sum(int(np.prod(x.shape)) for x in leaves)


def _listing(path: Path) -> str:
    return ", ".join(sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir()))


def convert_main(src: str | Path, dst: str | Path) -> None:
    """Convert between formats (detected from SRC) and print what was written."""
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise FileNotFoundError(f"no model directory at {src}")
    if dst.exists() and dst.resolve() == src.resolve():
        raise ValueError(f"source and destination are the same directory: {src}")
    if is_hf_dir(src):
        dtype = stored_dtype(src)  # keep the stored dtype so HF -> jaxfin -> HF is bitwise
        model = load_hf(src, param_dtype=dtype)
        save_jaxfin(model, dst)
        n_tensors = len(SafetensorsReader(src))
        leaves, n_params = _count(model.params)
        print(f"read Hugging Face {model.config.family} model {src}: {n_tensors} tensors ({dtype})")
        print(f"wrote jaxfin checkpoint {dst}: {leaves} stacked arrays, {n_params:,} parameters")
    else:
        model = load_jaxfin(src)
        written = save_hf(model, dst)
        leaves, n_params = _count(model.params)
        n_tensors = len(SafetensorsReader(dst))
        dtype, family = model.config.param_dtype, model.config.family
        print(f"read jaxfin model {src}: {leaves} stacked arrays, {n_params:,} parameters ({dtype})")
        print(f"wrote Hugging Face {family} model {dst}: {n_tensors} tensors in {len(written)} files")
    print(f"files in {dst}: {_listing(dst)}")
