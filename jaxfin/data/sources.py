"""Read documents from local files, counting every bad record with its `file:line` instead of crashing or hiding it.

A source (`SourceConfig`) is a file, a folder or a glob, a format and a kind; `read_source` yields `Document`s
whose `data` is normalised per kind, so the code after it never looks at column names again:
    text   {"text": str}                                                      continual pre-training
    chat   {"messages": [{"role": str, "content": str}, ...]}                 SFT (also from instruction/input/output)
    pairs  {"prompt": str, "chosen": str, "rejected": str}                    preference data (DPO, reward models)
    completion {"prompt": str, "completion": str}                              SFT without a chat template (TRL's
                                                                               prompt-completion format)
    prompts {"prompt": str | [messages], any other field: kept as is}          RL (GRPO): what the rewards read,
                                                                               e.g. answer, choices, metadata

Which reader reads each format, and why:
- JSONL (.jsonl .json .ndjson) and CSV (.csv .tsv), optionally .gz, are read here from bytes, one line in memory
  at a time (so streaming), each line decoded and parsed alone; a .txt file is one document, read whole (an invalid
  byte is reported at its line; a file over 4 x max_chars bytes is not read at all). Hugging Face `datasets` cannot
  account for bad input per line in these formats (checked with datasets 5.2): its `text` builder decodes 10 MB
  chunks strictly, so one invalid UTF-8 byte raises for the whole file (`encoding_errors="surrogateescape"` is then
  refused by Arrow, and "replace" cannot be told from a real U+FFFD); it opens files in universal-newline mode, so
  a stray '\\r' becomes a line break and shifts every later line number; its `json` builder (pyarrow) and `csv`
  builder (pandas) fail the whole file on one bad record and lose the line of multi-line CSV fields. Speed is not
  the reason: both read finance_corpus_en at 120-230 MB/s per core (json.loads dominates), far above the ~1 MB/s
  per core that tokenization consumes; reading bytes ourselves also skips `load_dataset`'s ~2 s first-call setup.
- HTML (.html .htm) and PDF (.pdf): one document per file, like .txt. HTML keeps only the main text, as
  `trafilatura.extract` finds it (navigation, footers, scripts and ads dropped); PDF is the text of every page
  (pypdf's `extract_text`, pages joined by a blank line). A file that cannot be read (corrupt, encrypted, an
  extractor error) counts as one `unreadable_file` record and one with no text as `empty`, at location "path",
  so a folder of crawled pages or filings goes on past its broken files under `max_bad_fraction`.
- Parquet: `datasets.load_dataset("parquet", streaming=True, columns=...)`, one file at a time so every row knows
  its file. Arrow has validated UTF-8 and column types when the file was written, so the only per-row faults left
  are nulls and values of the wrong kind; missing columns and non-text columns are refused up front from the schema.
- `save_to_disk` folders (with dataset_info.json / state.json): `datasets.load_from_disk`, memory-mapped Arrow,
  iterated in batches.
Locations are "path:LINE" (1-based, blank lines counted, a CSV record at its first line) for line formats,
"path:row N" (0-based, as in `dataset[N]`) for Parquet and save_to_disk rows, and "path" for HTML and PDF files.

Bad input (`BAD_REASONS`) is dropped and counted in a `SourceReport`; `check_bad_fraction` stops the run with a
message listing reasons and locations when more than the allowed fraction of a source is bad. Only problems that
make a whole source unusable raise `DataError` at once: a missing path, an unknown format or kind, a field mapping
naming a column the file does not have.
"""

from __future__ import annotations

import codecs
import csv
import glob
import gzip
import itertools
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from jaxfin.config.choices import SOURCE_FORMATS
from jaxfin.config.schema import SourceConfig
from jaxfin.data import DataError

KINDS = ("text", "chat", "pairs", "completion", "prompts")
FORMATS = SOURCE_FORMATS
# Drop reasons that mean broken input; filters and dedup drop for other reasons, which are choices, not faults.
BAD_REASONS = frozenset(
    {
        "malformed_json",
        "malformed_csv",
        "missing_field",
        "wrong_type",
        "invalid_utf8",
        "too_long",
        "empty",
        "unreadable_file",
    }
)
MAX_EXAMPLES = 5  # locations kept per drop reason
# Early stop: a source whose first records are mostly bad is misconfigured (wrong mapping, wrong format);
# say so after this many records instead of after reading all of it.
EARLY_STOP_MIN_READ = 1000
EARLY_STOP_FRACTION = 0.5

