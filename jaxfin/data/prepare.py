"""`jaxfin data prepare`: read sources, filter and dedup, tokenize into the token cache, report per source.

Each source gets its own cache folder `OUT/<name>-<key>/` (see jaxfin.data.cache); the key hashes the source
files' contents, the tokenizer, and every setting that changes the tokens (kind, field mapping, BOS/EOS,
filters, the quality model's content), so a second run with the same inputs reuses the folder and prints the
stored report. Dedup and the quality model's keep_top run within a source (a source's cache must not depend on
which other sources were prepared with it).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from jaxfin.config.schema import FilterConfig, QualityModelConfig, SourceConfig
from jaxfin.data import DataError
from jaxfin.data.cache import META, TokenCache, build_cache, cache_key
from jaxfin.data.filters import DocumentFilter
from jaxfin.data.render import RENDER_VERSION, sequences
from jaxfin.data.sources import Document, SourceReport, check_bad_fraction, read_source, source_files
from jaxfin.data.tokenizer import Tokenizer

SCORES = "quality_scores.jsonl"  # in the cache folder: {loc, score, kept[, justification]} per scored document
QUALITY_REASON = "quality_model"
SCORE_BATCH = 256  # documents handed to the quality model at once


def prepare_source(
    src: SourceConfig,
    tok: Tokenizer,
    out: Path,
    filters: FilterConfig,
    *,
    max_bad_fraction: float = 0.01,
    max_chars: int = 10_000_000,
) -> dict:
    """Build (or reuse) one source's cache; returns its report with the cache path and token counts.

    With `filters.quality_model`, the source is read twice: pass 1 runs the other filters and scores every
    document they keep (scores in memory, 8 bytes a document; texts never held beyond one batch), the kept set is
    chosen from all the scores (keep_top needs them all), and pass 2 reads and filters again (deterministic, so
    the same documents in the same order) and tokenizes the chosen ones. Reading and filtering are cheap next to
    scoring, which happens once; buffering the texts instead would hold the whole corpus in memory.
    """
    quality = filters.quality_model
    filter_policy = dataclasses.asdict(filters)
    filter_policy.pop("quality_model")  # absent when off: caches built before it existed stay valid
    policy = {
        "kind": src.kind,
        "fields": src.fields,
        "format": src.format,
        "chat_template": src.chat_template if src.kind == "chat" else None,
        "render": RENDER_VERSION,
        "max_chars": max_chars,
        "filters": filter_policy,
        **({"records": list(src.records)} if src.records else {}),  # (absent when unset: older caches stay valid)
    }
    if quality.path:
        from jaxfin.data import quality as q

        q.check_config(quality)
        policy["quality_model"] = q.fingerprint(quality)  # the model's content and settings, not its path
    key, inputs = cache_key(source_files(src), tok.fingerprint, policy)
    folder = out / f"{src.name}-{key}"
    if (folder / META).is_file() and (not quality.path or (folder / SCORES).is_file()):
        cache = TokenCache(folder)
        return {**cache.meta["report"], "cache": str(folder), "reused": True, **_counts(cache)}

    report = SourceReport(src.name)

    def passing(rep: SourceReport) -> Iterator[Document]:
        """The documents every filter but the quality model keeps, in order; drops counted in `rep`."""
        doc_filter = DocumentFilter(filters)
        for doc in read_source(src, rep, max_chars=max_chars, max_bad_fraction=max_bad_fraction):
            reason = doc_filter.reason(doc.text_for_filters())
            if reason:
                rep.drop(reason, doc.loc)
                continue
            yield doc
        check_bad_fraction(rep, max_bad_fraction)

    docs, info = passing(report), {}
    scores_file = out / f".{folder.name}.{SCORES}"  # moved into the cache folder once that is complete
    if quality.path:
        scores, kept, info = _score_pass(passing(report), quality, scores_file)
        docs = _chosen(passing(SourceReport(src.name)), kept, scores, report)

    def meta():
        rep = {**report.to_dict(), **({"quality": info} if info else {})}
        return {"key": key, "inputs": inputs, "source": dataclasses.asdict(src), "report": rep}

    seqs = sequences(docs, src.kind, tok, src.chat_template)
    cache = build_cache(seqs, tok.vocab_size, folder, meta=meta, label=src.name)
    if quality.path:
        os.replace(scores_file, folder / SCORES)
    return {**meta()["report"], "cache": str(folder), "reused": False, **_counts(cache)}


def _score_pass(docs: Iterator[Document], cfg: QualityModelConfig, path: Path):
    """Pass 1: score every document, choose the kept ones, write the scores file -> (scores, kept mask, the
    report's "quality" entry)."""
    from jaxfin.data.quality import scorer, select

    t0 = time.perf_counter()
    model = scorer(cfg)
    load_s, score_s = time.perf_counter() - t0, 0.0
    batch = max(SCORE_BATCH, cfg.judge.batch_size)
    parts = []
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for chunk in _batches(docs, batch):
            t = time.perf_counter()
            texts = [d.text_for_filters() for d in chunk]
            s, why = model.judge(texts) if hasattr(model, "judge") else (model.score(texts), None)
            score_s += time.perf_counter() - t
            parts.append(s)
            for i, d in enumerate(chunk):
                f.write(json.dumps({"loc": d.loc, "score": float(s[i]), **({"why": why[i]} if why else {})}) + "\n")
    scores = np.concatenate(parts) if parts else np.zeros(0)
    kept, cutoff = select(scores, cfg.keep_top, cfg.threshold)
    with tmp.open(encoding="utf-8") as fin, path.open("w", encoding="utf-8") as fout:
        for line, k in zip(fin, kept):
            rec = json.loads(line)
            why = rec.pop("why", None)
            fout.write(json.dumps({**rec, "kept": bool(k), **({"justification": why} if why is not None else {})},
                                  ensure_ascii=False) + "\n")  # fmt: skip
    tmp.unlink()
    info = {
        "kind": cfg.kind,
        "scored": len(scores),
        "kept": int(kept.sum()),
        "cutoff": cutoff,
        "seconds": round(score_s, 3),
        "docs_per_s": round(len(scores) / score_s, 2) if score_s else None,
        "load_seconds": round(load_s, 3),
        **({"unparsed": model.unparsed} if hasattr(model, "unparsed") else {}),
    }
    return scores, kept, info


def _chosen(docs: Iterator[Document], kept: np.ndarray, scores: np.ndarray, report: SourceReport):
    """Pass 2: the same documents again; yield the kept ones, count the others as dropped by the quality model."""
    n = 0
    for n, doc in enumerate(docs, 1):
        if n > len(kept):
            break
        if kept[n - 1]:
            yield doc
        else:
            report.drop(QUALITY_REASON, doc.loc, f"score {scores[n - 1]:.4g}")
    if n != len(kept):
        raise DataError(f"source '{report.name}' changed while it was being prepared (pass 2 read other documents "
                        "than pass 1); run again")  # fmt: skip


def _batches(items: Iterator, n: int) -> Iterator[list]:
    chunk = []
    for x in items:
        chunk.append(x)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


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
        if q := r.get("quality"):
            unparsed = f", {q['unparsed']:,} unparsed" if "unparsed" in q else ""
            lines.append(f"{'':<4}quality ({q['kind']}): scored {q['scored']:,}, kept {q['kept']:,}, cutoff "
                         f"{q['cutoff']}, {q['docs_per_s']} docs/s{unparsed}")  # fmt: skip
    return "\n".join(lines)
