"""jaxfin.hf.safetensors_io against the independent `safetensors` library: our files read by safetensors bit-exact
(bfloat16 included) with transformers' index layout, safetensors' files read by us bit-exact, shards cut at the
size limit, and a clear error naming the file for a truncated or corrupt header."""

from __future__ import annotations

import json
import struct

import ml_dtypes
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from jaxfin.hf.safetensors_io import (
    DTYPES,
    INDEX,
    SINGLE,
    SafetensorsError,
    SafetensorsReader,
    SafetensorsWriter,
    TensorSpec,
    dtype_code,
    parse_size,
    plan_shards,
    write_tensors,
)


def _tensors(seed: int = 0) -> dict[str, np.ndarray]:
    """Every dtype safetensors.numpy handles, odd shapes included (scalar, empty, 3-d)."""
    rng = np.random.default_rng(seed)
    return {
        "a.f32": rng.standard_normal((5, 7)).astype(np.float32),
        "b.bf16": rng.standard_normal((3, 11)).astype(ml_dtypes.bfloat16),
        "c.f16": rng.standard_normal((2, 3, 4)).astype(np.float16),
        "d.f64": rng.standard_normal(9),
        "e.i64": rng.integers(-(2**62), 2**62, (4,), dtype=np.int64),
        "f.i32": rng.integers(-(2**31), 2**31 - 1, (3, 2), dtype=np.int32),
        "g.u8": rng.integers(0, 256, (13,), dtype=np.uint8),
        "h.bool": rng.integers(0, 2, (6,)).astype(bool),
        "i.scalar": np.array(3.5, np.float32),
        "j.empty": np.zeros((0, 4), np.float32),
    }


def _same(x: np.ndarray, y: np.ndarray) -> bool:
    """Same dtype, shape and bytes (bit-exact, NaN payloads and -0.0 included)."""
    return x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()


def test_dtype_table():
    assert DTYPES["BF16"] == np.dtype(ml_dtypes.bfloat16) and dtype_code("bfloat16") == "BF16"
    assert dtype_code(np.float32) == "F32" and dtype_code("F16") == "F16" and dtype_code("bool") == "BOOL"
    with pytest.raises(ValueError, match="not a safetensors dtype"):
        dtype_code("float128")


def test_parse_size():
    assert parse_size("5GB") == 5 * 10**9 and parse_size("2GiB") == 2 * 2**30 and parse_size("500MB") == 5 * 10**8
    assert parse_size("20KB") == 20_000 and parse_size(123) == 123 and parse_size(" 1.5 kib ") == 1536
    with pytest.raises(ValueError, match="not a size"):
        parse_size("five gigs")


def test_ours_read_by_safetensors_bit_exact(tmp_path):
    src = _tensors()
    src["b.bf16"][0, 0] = np.float32("nan")  # a NaN and a -0.0 survive as bits
    src["a.f32"][0, 0] = -0.0
    assert write_tensors(tmp_path, src) == [SINGLE]
    back = load_file(tmp_path / SINGLE)
    assert list(back) != [] and sorted(back) == sorted(src)
    assert all(_same(back[k], src[k]) for k in src)
    with safe_open(tmp_path / SINGLE, framework="numpy") as f:
        assert f.metadata() == {"format": "pt"}
        assert _same(f.get_tensor("b.bf16"), src["b.bf16"])
    raw = (tmp_path / SINGLE).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0 and raw[8 + n - 1 : 8 + n] in (b" ", b"}")  # header space-padded to 8 bytes


def test_safetensors_files_read_by_us_bit_exact(tmp_path):
    src = _tensors(1)
    save_file(src, tmp_path / SINGLE, metadata={"format": "pt", "note": "x"})
    with SafetensorsReader(tmp_path) as r:
        assert sorted(r) == sorted(src) and len(r) == len(src) and "a.f32" in r and "zz" not in r
        assert r.metadata == {"format": "pt", "note": "x"}
        assert r.dtype("b.bf16") == "bfloat16" and r.shape("c.f16") == (2, 3, 4)
        assert r.spec("a.f32") == TensorSpec("a.f32", (5, 7), "float32")
        for k, v in src.items():
            got = r.read(k)
            assert _same(got, v) and got.flags.writeable
    assert _same(SafetensorsReader(tmp_path / SINGLE)["d.f64"], src["d.f64"])  # a file path works too