_EXTENSIONS = {
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "text",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
}
_WHOLE_FILE = ("text", "html", "pdf")  # formats whose every file is one plain text document
_DISK_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
_GLOB_CHARS = re.compile(r"[*?\[]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_FIELDS = {
    "text": ("text",),
    "chat": ("messages", "instruction", "input", "output", "system"),
    "pairs": ("prompt", "chosen", "rejected"),
    "completion": ("prompt", "completion"),
    "prompts": ("prompt",),
}
_ROLE_ALIASES = {"human": "user", "gpt": "assistant"}  # ShareGPT-style {"from", "value"} messages
_JSON_TYPES = {int: "a number", float: "a number", bool: "a boolean", list: "a list", dict: "an object"}


@dataclass(slots=True)
class Document:
    """One record of a source: where it came from (for messages) and its fields, normalised per kind."""

    source: str
    loc: str
    kind: str
    data: dict

    def text_for_filters(self) -> str:
        """The text that filters and dedup judge: what the model reads as context or learns to write."""
        if self.kind == "text":
            return self.data["text"]
        if self.kind == "chat":
            return "\n".join(m["content"] for m in self.data["messages"])
        if self.kind == "completion":
            return self.data["prompt"] + self.data["completion"]
        if self.kind == "prompts":
            p = self.data["prompt"]
            return p if isinstance(p, str) else "\n".join(m["content"] for m in p)
        return self.data["prompt"] + self.data["chosen"]


@dataclass
class SourceReport:
    """What happened to one source's records; filters and dedup add their own drop reasons to the same report."""

    name: str
    read: int = 0  # records seen (blank lines are not records)
    dropped: Counter = field(default_factory=Counter)  # reason -> count
    examples: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # reason -> first (loc, detail)s
    bytes_read: int = 0  # bytes of input consumed

    @property
    def kept(self) -> int:
        return self.read - sum(self.dropped.values())

    def drop(self, reason: str, loc: str, detail: str = "") -> None:
        self.dropped[reason] += 1
        kept = self.examples.setdefault(reason, [])
        if len(kept) < MAX_EXAMPLES:
            kept.append((loc, detail))

    def bad_count(self) -> int:
        return sum(n for reason, n in self.dropped.items() if reason in BAD_REASONS)

    def bad_fraction(self) -> float:
        """Share of records dropped as broken input; filter and dedup drops do not count."""
        return self.bad_count() / self.read if self.read else 0.0

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "read": self.read,
            "kept": self.kept,
            "dropped": dict(self.dropped),
            "bad_fraction": self.bad_fraction(),
            "bytes_read": self.bytes_read,
            "examples": {r: [{"loc": loc, "detail": d} for loc, d in ex] for r, ex in self.examples.items()},
        }

    def format(self) -> str:
        """One line for logs, e.g. `fomc: read 46, kept 45, dropped: empty 1 (minutes/x.txt:1)`."""
        line = f"{self.name}: read {self.read}, kept {self.kept}"
        if not self.dropped:
            return line
        parts = []
        for reason, n in self.dropped.most_common():
            locs = [loc for loc, _ in self.examples.get(reason, [])[:3]]
            more = ", ..." if n > len(locs) else ""
            parts.append(f"{reason} {n} ({', '.join(locs)}{more})")
        return f"{line}, dropped: {', '.join(parts)}"


def check_bad_fraction(report: SourceReport, max_bad_fraction: float) -> None:
    """Stop with every reason, count and first locations when too much of a source is broken. O(reasons): cheap."""
    fraction = report.bad_fraction()
    if fraction > max_bad_fraction:
        raise DataError(
            _bad_input_message(
                report,
                f"source '{report.name}': {report.bad_count()} of {report.read} records are bad input "
                f"({fraction:.2%}; at most {max_bad_fraction:.2%} may be skipped):",
            )
        )


def _bad_input_message(report: SourceReport, headline: str) -> str:
    lines = [headline]
    for reason, n in report.dropped.most_common():
        if reason in BAD_REASONS:
            lines.append(f"  {reason}: {n}")
            lines += [f"    {loc}: {detail}" for loc, detail in report.examples.get(reason, [])]
    lines.append("Fix or remove these records, check the source's `format` and `fields` mapping, or allow more.")
    return "\n".join(lines)


