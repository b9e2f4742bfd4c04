"""What the compiled program communicates: each collective of an optimized (per-device, SPMD-partitioned) HLO
module, counted and sized from its result shapes.

Bytes are the data one device sends for the op, by the usual ring costs without the (n-1)/n factor (so an upper
bound): an all-gather or collective-permute moves its result, a reduce-scatter its operand (result x group size,
read here as the result of the matching all-gather would be), an all-reduce twice its buffer (reduce-scatter +
all-gather), an all-to-all its buffer. Async pairs (`*-start` / `*-done`) count once, at the start.
"""

from __future__ import annotations

import re

import numpy as np

KINDS = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")
_TRAFFIC = {"all-gather": 1.0, "reduce-scatter": 1.0, "all-reduce": 2.0, "all-to-all": 1.0, "collective-permute": 1.0}
_OP = re.compile(r"=\s*(?P<type>.+?)\s+(?P<op>" + "|".join(KINDS) + r")(?P<start>-start)?\(")
_DTYPES = "pred|s4|u4|s8|u8|s16|u16|s32|u32|s64|u64|f8e4m3fn|f8e5m2|bf16|f16|f32|f64|c64|c128"
_ARRAY = re.compile(r"\b(" + _DTYPES + r")\[([\d,]*)\]")
_BITS = {"pred": 8, "s4": 4, "u4": 4, "c64": 64, "c128": 128}


def _bytes(dtype: str, dims: str) -> int:
    n = int(np.prod([int(d) for d in dims.split(",") if d])) if dims else 1
    bits = _BITS.get(dtype) or int(re.sub(r"\D", "", dtype.split("e")[0]) or 8)
    return n * bits // 8


def _group_size(line: str) -> int:
    """Devices in one replica group (explicit `{{0,1},{2,3}}`, iota `[2,2]<=[4]`); 1 if unstated."""
    if m := re.search(r"replica_groups=\{\{([\d,]*)\}", line):
        return len(m.group(1).split(","))
    if m := re.search(r"replica_groups=\[(\d+),(\d+)\]", line):
        return int(m.group(2))
    return 1


def collectives(hlo_text: str) -> dict[str, dict[str, float]]:
    """{kind: {"count": n, "bytes": bytes one device sends}} for every collective kind (zeros included)."""
    out = {k: {"count": 0, "bytes": 0.0} for k in KINDS}
    for line in hlo_text.splitlines():
        m = _OP.search(line)
        if m is None or line.lstrip().startswith("ROOT %tuple"):
            continue
        arrays = [_bytes(t, d) for t, d in _ARRAY.findall(m.group("type"))]
        if m.group("start") and m.group("op") in ("all-gather", "collective-permute"):
            arrays = [a for a in arrays if a > 4]  # drop the u32[] context scalars of the async tuple
            arrays = arrays[len(arrays) // 2 :]  # (operands..., results...): the results
        size = float(sum(arrays))
        if m.group("op") == "reduce-scatter":
            size *= _group_size(line)
        kind = out[m.group("op")]
        kind["count"] += 1
        kind["bytes"] += _TRAFFIC[m.group("op")] * size
    return out
