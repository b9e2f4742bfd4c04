"""`jaxfin vocab expand`: add tokens to a model's tokenizer and grow its embedding and LM head."""

from __future__ import annotations

import argparse
import json

EXPAND_HELP = """\
Add tokens to the Hugging Face tokenizer of MODEL_DIR (an HF dir, or a jaxfin checkpoint with its tokenizer) and
write the expanded model and tokenizer as an HF dir to OUT_DIR (new or empty).

Tokens, one source:
  --tokens FILE               one token per line, UTF-8; blank lines ignored
  --mine-chars CORPUS... --num N
                              the N most frequent CJK characters of the corpora (ideographs, kana, hangul; ties
                              by code point) that are not already single tokens of the old tokenizer (all of them
                              when there are fewer); the report counts those that already were
  --mine CORPUS --num N       train a SentencePiece BPE model on CORPUS (character coverage 0.9995), tokenize
                              CORPUS with it and add its N most frequent pieces that are not already single
                              tokens of the old tokenizer (the leading word marker "▁" is removed)
A corpus is a .jsonl file (--field of each record) or a text file (one text a line); --mine-chars takes several,
so give MODEL_DIR OUT_DIR before it. Tokens that are already tokens, and duplicates, are skipped and counted. They
are added as normal (non-special) tokens. The embedding (and the LM head, unless tied) grows to the new tokenizer
size, rounded up to --pad-to-multiple; old rows are unchanged, so text of old tokens gives the same logits as before.

New rows (--init):
  mean        the mean of the old rows of the pieces the old tokenizer splits the token into (default)
  mean_noise  the mean of all old rows + N(0, 1) * per-dimension std of the old rows * --noise-scale (seeded)
Padding rows are the mean of all old rows.

Tokens per character on --report-corpus (default: the mined corpora) before and after, and the relative
reduction, are printed and, with all counts, written to OUT_DIR/vocab_expand.json.
"""


def run_expand(args) -> int:
    from jaxfin.vocab.expand import expand_vocab, read_token_file

    tokens = read_token_file(args.tokens) if args.tokens else None
    report = expand_vocab(
        args.model_dir,
        args.out_dir,
        tokens=tokens,
        mine=args.mine,
        mine_chars=args.mine_chars,
        num=args.num,
        init=args.init,
        seed=args.seed,
        noise_scale=args.noise_scale,
        report_corpus=args.report_corpus,
        field=args.field,
        pad_to_multiple=args.pad_to_multiple,
    )
    keys = (
        "added",
        "skipped",
        "chars_already_tokens",
        "tokenizer_size",
        "vocab_size",
        "tokens_per_char",
        "tokens_per_char_reduction",
    )
    summary = {k: report[k] for k in keys if k in report}
    print(json.dumps(summary, ensure_ascii=False))
    return 0


def add_vocab_parser(sub) -> argparse.ArgumentParser:
    """Add `vocab` with the subcommand `expand`."""
    vocab = sub.add_parser("vocab", help="vocabulary expansion", description="Vocabulary commands.")
    vsub = vocab.add_subparsers(dest="vocab_command", required=True)
    p = vsub.add_parser(
        "expand",
        help="add tokens (a list, or mined from a corpus) to a model's tokenizer; grow embeddings and LM head",
        description=EXPAND_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model_dir", metavar="MODEL_DIR", help="HF model dir (or jaxfin checkpoint) with its tokenizer")
    p.add_argument("out_dir", metavar="OUT_DIR", help="where the expanded HF model and tokenizer go (new or empty)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--tokens", metavar="FILE", help="tokens to add, one per line (UTF-8)")
    src.add_argument("--mine", metavar="CORPUS", help="mine BPE pieces from this .txt or .jsonl corpus")
    src.add_argument("--mine-chars", nargs="+", metavar="CORPUS", help="add the most frequent new CJK characters of "
                     "these corpora")  # fmt: skip
    p.add_argument("--num", type=int, help="with --mine or --mine-chars: how many tokens to add")
    p.add_argument("--init", choices=["mean", "mean_noise"], default="mean", help="new row initialisation")
    p.add_argument("--noise-scale", type=float, default=0.02, help="mean_noise: noise std as a fraction of row std")
    p.add_argument("--seed", type=int, default=0, help="seed of the mean_noise noise")
    p.add_argument("--report-corpus", metavar="FILE", help="corpus for tokens per character (default: the mined one)")
    p.add_argument("--field", default="text", help="text field of .jsonl corpora (default: text)")
    p.add_argument("--pad-to-multiple", type=int, default=1, metavar="N", help="round the new vocab size up to N")
    p.set_defaults(func=run_expand)
    return p