def default_source_name(path: str) -> str:
    """The file stem, the folder's name, or for a glob the last folder before the first wildcard."""
    parts = Path(path).parts
    for i, part in enumerate(parts):
        if _GLOB_CHARS.search(part):
            parts = parts[:i]
            break
    name = parts[-1] if parts else ""
    name = name.removesuffix(".gz")
    suffix = Path(name).suffix.lower()
    return name[: -len(suffix)] if suffix in _EXTENSIONS else name


def read_sources(
    sources: list[SourceConfig], max_bad_fraction: float = 0.01, max_chars: int = 10_000_000
) -> tuple[Iterator[Document], dict[str, SourceReport]]:
    """All sources one after the other, each checked against `max_bad_fraction` when it ends.

    Names, paths, formats and kinds are checked now, so a typo fails before any reading or model loading.
    """
    names = [src.name or default_source_name(src.path) for src in sources]
    for src, name in zip(sources, names):
        if not name:
            raise DataError(f"data source with path '{src.path}' has no name and none can be derived: set `name`")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DataError(f"data source names must be unique; repeated: {', '.join(duplicates)} (set `name`)")
    reports = {name: SourceReport(name) for name in names}
    readers = [
        read_source(src, reports[name], max_chars=max_chars, max_bad_fraction=max_bad_fraction)
        for src, name in zip(sources, names)
    ]
    return _chain(readers, [reports[n] for n in names], max_bad_fraction), reports


def _chain(readers: list[Iterator[Document]], reports: list[SourceReport], max_bad_fraction: float):
    for reader, report in zip(readers, reports):
        yield from reader
        check_bad_fraction(report, max_bad_fraction)
        if report.read == 0:
            raise DataError(f"source '{report.name}': no records found")


def read_source(
    src: SourceConfig,
    report: SourceReport,
    *,
    max_chars: int = 10_000_000,
    max_bad_fraction: float | None = None,
) -> Iterator[Document]:
    """Documents of one source in file order; bad records are counted in `report`, never raised.

    The path, format, kind and field names are checked on the call (not on the first `next`). With
    `max_bad_fraction`, reading stops early once over half of at least 1000 records were bad (a misconfigured source);
    the caller still calls `check_bad_fraction` at the end for the exact policy.
    """
    name = report.name or src.name
    if src.kind not in KINDS:
        raise DataError(f"source '{name}': unknown kind '{src.kind}' (use one of: {', '.join(KINDS)})")
    if src.format not in FORMATS:
        raise DataError(f"source '{name}': unknown format '{src.format}' (use one of: {', '.join(FORMATS)})")
    unknown = sorted(set(src.fields) - set(_FIELDS[src.kind]))
    if unknown:
        raise DataError(
            f"source '{name}': `fields` keys {unknown} are not fields of kind '{src.kind}' "
            f"(expected some of {list(_FIELDS[src.kind])}); `fields` maps our field -> your column, e.g. {{text: body}}"
        )
    files = _resolve(src, name)
    if src.kind != "text" and any(fmt in _WHOLE_FILE for _, fmt in files):
        raise DataError(f"source '{name}': .txt, HTML and PDF files hold one plain document each; kind '{src.kind}' "
                        "needs records")  # fmt: skip
    early = None if max_bad_fraction is None else max(EARLY_STOP_FRACTION, max_bad_fraction)
    ctx = _Ctx(name, src.kind, dict(src.fields), max_chars, report, early)
    if not src.records:
        return _read_files(files, ctx)
    start, end = _records(src.records, name)
    return itertools.islice(_read_files(files, ctx), start, end)


def _records(records: list, name: str) -> tuple[int, int | None]:
    """A source's `records: [start, end]` checked: 0 <= start < end (end None: to the end)."""
    ok = len(records) == 2 and isinstance(records[0], int) and records[0] >= 0
    ok = ok and (records[1] is None or (isinstance(records[1], int) and records[1] > records[0]))
    if not ok:
        raise DataError(f"source '{name}': records must be [start, end] with 0 <= start < end (end null: to the "
                        f"end of the source), got {records!r}")  # fmt: skip
    return records[0], records[1]


def source_files(src: SourceConfig) -> list[Path]:
    """Every file the source reads (a save_to_disk folder's files included), sorted: the token cache's key."""
    out = []
    for path, fmt in _resolve(src, src.name or default_source_name(src.path)):
        p = Path(path)
        out += sorted(f for f in p.rglob("*") if f.is_file()) if fmt == "hf_disk" else [p]
    return out


