"""`jaxfin data prepare`: read sources, filter and dedup, tokenize into the token cache, report per source.

Each source gets its own cache folder `OUT/<name>-<key>/` (see jaxfin.data.cache); the key hashes the source
files' contents, the tokenizer, and every setting that changes the tokens (kind, field mapping, BOS/EOS,
filters), so a second run with the same inputs reuses the folder and prints the stored report. Dedup runs
within a source (a source's cache must not depend on which other sources were prepared with it).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from jaxfin.config.schema import FilterConfig, SourceConfig
from jaxfin.data import DataError
from jaxfin.data.cache import META, TokenCache, build_cache, cache_key
from jaxfin.data.filters import DocumentFilter
from jaxfin.data.render import RENDER_VERSION, sequences
from jaxfin.data.sources import SourceReport, check_bad_fraction, read_source, source_files
from jaxfin.data.tokenizer import Tokenizer


def prepare_source(
    src: SourceConfig,
    tok: Tokenizer,
    out: Path,
    filters: FilterConfig,
    *,
    max_bad_fraction: float = 0.01,
    max_chars: int = 10_000_000,
) -> dict:
    """Build (or reuse) one source's cache; returns its report with the cache path and token counts."""
    policy = {
        "kind": src.kind,
        "fields": src.fields,
        "format": src.format,
        "chat_template": src.chat_template if src.kind == "chat" else None,
        "render": RENDER_VERSION,
        "max_chars": max_chars,
        "filters": dataclasses.asdict(filters),
        **({"records": list(src.records)} if src.records else {}),  # (absent when unset: older caches stay valid)
    }
    key, inputs = cache_key(source_files(src), tok.fingerprint, policy)
    folder = out / f"{src.name}-{key}"
    if (folder / META).is_file():
        cache = TokenCache(folder)
        return {**cache.meta["report"], "cache": str(folder), "reused": True, **_counts(cache)}

    report = SourceReport(src.name)
    doc_filter = DocumentFilter(filters)

    def kept_docs():
        for doc in read_source(src, report, max_chars=max_chars, max_bad_fraction=max_bad_fraction):
            reason = doc_filter.reason(doc.text_for_filters())
            if reason:
                report.drop(reason, doc.loc)
                continue
            yield doc
        check_bad_fraction(report, max_bad_fraction)

    def meta():
        return {"key": key, "inputs": inputs, "source": dataclasses.asdict(src), "report": report.to_dict()}

    seqs = sequences(kept_docs(), src.kind, tok, src.chat_template)
    cache = build_cache(seqs, tok.vocab_size, folder, meta=meta, label=src.name)
    return {**report.to_dict(), "cache": str(folder), "reused": False, **_counts(cache)}


def _counts(cache: TokenCache) -> dict:
    return {"sequences": len(cache), "tokens": cache.num_tokens}


def prepare(
    sources: list[SourceConfig], tok: Tokenizer, out: str | Path, filters: FilterConfig, **kwargs
) -> dict[str, dict]:
    names = [s.name for s in sources]
    if len(set(names)) != len(names) or not all(names):
        raise DataError(f"source names must be unique and non-empty, got {names}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    reports = {s.name: prepare_source(s, tok, out, filters, **kwargs) for s in sources}
    (out / "report.json").write_text(json.dumps(reports, indent=2) + "\n")
    return reports


def format_report(reports: dict[str, dict]) -> str:
    """A plain table: one line per source, then the drop reasons."""
    lines = [f"{'source':<24} {'read':>9} {'kept':>9} {'tokens':>13}  cache"]
    for name, r in reports.items():
        reused = " (reused)" if r["reused"] else ""
        lines.append(f"{name:<24} {r['read']:>9,} {r['kept']:>9,} {r['tokens']:>13,}  {r['cache']}{reused}")
        for reason, n in sorted(r["dropped"].items()):
            where = ", ".join(e["loc"] for e in r.get("examples", {}).get(reason, [])[:3])
            lines.append(f"{'':<4}dropped {reason}: {n:,}" + (f"  e.g. {where}" if where else ""))
    return "\n".join(lines)
