"""Row planning (first-fit / best-fit) and gathering packed rows from a token cache."""

from __future__ import annotations

import math

import numpy as np
import pytest

from jaxfin.data.binpack import efficiency, gather_row, plan_rows, split_pieces
from jaxfin.data.cache import TokenCache, build_cache
from jaxfin.model.batch import BATCH_DTYPE, BATCH_KEYS


class _WordTokenizer:
    """Stand-in tokenizer: one id per whitespace word (the cache must not care which tokenizer it is)."""

    vocab_size, bos_id, eos_id = 1000, 1, 2

    def encode_batch(self, texts):
        return [[3 + (hash(w) % 900) for w in t.split()] for t in texts]


@pytest.mark.parametrize("method", ["first_fit", "best_fit"])
def test_every_token_once_and_rows_fit(method):
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 300, 500)
    seq_len = 128
    plans = list(plan_rows(split_pieces(lengths, seq_len), seq_len, method, window=64))
    assert all(sum(b - a for _, a, b in p) <= seq_len for p in plans)
    covered = {d: [] for d in range(len(lengths))}
    for p in plans:
        for d, a, b in p:
            covered[d].append((a, b))
    for d, n in enumerate(lengths):
        spans = sorted(covered[d])
        # pieces tile [0, n) in row-sized chunks, except a dropped 1-token tail (it has no target)
        expect = [(a, min(a + seq_len, n)) for a in range(0, n, seq_len) if min(a + seq_len, n) - a >= 2]
        assert spans == expect, d


@pytest.mark.parametrize("method", ["first_fit", "best_fit"])
def test_near_optimal_on_instances_with_known_optimum(method):
    """Cut K full rows into random pieces: the optimum is K rows. Decreasing first/best fit use at most
    11/9 * OPT + 6/9 bins (Dosa 2007)."""
    rng = np.random.default_rng(1)
    seq_len, k = 256, 60
    lengths = []
    for _ in range(k):
        cuts = np.sort(rng.choice(np.arange(2, seq_len - 1), 3, replace=False))
        parts = np.diff(np.concatenate([[0], cuts, [seq_len]]))
        lengths += [int(x) for x in parts if x >= 2]
    total = sum(lengths)
    opt = math.ceil(total / seq_len)
    plans = list(plan_rows(split_pieces(rng.permutation(lengths), seq_len), seq_len, method, window=10_000))
    assert len(plans) <= 11 / 9 * k + 6 / 9
    assert len(plans) >= opt
    assert efficiency(plans, seq_len) == pytest.approx(total / (len(plans) * seq_len))


def test_bigger_window_packs_at_least_as_tight_on_average():
    rng = np.random.default_rng(2)
    lengths = rng.integers(20, 200, 2000)
    eff = {w: efficiency(list(plan_rows(split_pieces(lengths, 256), 256, "best_fit", w)), 256) for w in (1, 1000)}
    assert eff[1000] > eff[1] + 0.05  # window 1 = one piece per row: no packing at all


def test_gather_rows_from_cache(tmp_path):
    texts = [" ".join(f"w{i}_{j}" for j in range(n)) for i, n in enumerate([5, 40, 3, 17, 90, 1, 12])]
    tok = _WordTokenizer()
    seqs = [([1, *ids, 2], None) for ids in tok.encode_batch(texts)]
    cache = build_cache(seqs, tok.vocab_size, tmp_path / "c", meta=lambda: {"test": 1})
    again = TokenCache(tmp_path / "c")
    assert len(again) == len(texts) and again.meta["test"] == 1
    for i, t in enumerate(texts):  # oracle: encode each text alone
        assert again.doc(i).tolist() == [1, *tok.encode_batch([t])[0], 2]
    seq_len = 32
    plans = list(plan_rows(split_pieces(cache.doc_lengths(), seq_len), seq_len, "best_fit"))
    for plan in plans:
        row = gather_row(plan, cache, seq_len)
        assert tuple(row) == BATCH_KEYS == ("tokens", "segment_ids", "positions", "loss_mask")
        assert all(v.dtype == BATCH_DTYPE and v.shape == (seq_len,) for v in row.values())
        used = sum(b - a for _, a, b in plan)
        assert (row["segment_ids"][used:] == 0).all() and (row["segment_ids"][:used] > 0).all()
        assert (row["loss_mask"] == (row["segment_ids"] != 0)).all()
        for s, (d, a, b) in enumerate(plan, 1):
            idx = row["segment_ids"] == s
            assert row["tokens"][idx].tolist() == cache.doc(d)[a:b].tolist()
            assert row["positions"][idx].tolist() == list(range(b - a))