def _read_files(files: list[tuple[str, str]], ctx: _Ctx) -> Iterator[Document]:
    for path, fmt in files:
        yield from _READERS[fmt](path, ctx)


# ---------------------------------------------------------------- paths and formats


def _resolve(src: SourceConfig, name: str) -> list[tuple[str, str]]:
    """(file or save_to_disk folder, format) pairs, in a stable (sorted) order."""
    if not src.path:
        raise DataError(f"source '{name}': no `path` set")
    if _GLOB_CHARS.search(src.path):
        matches = sorted(glob.glob(src.path, recursive=True))
        if not matches:
            raise DataError(f"source '{name}': no files match '{src.path}' (relative to {os.getcwd()})")
        return [pair for m in matches for pair in _resolve_one(m, src.format, name)]
    if not os.path.exists(src.path):
        raise DataError(f"source '{name}': path not found: '{src.path}' (relative paths start at {os.getcwd()})")
    return _resolve_one(src.path, src.format, name)


def _resolve_one(path: str, fmt: str, name: str) -> list[tuple[str, str]]:
    if os.path.isdir(path):
        return _resolve_folder(path, fmt, name)
    if fmt == "hf_disk":
        raise DataError(f"source '{name}': format hf_disk needs a save_to_disk folder, '{path}' is a file")
    if fmt == "auto":
        fmt = _format_of(path)
        if fmt is None:
            known = " ".join(_EXTENSIONS)
            raise DataError(f"source '{name}': cannot tell the format of '{path}' (known: {known}); set `format`")
    return [(path, fmt)]


def _resolve_folder(path: str, fmt: str, name: str) -> list[tuple[str, str]]:
    """A save_to_disk folder, or the files of one format directly in the folder (not in subfolders)."""
    if fmt == "hf_disk" or (fmt == "auto" and any(os.path.exists(os.path.join(path, m)) for m in _DISK_MARKERS)):
        return [(path, "hf_disk")]
    by_format: dict[str, list[str]] = {}
    for entry in sorted(os.listdir(path)):
        full = os.path.join(path, entry)
        found = _format_of(entry)
        if found and os.path.isfile(full) and fmt in ("auto", found):
            by_format.setdefault(found, []).append(full)
    if not by_format:
        wanted = "readable" if fmt == "auto" else fmt
        raise DataError(f"source '{name}': no {wanted} files in folder '{path}'")
    if len(by_format) > 1:
        counts = ", ".join(f"{len(v)} {k}" for k, v in by_format.items())
        raise DataError(f"source '{name}': folder '{path}' mixes formats ({counts}); use a glob such as {path}/*.jsonl")
    ((found, files),) = by_format.items()
    return [(f, found) for f in files]


def _format_of(path: str) -> str | None:
    return _EXTENSIONS.get(Path(path.removesuffix(".gz")).suffix.lower())


def _open_binary(path: str):
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")  # noqa: SIM115


# ---------------------------------------------------------------- records -> normalised data


class _Bad(Exception):
    """A record that cannot be used; caught by the reader and counted, never shown as a traceback."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


@dataclass
class _Ctx:
    """What every reader needs: the source's name, kind and mapping, the limits, and where to count."""

    name: str
    kind: str
    fields: dict[str, str]
    max_chars: int
    report: SourceReport
    early_stop: float | None

    def col(self, ours: str) -> str:
        return self.fields.get(ours, ours)

    def bad(self, reason: str, loc: str, detail: str) -> None:
        """Count a broken record; stop at once if the source is clearly misconfigured."""
        report = self.report
        report.drop(reason, loc, detail)
        if self.early_stop is None or report.read < EARLY_STOP_MIN_READ or report.bad_fraction() <= self.early_stop:
            return
        headline = (
            f"source '{self.name}': stopped early, {report.bad_count()} of the first {report.read} records "
            "are bad input; the `format` or `fields` mapping is probably wrong:"
        )
        raise DataError(_bad_input_message(report, headline))

    def document(self, rec: dict, loc: str) -> Document | None:
        """Map, normalise and check one record; None (and counted) when it is bad."""
        try:
            data = _NORMALISE[self.kind](rec, self)
        except _Bad as e:
            self.bad(e.reason, loc, e.detail)
            return None
        return self.checked(data, loc)

    def checked(self, data: dict, loc: str) -> Document | None:
        """Check normalised data (length, emptiness, Unicode); None (and counted) when it is bad."""
        try:
            _CHECK[self.kind](data, self.max_chars)
        except _Bad as e:
            self.bad(e.reason, loc, e.detail)
            return None
        return Document(self.name, loc, self.kind, data)