def test_shards_cut_at_limit_and_index_layout(tmp_path):
    rng = np.random.default_rng(2)
    src = {f"layer.{i}": rng.standard_normal((10, 10)).astype(ml_dtypes.bfloat16) for i in range(7)}  # 200 B each
    src["big"] = rng.standard_normal((50, 10)).astype(np.float32)  # 2000 B: past the limit, a shard of its own
    src["tail"] = rng.standard_normal(3).astype(np.float32)
    limit = "500B"
    files = write_tensors(tmp_path, src, limit)
    shards = plan_shards([TensorSpec(k, v.shape, v.dtype.name) for k, v in src.items()], limit)
    assert [[s.name for s in shard] for shard in shards] == [
        ["layer.0", "layer.1"], ["layer.2", "layer.3"], ["layer.4", "layer.5"], ["layer.6"], ["big"], ["tail"],
    ]  # fmt: skip
    n = len(shards)
    assert files == [f"model-{k + 1:05d}-of-{n:05d}.safetensors" for k in range(n)] + [INDEX]
    assert not (tmp_path / SINGLE).exists()
    index = json.loads((tmp_path / INDEX).read_text())
    assert (tmp_path / INDEX).read_text() == json.dumps(index, indent=2, sort_keys=True) + "\n"  # as transformers
    assert set(index) == {"metadata", "weight_map"}
    assert index["metadata"] == {"total_size": sum(v.nbytes for v in src.values()), "total_parameters": 7 * 100 + 503}
    for k, shard in enumerate(shards):
        back = load_file(tmp_path / files[k])
        assert list(back) == [s.name for s in shard] or sorted(back) == sorted(s.name for s in shard)
        assert all(_same(back[s.name], src[s.name]) and index["weight_map"][s.name] == files[k] for s in shard)
        assert sum(v.nbytes for v in back.values()) <= parse_size(limit) or len(shard) == 1
    r = SafetensorsReader(tmp_path)
    assert r.names() == list(src) and all(_same(r[k], v) for k, v in src.items())
    # transformers' own index reader: every shard of the weight map, every tensor once
    from transformers.utils.hub import get_checkpoint_shard_files

    got, _ = get_checkpoint_shard_files(str(tmp_path), str(tmp_path / INDEX))
    assert sorted(got) == sorted(str(tmp_path / f) for f in files[:-1])
    # rewriting the same folder unsharded leaves no stale shards or index
    write_tensors(tmp_path, src)
    assert sorted(p.name for p in tmp_path.iterdir()) == [SINGLE]


def test_streaming_writer_casts_and_checks_order(tmp_path):
    specs = [TensorSpec("x", (2, 3), "bfloat16"), TensorSpec("y", (4,), "float16")]
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    with SafetensorsWriter(tmp_path, specs, "1GB") as w:
        with pytest.raises(RuntimeError, match="expected x"):
            w.write("y", np.zeros(4))
        w.write("x", x)  # cast from float32 to the planned bfloat16
        assert w.written == 12
        with pytest.raises(RuntimeError, match=r"expected y \(4,\)"):
            w.write("y", np.zeros(5))
        w.write("y", np.ones(4))
    back = load_file(tmp_path / SINGLE)
    assert _same(back["x"], x.astype(ml_dtypes.bfloat16)) and _same(back["y"], np.ones(4, np.float16))
    w = SafetensorsWriter(tmp_path / "short", specs, "1GB")
    w.write("x", x)
    with pytest.raises(RuntimeError, match="1 planned tensors were never written"):
        w.close()


def test_safetensors_writes_sharded_folder_we_read(tmp_path):
    src = _tensors(3)
    names = list(src)
    shards = [names[:4], names[4:]]
    files = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    for f, shard in zip(files, shards, strict=True):
        save_file({k: src[k] for k in shard}, tmp_path / f)
    wm = {k: f for f, shard in zip(files, shards, strict=True) for k in shard}
    (tmp_path / INDEX).write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": wm}))
    r = SafetensorsReader(tmp_path)
    assert sorted(r) == sorted(src) and all(_same(r[k], src[k]) for k in src)
    assert r.files["a.f32"].name == wm["a.f32"] and r.where == str(tmp_path / INDEX)
    wm["ghost"] = files[0]
    (tmp_path / INDEX).write_text(json.dumps({"weight_map": wm}))
    with pytest.raises(SafetensorsError, match="maps 'ghost' to model-00001-of-00002.safetensors"):
        SafetensorsReader(tmp_path)
    wm["ghost"] = "model-00003-of-00003.safetensors"
    (tmp_path / INDEX).write_text(json.dumps({"weight_map": wm}))
    with pytest.raises(FileNotFoundError, match="lists model-00003-of-00003.safetensors, which does not exist"):
        SafetensorsReader(tmp_path)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda raw: raw[:5], "too short for a safetensors header"),
        (lambda raw: raw[:40], "runs past the end"),
        (lambda raw: raw[:8] + b"#" + raw[9:], "corrupt safetensors header"),
        (lambda raw: struct.pack("<Q", 2**40) + raw[8:], "runs past the end"),
        (lambda raw: raw[:-10], "ends at byte"),
    ],
    ids=["no-length", "cut-header", "bad-json", "huge-length", "cut-data"],
)
def test_truncated_or_corrupt_file_names_it(tmp_path, damage, message):
    save_file({"w": np.ones((4, 4), np.float32)}, tmp_path / SINGLE)
    f = tmp_path / SINGLE
    f.write_bytes(damage(f.read_bytes()))
    with pytest.raises(SafetensorsError, match=message) as e:
        SafetensorsReader(tmp_path)
    assert str(f) in str(e.value)


def test_missing_folder_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model.safetensors or model.safetensors.index.json"):
        SafetensorsReader(tmp_path)
