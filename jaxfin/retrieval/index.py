"""A BM25 passage index on disk: documents -> passages with stable source ids -> a `bm25s` index.

An index folder holds
    passages.jsonl   one passage a line: {id, doc, chunk, start, text}; id = "<doc location>#<chunk>", where the
                     location is the reader's `path:LINE` (a .jsonl record's line; a .txt / .md file is one document
                     at `path:1`) and chunk counts from 0 within the document; `start` is the character offset
    bm25/            the bm25s index (method "lucene": k1 1.5, b 0.75), passage i of passages.jsonl = bm25s doc i
    meta.json        format, counts, chunking, tokenizer scheme, build time

Documents are read by `jaxfin.data.sources.read_source` (kind text), so every format it reads works here; .md
files are read as plain text. Paths stay as given (relative ones relative to the cwd), so ids are stable when the
same command is run again from the same place.

Tokenizer (TOKENIZER below): NFKC, lower case; a run of letters/digits is one token, English stopwords (bm25s'
list) dropped; a run of CJK characters (Han, kana, Hangul: no spaces between words) becomes its overlapping
character bigrams (a lone character stays a unigram), as Lucene's CJK bigram analyzer does. Queries are
tokenized the same way and each distinct query token counts once.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jaxfin.config.schema import SourceConfig
from jaxfin.data import DataError
from jaxfin.data.sources import SourceReport, read_source

FORMAT, VERSION = "jaxfin-index", 1
TOKENIZER = "nfkc-lower-words-en-stopwords+cjk-bigrams"
PASSAGES, META, BM25_DIR = "passages.jsonl", "meta.json", "bm25"
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_TOKEN = re.compile(f"[{_CJK}]+|[^\\W_{_CJK}]+")
_CJK_RUN = re.compile(f"[{_CJK}]")
_PLAIN_TEXT = (".md", ".markdown", ".rst")  # read whole, as .txt is
_BREAKS = ("\n\n", "\n", "。", ". ", "！", "？", "; ", " ")  # preferred chunk ends, best first


def tokenize(text: str) -> list[str]:
    """BM25 tokens of `text` (the scheme in the module docstring)."""
    from bm25s.stopwords import STOPWORDS_EN

    out = []
    for tok in _TOKEN.findall(unicodedata.normalize("NFKC", text).lower()):
        if _CJK_RUN.match(tok):
            out += [tok] if len(tok) == 1 else [tok[i : i + 2] for i in range(len(tok) - 1)]
        elif tok not in STOPWORDS_EN:
            out.append(tok)
    return out


def chunk_spans(text: str, chunk_chars: int, overlap: int) -> list[tuple[int, int]]:
    """(start, end) character spans of at most `chunk_chars`, consecutive ones sharing about `overlap` characters;
    a span ends at a paragraph, line, sentence or word break in its second half when there is one."""
    spans, start, n = [], 0, len(text)
    while start < n:
        end = min(start + chunk_chars, n)
        if end < n:
            lo = start + chunk_chars // 2
            for sep in _BREAKS:
                cut = text.rfind(sep, lo, end)
                if cut >= 0:
                    end = cut + len(sep)
                    break
        spans.append((start, end))
        if end >= n:
            break
        start = max(end - overlap, start + 1)
        if text[start - 1].isalnum() and text[start].isalnum() and not _CJK_RUN.match(text[start]):
            space = text.find(" ", start, end)  # start the overlap at a word, not inside one
            start = space + 1 if 0 <= space < end - 1 else end
    return spans


def _files(arg: str) -> list[tuple[str, bool]]:
    """(file, found in a folder) for one DOCS argument: a file, a folder (walked, hidden entries skipped) or a glob."""
    if os.path.isdir(arg):
        found = []
        for root, dirs, names in os.walk(arg):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found += [(os.path.join(root, f), True) for f in sorted(names) if not f.startswith(".")]
        return found
    if os.path.isfile(arg):
        return [(arg, False)]
    matches = sorted(glob.glob(arg, recursive=True)) if re.search(r"[*?\[]", arg) else []
    if not matches:
        raise FileNotFoundError(f"index build: no such file, folder or glob match: {arg}")
    return [pair for m in matches for pair in _files(m)]


def read_passages(paths: list[str], chunk_chars: int = 1000, overlap: int = 200, field: str = "text",
                  log=print) -> tuple[list[dict], dict]:  # fmt: skip
    """Passages of every document under `paths`, and counts {documents, files, skipped_files, dropped_records}.
    A file in a folder whose format the reader does not know is skipped (and counted); named directly, it is an
    error. Broken records (bad JSON, a missing field) are dropped and reported by file:line."""
    if chunk_chars < 1 or not 0 <= overlap < chunk_chars:
        raise ValueError(f"need chunk_chars >= 1 and 0 <= overlap < chunk_chars, got {chunk_chars} and {overlap}")
    passages, docs, files, skipped, dropped = [], 0, 0, [], 0
    fields = {} if field == "text" else {"text": field}
    for arg in paths:
        for path, in_folder in _files(arg):
            fmt = "text" if path.lower().endswith(_PLAIN_TEXT) else "auto"
            report = SourceReport(path)
            try:
                records = read_source(SourceConfig(path=path, format=fmt, kind="text", fields=fields), report)
            except DataError:
                if not in_folder:
                    raise
                skipped.append(path)
                continue
            for doc in records:
                docs += 1
                text = doc.data["text"]
                for k, (a, b) in enumerate(chunk_spans(text, chunk_chars, overlap)):
                    if text[a:b].strip():
                        passages.append({"id": f"{doc.loc}#{k}", "doc": doc.loc, "chunk": k, "start": a,
                                         "text": text[a:b].strip()})  # fmt: skip
            files += 1
            if report.dropped:
                dropped += sum(report.dropped.values())
                log(f"index: {report.format()}")
    if skipped:
        log(f"index: skipped {len(skipped)} file(s) of unknown format, e.g. {skipped[0]}")
    return passages, {"documents": docs, "files": files, "skipped_files": len(skipped), "dropped_records": dropped}


def build_index(paths: list[str], out: str | Path, *, chunk_chars: int = 1000, overlap: int = 200,
                field: str = "text", log=print) -> dict:  # fmt: skip
    """Read, chunk, tokenize and index `paths` into the folder `out`; returns the meta.json contents."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)  # its per-step debug lines are not ours to show
    t0 = time.time()
    passages, counts = read_passages(paths, chunk_chars, overlap, field, log)
    if not passages:
        raise DataError(f"index build: no passages found in {', '.join(paths)}")
    retriever = bm25s.BM25()
    retriever.index([tokenize(p["text"]) for p in passages], show_progress=False)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    retriever.save(str(out / BM25_DIR), show_progress=False)
    with open(out / PASSAGES, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(p, ensure_ascii=False) + "\n" for p in passages)
    meta = {"format": FORMAT, "version": VERSION, **counts, "passages": len(passages), "sources": list(paths),
            "chunk_chars": chunk_chars, "overlap": overlap, "field": field, "tokenizer": TOKENIZER,
            "bm25": {"method": retriever.method, "k1": retriever.k1, "b": retriever.b},
            "build_seconds": round(time.time() - t0, 3), "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}  # fmt: skip
    (out / META).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    log(f"index: {counts['documents']} documents, {len(passages)} passages -> {out}")
    return meta


@dataclass
class Index:
    """A loaded index folder: `search(query, k)` -> the k best passages [{id, score, text}], best first."""

    path: Path
    meta: dict
    passages: list[dict]
    bm25: object

    @classmethod
    def load(cls, path: str | Path) -> Index:
        return load_index(path)

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every passage for `query` (0 where no query token occurs)."""
        ids = self.bm25.get_tokens_ids(sorted(set(tokenize(query))))
        if not ids:
            return np.zeros(len(self.passages), np.float32)
        return np.asarray(self.bm25.get_scores_from_ids(ids))

    def search(self, query: str, k: int = 4) -> list[dict]:
        scores = self.scores(query)
        order = np.argsort(-scores, kind="stable")[:k]
        return [{"id": self.passages[i]["id"], "score": round(float(scores[i]), 4), "text": self.passages[i]["text"]}
                for i in order if scores[i] > 0]  # fmt: skip


def load_index(path: str | Path) -> Index:
    """Open an index folder written by `build_index` (`jaxfin index build`)."""
    import bm25s

    path = Path(path)
    if not (path / META).is_file() or not (path / PASSAGES).is_file() or not (path / BM25_DIR).is_dir():
        raise FileNotFoundError(f"{path} is not an index folder ({META}, {PASSAGES}, {BM25_DIR}/): build one with "
                                f"`jaxfin index build DOCS... --out {path}`")  # fmt: skip
    meta = json.loads((path / META).read_text())
    if meta.get("format") != FORMAT or meta.get("version", 0) > VERSION:
        raise ValueError(f"{path / META}: not a jaxfin index this version reads (format {FORMAT} v{VERSION})")
    if meta.get("tokenizer") != TOKENIZER:
        raise ValueError(f"{path / META}: built with tokenizer '{meta.get('tokenizer')}', this jaxfin uses "
                         f"'{TOKENIZER}'; rebuild the index")  # fmt: skip
    with open(path / PASSAGES, encoding="utf-8") as f:
        passages = [json.loads(line) for line in f if line.strip()]
    retriever = bm25s.BM25.load(str(path / BM25_DIR), show_progress=False)
    if retriever.scores["num_docs"] != len(passages):
        raise ValueError(f"{path}: {PASSAGES} has {len(passages)} passages but the BM25 index "
                         f"{retriever.scores['num_docs']}; rebuild the index")  # fmt: skip
    return Index(path, meta, passages, retriever)