def _describe(v) -> str:
    return _JSON_TYPES.get(type(v), type(v).__name__)


def _required_str(rec: dict, col: str) -> str:
    v = rec.get(col)
    if type(v) is str:
        return v
    if v is None:
        raise _Bad("missing_field", f"field '{col}' is null" if col in rec else f"no field '{col}'")
    raise _Bad("wrong_type", f"field '{col}' is {_describe(v)}, expected a string")


def _optional_str(rec: dict, col: str) -> str:
    return "" if rec.get(col) is None else _required_str(rec, col)


def _normalise_text(rec: dict, ctx: _Ctx) -> dict:
    return {"text": _required_str(rec, ctx.col("text"))}


def _chat_layout(fields: dict[str, str], columns) -> str:
    """'messages' or 'instruction' (Alpaca-style instruction/input/output), from the mapping, else the columns."""
    if any(k in fields for k in ("instruction", "input", "output", "system")):
        return "instruction"
    if "messages" in fields or "messages" in columns or "instruction" not in columns:
        return "messages"
    return "instruction"


def _normalise_chat(rec: dict, ctx: _Ctx) -> dict:
    if _chat_layout(ctx.fields, rec) == "instruction":
        return {"messages": _instruction_messages(rec, ctx)}
    col = ctx.col("messages")
    msgs = rec.get(col)
    if msgs is None:
        raise _Bad("missing_field", f"no field '{col}' (nor instruction/output)")
    if type(msgs) is not list:
        raise _Bad("wrong_type", f"field '{col}' is {_describe(msgs)}, expected a list of messages")
    return {"messages": [_message(m, f"{col}[{i}]") for i, m in enumerate(msgs)]}


def _message(m, where: str) -> dict:
    if type(m) is not dict:
        raise _Bad("wrong_type", f"{where} is {_describe(m)}, expected an object with role and content")
    role, content = m.get("role", m.get("from")), m.get("content", m.get("value"))
    if role is None or content is None:
        raise _Bad("missing_field", f"{where} needs a role and a content")
    if type(role) is not str or type(content) is not str:
        raise _Bad("wrong_type", f"{where}: role and content must be strings")
    return {"role": _ROLE_ALIASES.get(role, role), "content": content}


def _instruction_messages(rec: dict, ctx: _Ctx) -> list[dict]:
    """instruction (+ "\\n\\n" + input, the Alpaca convention) -> user; output -> assistant; optional system first."""
    user = _required_str(rec, ctx.col("instruction"))
    extra = _optional_str(rec, ctx.col("input"))
    if extra.strip():
        user = f"{user}\n\n{extra}"
    answer = _required_str(rec, ctx.col("output"))
    system = _optional_str(rec, ctx.col("system"))
    head = [{"role": "system", "content": system}] if system.strip() else []
    return [*head, {"role": "user", "content": user}, {"role": "assistant", "content": answer}]


def _normalise_pairs(rec: dict, ctx: _Ctx) -> dict:
    """chosen/rejected given as whole dialogues that repeat the prompt (HH-RLHF style) are cut to the continuation,
    since the preference loss scores only what follows the prompt; prompt + chosen stays the original text."""
    prompt, chosen, rejected = (_required_str(rec, ctx.col(f)) for f in ("prompt", "chosen", "rejected"))
    if prompt and chosen.startswith(prompt) and rejected.startswith(prompt):
        chosen, rejected = chosen[len(prompt) :], rejected[len(prompt) :]
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def _normalise_completion(rec: dict, ctx: _Ctx) -> dict:
    return {f: _required_str(rec, ctx.col(f)) for f in ("prompt", "completion")}


def _normalise_prompts(rec: dict, ctx: _Ctx) -> dict:
    """The prompt (a string, or a conversation as a list of messages) and every other field of the record."""
    col = ctx.col("prompt")
    prompt = rec.get(col)
    if prompt is None:
        raise _Bad("missing_field", f"no field '{col}'")
    if type(prompt) is list:
        prompt = [_message(m, f"{col}[{i}]") for i, m in enumerate(prompt)]
    elif type(prompt) is not str:
        raise _Bad("wrong_type", f"field '{col}' is {_describe(prompt)}, expected a string or a list of messages")
    return {**{k: v for k, v in rec.items() if k != col}, "prompt": prompt}


