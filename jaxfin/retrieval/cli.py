"""`jaxfin index build DOCS... --out DIR` and `jaxfin index search DIR QUERY -k 4`."""

from __future__ import annotations

import json
import sys


def add_index_parser(sub) -> None:
    p = sub.add_parser("index", help="build or search a BM25 passage index (retrieval for `jaxfin agents`)",
                       description="BM25 passage indexes over local documents; `jaxfin agents` uses one through "
                       "`retrieval: {index: DIR, k: 4}`.")  # fmt: skip
    isub = p.add_subparsers(dest="index_command", required=True)
    b = isub.add_parser("build", help="index documents", description="Read DOCS (files, folders walked recursively, "
                        "or globs: .jsonl/.csv/.parquet with a text field, .txt/.md whole, and whatever else the data "
                        "readers read), split them into passages with ids PATH:LINE#CHUNK, and write a bm25s index, "
                        "passages.jsonl and meta.json to --out.")  # fmt: skip
    b.add_argument("docs", nargs="+", metavar="DOCS", help="files, folders or globs")
    b.add_argument("--out", required=True, metavar="DIR", help="index folder to write")
    b.add_argument("--chunk-chars", type=int, default=1000, metavar="N", help="passage length in characters at most")
    b.add_argument("--overlap", type=int, default=200, metavar="N", help="characters shared by consecutive passages")
    b.add_argument("--field", default="text", help="the text column of .jsonl/.csv/.parquet records (default text)")
    b.set_defaults(func=_build)
    s = isub.add_parser("search", help="print the best passages for a query", description="Print the K best "
                        "passages for QUERY as JSON lines {id, score, text}, best first.")  # fmt: skip
    s.add_argument("index", metavar="DIR", help="an index folder from `jaxfin index build`")
    s.add_argument("query")
    s.add_argument("-k", type=int, default=4, help="passages to print (default 4)")
    s.set_defaults(func=_search)


def _build(args) -> int:
    from jaxfin.retrieval.index import build_index

    meta = build_index(args.docs, args.out, chunk_chars=args.chunk_chars, overlap=args.overlap, field=args.field,
                       log=lambda m: print(m, file=sys.stderr))  # fmt: skip
    print(json.dumps(meta, ensure_ascii=False))
    return 0


def _search(args) -> int:
    from jaxfin.retrieval.index import load_index

    for hit in load_index(args.index).search(args.query, args.k):
        print(json.dumps(hit, ensure_ascii=False))
    return 0
