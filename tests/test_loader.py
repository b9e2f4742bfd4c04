"""The loader: a pure function of (seed, global row), mixtures by tokens or examples, curricula, processes."""

from __future__ import annotations

import numpy as np
import pytest

from jaxfin.data.cache import build_cache
from jaxfin.data.loader import Loader, Mixture, SourceRows

SEQ = 64


class _WordTokenizer:
    vocab_size, bos_id, eos_id = 50_000, 1, 2

    def encode_batch(self, texts):
        return [[3 + int(w[1:]) for w in t.split()] for t in texts]


def _source(tmp_path, name: str, n_docs: int, words: tuple[int, int], seed: int = 0) -> SourceRows:
    """Documents whose token ids say which source and document they are (id = 3 + 1000*src + doc)."""
    rng = np.random.default_rng(seed)
    base = 1000 * (1 + ["a", "b", "c"].index(name))
    texts = [" ".join([f"w{base + d}"] * int(rng.integers(*words))) for d in range(n_docs)]
    tok = _WordTokenizer()
    cache = build_cache([([1, *ids, 2], None) for ids in tok.encode_batch(texts)], tok.vocab_size, tmp_path / name,
                        meta=dict)  # fmt: skip
    return SourceRows(name, cache, SEQ, seed=0, method="best_fit", window=100)


def _doc_ids(row) -> list[int]:
    toks = row["tokens"][row["segment_ids"] != 0]
    return sorted({int(t) - 3 for t in toks if t > 2})


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("src")
    return [_source(tmp, "a", 300, (5, 60)), _source(tmp, "b", 300, (100, 200), seed=1)]  # a: docs fit a row


def test_a_source_stream_covers_each_epoch_exactly(sources):
    a = sources[0]
    tokens_per_epoch = int(a.cache.doc_lengths().sum())
    start = 0
    for epoch in range(2):  # epochs are planned separately, so their row counts may differ a little
        n = a.rows_in_epoch(epoch)
        rows = [a.row(start + k) for k in range(n)]
        start += n
        assert sum(int((r["segment_ids"] != 0).sum()) for r in rows) == tokens_per_epoch
        seen = sorted(d for r in rows for d in _doc_ids(r))
        assert seen == sorted(1000 + d for d in range(300))  # every document once (none longer than a row)
    assert _doc_ids(a.row(0)) != _doc_ids(a.row(a.rows_in_epoch(0)))  # epochs are reshuffled


def test_mixture_by_tokens_follows_weights(sources):
    mix = Mixture(sources, [(0, {"a": 3, "b": 1})], "tokens", seed=0)
    src = np.array([mix.locate(i)[0] for i in range(8000)])
    share = (src == 0).mean()
    assert abs(share - 0.75) < 4 * np.sqrt(0.75 * 0.25 / 8000)  # binomial: 4 standard deviations
    # each source's rows are taken in order, none skipped or repeated
    for s in (0, 1):
        ks = [mix.locate(i)[1] for i in np.flatnonzero(src == s)]
        assert ks == list(range(len(ks)))


def test_mixture_by_examples_balances_documents(sources):
    """By examples, the expected number of *documents* per source follows the weights even though source b's
    documents are ~5x longer (so a row of b holds far fewer of them)."""
    mix = Mixture(sources, [(0, {"a": 1, "b": 1})], "examples", seed=0)
    docs = np.zeros(2)
    for i in range(3000):
        s, k = mix.locate(i)
        docs[s] += len(_doc_ids(sources[s].row(k)))
    assert abs(docs[0] / docs.sum() - 0.5) < 0.05
    by_tokens = Mixture(sources, [(0, {"a": 1, "b": 1})], "tokens", seed=0)
    src = np.array([by_tokens.locate(i)[0] for i in range(3000)])
    assert abs((src == 0).mean() - 0.5) < 0.05  # ... whereas by tokens the rows are split evenly


def test_curriculum_stages_switch_at_their_token_budget(sources):
    budget = 100 * SEQ  # 100 rows
    mix = Mixture(sources, [(budget, {"a": 1}), (0, {"b": 1})], "tokens", seed=3)
    src = [mix.locate(i)[0] for i in range(300)]
    assert src[:100] == [0] * 100 and src[100:] == [1] * 200
    assert mix.stage_of(np.array([99, 100]))[0] == 0 and mix.stage_of(np.array([99, 100]))[1] == 1
    plan = mix.planned_intensity(np.array([1.0, 0.0]), total_rows=300)  # a is domain, b general
    assert [round(p["cumulative"], 6) for p in plan] == [1.0, round(100 / 300, 6)]


def test_rising_domain_share_intensity_formula(sources):
    mix = Mixture(sources, [(100 * SEQ, {"a": 1, "b": 1}), (0, {"a": 3, "b": 1})], "tokens", seed=0)
    plan = mix.planned_intensity(np.array([1.0, 0.0]), total_rows=200)
    assert plan[0]["domain_share"] == pytest.approx(0.5) and plan[1]["domain_share"] == pytest.approx(0.75)
    assert plan[1]["cumulative"] == pytest.approx((0.5 * 100 + 0.75 * 100) / 200)


def test_processes_slice_the_same_global_batch(sources):
    mix = Mixture(sources, [(0, {"a": 1, "b": 1})], "tokens", seed=0)
    one = Loader(mix, 8)
    two = [Loader(mix, 8, (4 * p, 4 * p + 4)) for p in range(2)]
    four = [Loader(mix, 8, (2 * p, 2 * p + 2)) for p in range(4)]
    for step in (0, 1, 7):
        ref = one.batch(step)
        for split in (two, four):
            parts = [ld.batch(step) for ld in split]
            for key in ref:
                assert np.array_equal(np.concatenate([p[key] for p in parts]), ref[key])


def test_grain_iteration_equals_direct_batches_from_any_start(sources):
    mix = Mixture(sources, [(0, {"a": 2, "b": 1})], "tokens", seed=5)
    loader = Loader(mix, 4)
    got = list(loader.iterate(3, 9, threads=2, prefetch=2))
    assert len(got) == 6
    for step, batch in zip(range(3, 9), got):
        ref = loader.batch(step)
        assert all(np.array_equal(batch[k], ref[k]) for k in ref)


def test_bad_stage_weights_are_refused(sources):
    with pytest.raises(ValueError, match="unknown sources"):
        Mixture(sources, [(0, {"a": 1, "zz": 1})], "tokens", seed=0)
    with pytest.raises(ValueError, match="all be zero"):
        Mixture(sources, [(0, {"a": 0})], "tokens", seed=0)