def _blank(s: str) -> bool:
    return not s or s.isspace()  # isspace stops at the first visible character: no copy of a long text


def _check_strings(strings: list[str], max_chars: int) -> None:
    total = sum(map(len, strings))
    if total > max_chars:
        raise _Bad("too_long", f"{total:,} characters, more than max_chars {max_chars:,}")
    for s in strings:
        if not s.isascii() and (m := _SURROGATE.search(s)):
            raise _Bad("invalid_utf8", f"lone surrogate U+{ord(m.group()):04X} at character {m.start()} (not Unicode)")


def _check_text(data: dict, max_chars: int) -> None:
    _check_strings([data["text"]], max_chars)
    if _blank(data["text"]):
        raise _Bad("empty", "empty or whitespace-only text")


def _check_chat(data: dict, max_chars: int) -> None:
    msgs = data["messages"]
    _check_strings([m["content"] for m in msgs] + [m["role"] for m in msgs], max_chars)
    if all(_blank(m["content"]) for m in msgs):
        raise _Bad("empty", "no messages" if not msgs else "all message contents are empty")


def _check_pairs(data: dict, max_chars: int) -> None:
    _check_strings([data["prompt"], data["chosen"], data["rejected"]], max_chars)
    for side in ("chosen", "rejected"):
        if _blank(data[side]):
            raise _Bad("empty", f"empty {side} answer")


def _check_completion(data: dict, max_chars: int) -> None:
    _check_strings([data["prompt"], data["completion"]], max_chars)
    if _blank(data["completion"]):
        raise _Bad("empty", "empty completion")


def _check_prompts(data: dict, max_chars: int) -> None:
    p = data["prompt"]
    texts = [p] if isinstance(p, str) else [m["content"] for m in p]
    _check_strings(texts, max_chars)
    if all(_blank(t) for t in texts):
        raise _Bad("empty", "empty prompt")


_NORMALISE: dict[str, Callable] = {"text": _normalise_text, "chat": _normalise_chat, "pairs": _normalise_pairs,
                                   "completion": _normalise_completion, "prompts": _normalise_prompts}  # fmt: skip
_CHECK: dict[str, Callable] = {"text": _check_text, "chat": _check_chat, "pairs": _check_pairs,
                               "completion": _check_completion, "prompts": _check_prompts}  # fmt: skip


# ---------------------------------------------------------------- readers


def _utf8_detail(raw: bytes, e: UnicodeDecodeError) -> str:
    return f"invalid UTF-8 byte 0x{raw[e.start]:02x} at byte {e.start + 1} of the line"


def _read_jsonl(path: str, ctx: _Ctx) -> Iterator[Document]:
    """One JSON object per line; each line is decoded and parsed alone, so one bad line costs only itself."""
    report, loads, first = ctx.report, json.loads, True
    with _open_binary(path) as f:
        for n, raw in enumerate(f, 1):
            report.bytes_read += len(raw)
            if raw.isspace():
                continue
            if first:
                raw, first = _first_line(raw, path, ctx), False
            report.read += 1
            loc = f"{path}:{n}"
            try:
                rec = loads(raw.decode())
            except UnicodeDecodeError as e:
                ctx.bad("invalid_utf8", loc, _utf8_detail(raw, e))
                continue
            except ValueError as e:  # json.JSONDecodeError
                ctx.bad("malformed_json", loc, f"{getattr(e, 'msg', e)} (column {getattr(e, 'colno', '?')})")
                continue
            except RecursionError:
                ctx.bad("malformed_json", loc, "nested too deeply")
                continue
            if type(rec) is not dict:
                ctx.bad("wrong_type", loc, f"the line is {_describe(rec)}, expected a JSON object")
                continue
            doc = ctx.document(rec, loc)
            if doc is not None:
                yield doc


def _first_line(raw: bytes, path: str, ctx: _Ctx) -> bytes:
    """Drop a UTF-8 byte order mark; refuse a .json file that is one JSON array rather than JSON Lines."""
    raw = raw.removeprefix(codecs.BOM_UTF8)
    if raw.lstrip().startswith(b"[") and path.removesuffix(".gz").endswith(".json"):
        raise DataError(
            f"source '{ctx.name}': {path} looks like one JSON array, not JSON Lines (one object per line); "
            f"convert it, e.g. `jq -c '.[]' {path} > out.jsonl`"
        )
    return raw


