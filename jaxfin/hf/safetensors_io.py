"""Hugging Face safetensors folders, read and written without the `safetensors` package or a memory map.

A folder holds `model.safetensors`, or shards `model-00001-of-0000N.safetensors` listed by
`model.safetensors.index.json` (`{"metadata": {"total_parameters", "total_size"}, "weight_map": {name: file}}`,
as transformers writes it). A safetensors file is an 8-byte little-endian header length N, N bytes of JSON
(`{"__metadata__": {str: str}, name: {"dtype", "shape", "data_offsets": [begin, end]}}`, space-padded to a
multiple of 8) and then the tensors' little-endian bytes, offsets counted from the end of the header.

`SafetensorsReader` lists names, shapes and dtypes from the headers and reads one tensor at a time by positioned
reads into a fresh array (no memory map, whose touched pages would count as resident memory), so peak memory is the
tensors being worked on. `SafetensorsWriter` is given the planned tensors (name, shape, dtype) up front, cuts them
into shards in order at a size limit, writes each shard's header when the shard opens and then streams the tensors'
bytes as they come, one at a time. `DTYPES` is the one table of safetensors dtype codes and numpy dtypes; dtypes in
this module's API are numpy names ("float32", "bfloat16", "int64").
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import struct
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import ml_dtypes  # bfloat16 and the float8 types as numpy dtypes
import numpy as np

SINGLE, INDEX = "model.safetensors", "model.safetensors.index.json"
MAX_HEADER = 100_000_000  # the safetensors library's own limit on the header's JSON

# safetensors dtype code -> numpy dtype (the data is little-endian; jaxfin runs on little-endian hosts)
DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2), "F8_E8M0": np.dtype(ml_dtypes.float8_e8m0fnu),
    "C64": np.dtype(np.complex64), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U64": np.dtype(np.uint64), "U32": np.dtype(np.uint32),
    "U16": np.dtype(np.uint16), "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
}  # fmt: skip
CODES: dict[str, str] = {dt.name: code for code, dt in DTYPES.items()}  # numpy name -> safetensors code
FLOAT_DTYPES: dict[str, np.dtype] = {n: DTYPES[CODES[n]] for n in ("float32", "bfloat16", "float16")}  # jaxfin's


class SafetensorsError(ValueError):
    """A safetensors file or index that cannot be read (truncated, corrupt, inconsistent); names the file."""


def numpy_dtype(dtype) -> np.dtype:
    """The numpy dtype of a numpy name ("bfloat16"), a safetensors code ("BF16") or a dtype-like."""
    if isinstance(dtype, str):
        if dtype in DTYPES:
            return DTYPES[dtype]
        if dtype in CODES:
            return DTYPES[CODES[dtype]]
        raise ValueError(f"dtype '{dtype}' is not a safetensors dtype; known: {', '.join(CODES)}")
    dt = np.dtype(dtype)
    if dt.name not in CODES:
        raise ValueError(f"dtype '{dt.name}' is not a safetensors dtype; known: {', '.join(CODES)}")
    return dt


def dtype_code(dtype) -> str:
    """The safetensors code ("BF16") of a numpy name, dtype or code."""
    return CODES[numpy_dtype(dtype).name]


def parse_size(size: int | str) -> int:
    """'5GB' (decimal, like transformers), '2GiB' (binary), '500MB', '20KB' or a number of bytes."""
    if isinstance(size, int):
        return size
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(I?)B?\s*", size.upper())
    if not m:
        raise ValueError(f"max_shard_size '{size}' is not a size like '5GB', '500MB' or a number of bytes")
    base = 1024 if m.group(3) else 1000
    return int(float(m.group(1)) * base ** " KMGT".index(m.group(2) or " "))


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str  # numpy name: float32 | bfloat16 | float16 | int64 | ... (a code or numpy dtype is converted)

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        object.__setattr__(self, "dtype", numpy_dtype(self.dtype).name)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * numpy_dtype(self.dtype).itemsize

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


def shard_names(n: int, basename: str = "model") -> list[str]:
    """File names of n shards as transformers names them (one: `{basename}.safetensors`)."""
    if n == 1:
        return [f"{basename}.safetensors"]
    return [f"{basename}-{k + 1:05d}-of-{n:05d}.safetensors" for k in range(n)]


def plan_shards(specs: Iterable[TensorSpec], max_shard_size: int | str | None) -> list[list[TensorSpec]]:
    """Greedy in-order packing: a new shard when the next tensor would overflow the current one (a tensor larger
    than the limit gets a shard of its own); max_shard_size None: one shard."""
    limit = float("inf") if max_shard_size is None else parse_size(max_shard_size)
    shards: list[list[TensorSpec]] = [[]]
    size = 0
    for s in specs:
        if shards[-1] and size + s.nbytes > limit:
            shards.append([])
            size = 0
        shards[-1].append(s)
        size += s.nbytes
    return shards


# ------------------------------------------------------------------------------------------------ reading


def _pread_into(fd: int, buf: np.ndarray, offset: int) -> int:
    """Fill `buf` from `offset` with positioned reads (a single read returns at most ~2 GiB on Linux)."""
    view, done = memoryview(buf).cast("B"), 0
    while done < len(view):
        if hasattr(os, "preadv"):
            n = os.preadv(fd, [view[done:]], offset + done)
        else:  # pragma: no cover (no preadv: Windows)
            os.lseek(fd, offset + done, os.SEEK_SET)
            n = os.readv(fd, [view[done:]])
        if n == 0:
            break
        done += n
    return done


def read_header(file: str | Path) -> tuple[dict[str, dict], dict[str, str], int]:
    """(name -> {"dtype", "shape", "data_offsets"}, the `__metadata__` dict, data start) of one safetensors file,
    checked against the file's size; a SafetensorsError naming the file when it is truncated or corrupt."""
    file = Path(file)
    with open(file, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        head = fh.read(8)
        if len(head) < 8:
            raise SafetensorsError(f"{file}: {size} bytes, too short for a safetensors header (truncated?)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER or 8 + n > size:
            raise SafetensorsError(
                f"{file}: header length {n} runs past the end of the {size}-byte file (truncated or not safetensors)"
            )
        raw = fh.read(n)
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SafetensorsError(f"{file}: corrupt safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{file}: corrupt safetensors header (not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    data = size - 8 - n
    for name, e in header.items():
        try:
            dtype, shape, (a, b) = e["dtype"], e["shape"], e["data_offsets"]
            ok = isinstance(dtype, str) and all(isinstance(d, int) and d >= 0 for d in shape)
            ok = ok and isinstance(a, int) and isinstance(b, int) and 0 <= a <= b
        except (TypeError, KeyError, ValueError):
            ok = False
        if not ok:
            raise SafetensorsError(f"{file}: corrupt safetensors header entry for '{name}': {e}")
        if b > data:
            raise SafetensorsError(
                f"{file}: tensor '{name}' ends at byte {b} of a {data}-byte data section (truncated?)"
            )
        if dtype in DTYPES and b - a != int(np.prod(shape, dtype=np.int64)) * DTYPES[dtype].itemsize:
            raise SafetensorsError(f"{file}: tensor '{name}' {dtype} {shape} does not fit its {b - a} bytes")
    return header, metadata, 8 + n


class SafetensorsReader(Mapping):
    """Name -> numpy tensor of a safetensors folder (`model.safetensors` or a sharded index) or of one
    `.safetensors` file, read on access by positioned reads (each read returns a new, writable array)."""

    def __init__(self, path: str | Path, basename: str = "model"):
        path = Path(path)
        index, single = path / f"{basename}.safetensors.index.json", path / f"{basename}.safetensors"
        weight_map = None
        if path.is_file():
            files, self.where = [path], str(path)
            self.path = path.parent
        elif index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
                raise SafetensorsError(f"{index}: not a safetensors index ({type(e).__name__}: {e})") from None
            files, self.where = sorted({path / f for f in weight_map.values()}), str(index)
            self.path = path
        elif single.is_file():
            files, self.where = [single], str(single)
            self.path = path
        else:
            bins = sorted(p.name for p in path.glob("*.bin")) + sorted(p.name for p in path.glob("*.pt*"))
            hint = (
                f"; found {bins[0]}, a pickle file, which jaxfin never loads (unpickling can run code). "
                f"Convert it to safetensors first, e.g. AutoModelForCausalLM.from_pretrained(dir)"
                f".save_pretrained(out, safe_serialization=True) in a trusted environment"
                if bins
                else ""
            )
            raise FileNotFoundError(f"{path}: no {single.name} or {index.name}{hint}")
        self.entries: dict[str, tuple[Path, int, dict]] = {}  # name -> (file, data start, header entry)
        self.metadata: dict[str, str] = {}
        for f in files:
            if not f.is_file():
                raise FileNotFoundError(f"{self.where} lists {f.name}, which does not exist")
            header, meta, start = read_header(f)
            self.metadata |= meta
            for k, v in header.items():
                self.entries[k] = (f, start, v)
        for k, f in (weight_map or {}).items():
            if self.entries.get(k, (None,))[0] != path / f:
                raise SafetensorsError(f"{self.where} maps '{k}' to {f}, whose header does not have it")
        self._fds: dict[Path, int] = {}

    @property
    def files(self) -> dict[str, Path]:
        """Tensor name -> the file holding it."""
        return {k: e[0] for k, e in self.entries.items()}

    def __getitem__(self, name: str) -> np.ndarray:
        return self.read(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, name) -> bool:
        return name in self.entries

    def names(self) -> list[str]:
        """Tensor names: files in sorted order, each in its header's order."""
        return list(self.entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.entries[name][2]["shape"])

    def dtype(self, name: str) -> str:
        """The stored dtype as a numpy name ("bfloat16"), or the safetensors code if numpy has none."""
        code = self.entries[name][2]["dtype"]
        return DTYPES[code].name if code in DTYPES else code

    def spec(self, name: str) -> TensorSpec:
        return TensorSpec(name, self.shape(name), self.dtype(name))

    def read(self, name: str) -> np.ndarray:
        f, start, e = self.entries[name]
        if e["dtype"] not in DTYPES:
            raise SafetensorsError(f"{f}: tensor '{name}' has dtype {e['dtype']}, which jaxfin cannot read")
        a, b = e["data_offsets"]
        buf = np.empty(b - a, np.uint8)
        if f not in self._fds:
            self._fds[f] = os.open(f, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        if _pread_into(self._fds[f], buf, start + a) != b - a:
            raise SafetensorsError(f"{f}: truncated tensor '{name}'")
        return buf.view(DTYPES[e["dtype"]]).reshape(e["shape"])

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> SafetensorsReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        if getattr(self, "_fds", None):
            self.close()


# ------------------------------------------------------------------------------------------------ writing


def remove_shards(out_dir: str | Path, basename: str = "model") -> None:
    """Delete `{basename}.safetensors`, its shards and its index in out_dir (stale ones would confuse loaders)."""
    b = re.escape(basename)
    stale = re.compile(rf"{b}(-\d{{5}}-of-\d{{5}}\.safetensors|\.safetensors|\.safetensors\.index\.json)")
    for old in Path(out_dir).iterdir():
        if stale.fullmatch(old.name):
            old.unlink()


class SafetensorsWriter:
    """Writes planned tensors, one `write` call each in plan order, into shards of at most max_shard_size
    (`plan_shards`; None: one file) in out_dir: `{basename}.safetensors`, or shards and
    `{basename}.safetensors.index.json`. Earlier files of that basename in out_dir are removed first. Each shard's
    header is written when it opens; `close()` checks everything was written, writes the index and returns the file
    names."""

    def __init__(
        self,
        out_dir: str | Path,
        specs: Iterable[TensorSpec],
        max_shard_size: int | str | None = "5GB",
        *,
        basename: str = "model",
        metadata: Mapping[str, str] | None = None,
    ):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.basename = basename
        self.metadata = dict({"format": "pt"} if metadata is None else metadata)
        self.shards = plan_shards(specs, max_shard_size)
        self.files = shard_names(len(self.shards), basename)
        self.order = [(k, s) for k, shard in enumerate(self.shards) for s in shard]
        names = [s.name for _, s in self.order]
        if len(set(names)) != len(names):
            raise ValueError(f"tensor names repeat: {sorted({n for n in names if names.count(n) > 1})[:3]}")
        self.pos = 0
        self.written = 0
        self.fh = None
        self.result: list[str] | None = None  # the file names, once closed
        remove_shards(self.out_dir, basename)

    def _open(self, k: int) -> None:
        if self.fh:
            self.fh.close()
        header, off = {}, 0
        if self.metadata:
            header["__metadata__"] = self.metadata
        for s in self.shards[k]:
            header[s.name] = {
                "dtype": dtype_code(s.dtype),
                "shape": list(s.shape),
                "data_offsets": [off, off + s.nbytes],
            }
            off += s.nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        self.fh = open(self.out_dir / self.files[k], "wb")  # noqa: SIM115 (closed by the next shard or close())
        self.fh.write(struct.pack("<Q", len(raw)) + raw)

    def write(self, name: str, x: np.ndarray) -> None:
        """The next planned tensor (cast to its planned dtype)."""
        if self.pos >= len(self.order):
            raise RuntimeError(f"writer: all {len(self.order)} planned tensors were written, got another: {name}")
        k, spec = self.order[self.pos]
        x = np.asarray(x)
        if spec.name != name or tuple(x.shape) != spec.shape:
            raise RuntimeError(f"writer expected {spec.name} {spec.shape}, got {name} {tuple(x.shape)}")
        if self.pos == 0 or self.order[self.pos - 1][0] != k:
            self._open(k)
        data = np.ascontiguousarray(x.astype(numpy_dtype(spec.dtype), copy=False))
        self.fh.write(memoryview(data.reshape(-1).view(np.uint8)))
        self.written += data.nbytes
        self.pos += 1

    def abort(self) -> None:
        """Stop without an index (after an error); the shards written so far stay incomplete."""
        if self.fh:
            self.fh.close()
            self.fh = None

    def close(self) -> list[str]:
        """Finish: check every planned tensor was written, write the index if sharded; the file names."""
        if self.result is not None:
            return self.result
        self.abort()
        if self.pos != len(self.order):
            raise RuntimeError(f"writer: {len(self.order) - self.pos} planned tensors were never written")
        if len(self.files) == 1:
            self.result = list(self.files)
            return self.result
        index = {
            "metadata": {
                "total_parameters": sum(s.numel for _, s in self.order),
                "total_size": sum(s.nbytes for _, s in self.order),
            },
            "weight_map": {s.name: self.files[k] for k, s in self.order},
        }
        name = f"{self.basename}.safetensors.index.json"
        (self.out_dir / name).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        self.result = [*self.files, name]
        return self.result

    def __enter__(self) -> SafetensorsWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_tensors(
    out_dir: str | Path,
    tensors: Mapping[str, np.ndarray],
    max_shard_size: int | str | None = "5GB",
    *,
    basename: str = "model",
    metadata: Mapping[str, str] | None = None,
) -> list[str]:
    """Write in-memory tensors (in their own dtypes, in mapping order) as a safetensors folder; the file names."""
    specs = [TensorSpec(k, tuple(np.shape(v)), np.asarray(v).dtype.name) for k, v in tensors.items()]
    with SafetensorsWriter(out_dir, specs, max_shard_size, basename=basename, metadata=metadata) as w:
        for k, v in tensors.items():
            w.write(k, v)
    return w.close()
