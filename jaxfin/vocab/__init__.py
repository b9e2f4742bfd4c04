"""Vocabulary expansion (`jaxfin vocab expand`): add tokens to a tokenizer, grow the embedding and LM head."""

from jaxfin.vocab.expand import (
    expand_vocab,
    mine_chars,
    mine_tokens,
    read_corpora,
    read_corpus,
    read_token_file,
    tokens_per_char,
)

__all__ = [
    "expand_vocab",
    "mine_chars",
    "mine_tokens",
    "read_corpora",
    "read_corpus",
    "read_token_file",
    "tokens_per_char",
]