def _read_csv(path: str, ctx: _Ctx) -> Iterator[Document]:
    """A header row, then one record per row (quoted fields may span lines; the loc is the record's first line)."""
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))  # the 128 KiB default rejects long documents
    bad_lines: dict[int, str] = {}
    delimiter = "\t" if path.removesuffix(".gz").lower().endswith(".tsv") else ","
    with _open_binary(path) as f:
        reader = csv.reader(_decoded_lines(f, ctx.report, bad_lines), delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            return
        _needed_columns(header, path, ctx)
        while True:
            start = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                ctx.report.read += 1
                ctx.bad("malformed_csv", f"{path}:{start}", str(e))
                continue
            if row:
                doc = _csv_record(row, header, path, start, reader.line_num, bad_lines, ctx)
                if doc is not None:
                    yield doc


def _decoded_lines(f, report: SourceReport, bad_lines: dict[int, str]) -> Iterator[str]:
    """Lines decoded one by one; an invalid line is remembered by number and passed on with its bytes escaped."""
    for n, raw in enumerate(f, 1):
        report.bytes_read += len(raw)
        if n == 1:
            raw = raw.removeprefix(codecs.BOM_UTF8)
        try:
            yield raw.decode()
        except UnicodeDecodeError as e:
            bad_lines[n] = _utf8_detail(raw, e)
            yield raw.decode("utf-8", "surrogateescape")


def _csv_record(row, header, path, start, end, bad_lines, ctx: _Ctx) -> Document | None:
    ctx.report.read += 1
    if bad_lines:
        bad = sorted(n for n in bad_lines if n <= end)
        if bad:
            details = [bad_lines.pop(n) for n in bad]
            ctx.bad("invalid_utf8", f"{path}:{bad[0]}", details[0])
            return None
    if len(row) != len(header):
        ctx.bad("malformed_csv", f"{path}:{start}", f"{len(row)} fields, the header has {len(header)}")
        return None
    return ctx.document(dict(zip(header, row)), f"{path}:{start}")


def _read_text(path: str, ctx: _Ctx) -> Iterator[Document]:
    """A whole .txt file is one document; an invalid byte is reported at its line."""
    report, loc = ctx.report, f"{path}:1"
    report.read += 1
    size = os.path.getsize(path)
    if not path.endswith(".gz") and size > 4 * ctx.max_chars:  # a character is at most 4 UTF-8 bytes: skip reading
        ctx.bad("too_long", loc, f"{size:,} bytes, more than max_chars {ctx.max_chars:,} characters")
        return
    with _open_binary(path) as f:
        raw = f.read()
    report.bytes_read += len(raw)
    try:
        text = raw.decode().removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        ctx.bad("invalid_utf8", f"{path}:{line}", f"invalid UTF-8 byte 0x{raw[e.start]:02x} at byte {column}")
        return
    doc = ctx.checked({"text": text}, loc)
    if doc is not None:
        yield doc


def _needed_columns(columns: list[str], path: str, ctx: _Ctx) -> list[str]:
    """The columns to read; a required column the file lacks makes the whole source unusable."""
    if ctx.kind == "text":
        required, optional = ["text"], []
    elif ctx.kind in ("pairs", "completion"):
        required, optional = list(_FIELDS[ctx.kind]), []
    elif ctx.kind == "prompts":  # every other column is metadata the rewards may read
        required, optional = ["prompt"], [c for c in columns if c != ctx.col("prompt")]
    elif _chat_layout(ctx.fields, columns) == "instruction":
        required, optional = ["instruction", "output"], ["input", "system"]
    else:
        required, optional = ["messages"], []
    missing = [f for f in required if ctx.col(f) not in columns]
    if missing:
        named = ", ".join(f"'{ctx.col(f)}' (for field '{f}')" for f in missing)
        example = columns[0] if columns else "column"
        raise DataError(
            f"source '{ctx.name}': column {named} is not in {path}; its columns are {list(columns)}. "
            f"Map our field to one of them with `fields`, e.g. {{{missing[0]}: {example}}}"
        )
    return [ctx.col(f) for f in required] + [ctx.col(f) for f in optional if ctx.col(f) in columns]


def _check_string_types(schema, columns: list[str], path: str, ctx: _Ctx) -> None:
    """A column of numbers can never give text: refuse it up front rather than count every row as wrong_type."""
    import pyarrow as pa

    if (ctx.kind == "chat" and ctx.col("messages") in columns) or ctx.kind == "prompts":
        return  # a list of message structs, or metadata of any type: checked row by row
    for col in columns:
        t = schema.field(col).type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)):
            raise DataError(f"source '{ctx.name}': column '{col}' in {path} holds {t}, not text; map another column")


