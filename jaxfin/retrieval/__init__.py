"""Retrieval: a BM25 passage index over local documents (`jaxfin index build / search`), whose passages the role
agents (jaxfin/eval/agents.py) put into their prompts with their source ids. See index.py for the folder layout,
the source ids and the tokenizer (words + CJK character bigrams)."""

from jaxfin.retrieval.index import Index, build_index, chunk_spans, load_index, read_passages, tokenize

__all__ = ["Index", "build_index", "chunk_spans", "load_index", "read_passages", "tokenize"]