def _read_parquet(path: str, ctx: _Ctx) -> Iterator[Document]:
    import datasets  # imported on use: it takes a second, and line formats never need it
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except Exception as e:  # pyarrow raises several types for a file that is not Parquet
        raise DataError(f"source '{ctx.name}': {path} is not a readable Parquet file ({e})") from None
    columns = _needed_columns(schema.names, path, ctx)
    _check_string_types(schema, columns, path, ctx)
    ds = datasets.load_dataset(
        "parquet", data_files=[os.path.abspath(path)], split="train", streaming=True, columns=columns
    )
    yield from _read_rows(ds.iter(batch_size=1024), path, ctx)
    ctx.report.bytes_read += os.path.getsize(path)


def _read_hf_disk(path: str, ctx: _Ctx) -> Iterator[Document]:
    import datasets

    try:
        ds = datasets.load_from_disk(path)
    except (FileNotFoundError, ValueError, OSError) as e:
        raise DataError(f"source '{ctx.name}': {path} is not a readable save_to_disk folder ({e})") from None
    if isinstance(ds, datasets.DatasetDict):
        splits = ", ".join(f"{path}/{s}" for s in ds)
        raise DataError(f"source '{ctx.name}': {path} holds several splits; point `path` at one of: {splits}")
    columns = _needed_columns(ds.column_names, path, ctx)
    _check_string_types(ds.features.arrow_schema, columns, path, ctx)
    yield from _read_rows(ds.select_columns(columns).iter(batch_size=1024), path, ctx)
    ctx.report.bytes_read += sum(os.path.getsize(c["filename"]) for c in ds.cache_files)


def _read_rows(batches, path: str, ctx: _Ctx) -> Iterator[Document]:
    """Column batches -> one record per row, numbered from 0 across the file."""
    row = 0
    for batch in batches:
        names = list(batch)
        for values in zip(*batch.values()):
            ctx.report.read += 1
            doc = ctx.document(dict(zip(names, values)), f"{path}:row {row}")
            row += 1
            if doc is not None:
                yield doc


def _read_html(path: str, ctx: _Ctx) -> Iterator[Document]:
    """One document per file: the main text as trafilatura extracts it (it detects the encoding from the bytes)."""
    import trafilatura  # imported on use: only HTML sources need it

    with _open_binary(path) as f:
        raw = f.read()
    return _whole_file(path, ctx, len(raw), lambda: trafilatura.extract(raw), "trafilatura found no main text")


def _read_pdf(path: str, ctx: _Ctx) -> Iterator[Document]:
    """One document per file: the text of every page, pages joined by a blank line; scanned pages have none."""
    import io

    import pypdf

    with _open_binary(path) as f:
        raw = f.read()

    def extract() -> str:
        reader = pypdf.PdfReader(io.BytesIO(raw))
        if reader.is_encrypted and not reader.decrypt(""):
            raise ValueError("encrypted: it needs a password")
        return "\n\n".join(page.extract_text() or "" for page in reader.pages)

    return _whole_file(path, ctx, len(raw), extract, "no text layer (a scanned PDF?)")


def _whole_file(path: str, ctx: _Ctx, size: int, extract: Callable[[], str | None], why_empty: str):
    """Count one record; an extractor that raises makes it `unreadable_file`, an empty result `empty`."""
    ctx.report.read += 1
    ctx.report.bytes_read += size
    try:
        text = extract()
    except Exception as e:  # corrupt files raise many types (parser, decompression, crypto): all one bad record
        ctx.bad("unreadable_file", path, f"{type(e).__name__}: {e}"[:300])
        return
    if not text or text.isspace():
        ctx.bad("empty", path, why_empty)
        return
    doc = ctx.checked({"text": text}, path)
    if doc is not None:
        yield doc


_READERS: dict[str, Callable[[str, _Ctx], Iterator[Document]]] = {
    "jsonl": _read_jsonl,
    "csv": _read_csv,
    "text": _read_text,
    "html": _read_html,
    "pdf": _read_pdf,
    "parquet": _read_parquet,
    "hf_disk": _read_hf_disk,
}
