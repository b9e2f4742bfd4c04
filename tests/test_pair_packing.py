"""Packed preference pairs: chosen and rejected of a pair in one row as segments 2k+1 / 2k+2, never split, every pair
once per epoch, overlong pairs truncated (and counted); DataStream for the preference objectives."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxfin.data import DataError
from jaxfin.data.binpack import PairView
from jaxfin.data.cache import build_cache
from jaxfin.data.loader import SourceRows
from tests.conftest import REPO, shared_data

BOS, EOS = 1, 2
PROMPT, CHOSEN, REJECTED = 100_000, 200_000, 300_000  # token id = kind + pair index: a row says what it holds


def _pairs_cache(path, sizes):
    """sizes: (prompt, chosen, rejected) lengths per pair (completions without EOS), rendered as render.py does."""
    seqs = []
    for j, (p, c, r) in enumerate(sizes):
        prompt = [BOS] + [PROMPT + j] * p
        for base, n in ((CHOSEN, c), (REJECTED, r)):
            comp = [base + j] * n + [EOS]
            seqs.append((prompt + comp, [0] * len(prompt) + [1] * len(comp)))
    return build_cache(seqs, 400_000, path, meta=lambda: {"source": {"kind": "pairs"}})


def _check_row(row, seq_len):
    """The row layout; returns [(pair, chosen tokens, rejected tokens)] in row order."""
    seg, pos, tok, mask = row["segment_ids"], row["positions"], row["tokens"], row["loss_mask"]
    used = int((seg != 0).sum())
    assert (seg[:used] != 0).all() and (seg[used:] == 0).all() and (mask[used:] == 0).all()
    n_seg = int(seg.max())
    assert n_seg % 2 == 0 and list(np.unique(seg[:used])) == list(range(1, n_seg + 1))
    assert (np.diff(seg[:used]) >= 0).all()  # segments are contiguous and in order
    out = []
    for k in range(n_seg // 2):
        sides = []
        for s, base in ((2 * k + 1, CHOSEN), (2 * k + 2, REJECTED)):
            at = seg == s
            np.testing.assert_array_equal(pos[at], np.arange(at.sum()))  # positions restart per sequence
            t, m = tok[at], mask[at]
            is_completion = (t == EOS) | ((t >= base) & (t < base + 100_000))
            np.testing.assert_array_equal(m, is_completion.astype(m.dtype))  # targets = completion (+ EOS)
            sides.append(t)
        c, r = sides
        j = int(c[(c >= CHOSEN) & (c < REJECTED)][0]) - CHOSEN
        assert ((r >= REJECTED) & (r != REJECTED + j)).sum() == 0  # the rejected side of the same pair
        assert (r == REJECTED + j).any()
        prompt_c = c[(c >= PROMPT) & (c < CHOSEN)]
        prompt_r = r[(r >= PROMPT) & (r < CHOSEN)]
        np.testing.assert_array_equal(prompt_c, prompt_r)
        assert (prompt_c == PROMPT + j).all()
        out.append((j, c, r))
    return out


@pytest.mark.parametrize("method", ["first_fit", "best_fit"])
def test_pairs_adjacent_once_per_epoch(tmp_path, method):
    rng = np.random.default_rng(0)
    seq_len, n = 64, 120
    sizes = [tuple(int(x) for x in rng.integers(1, 14, 3)) for _ in range(n)]
    src = SourceRows("p", _pairs_cache(tmp_path / "c", sizes), seq_len, seed=3, method=method, window=50)
    assert src.pairs is not None and src.pairs.truncated == 0  # kind read from the cache's meta
    start, orders = 0, []
    for epoch in range(2):
        rows = [src.row(start + k) for k in range(src.rows_in_epoch(epoch))]
        start += len(rows)
        seen = []
        for row in rows:
            for j, c, r in _check_row(row, seq_len):
                p, nc, nr = sizes[j]
                assert len(c) == 1 + p + nc + 1 and len(r) == 1 + p + nr + 1  # whole: BOS, prompt, completion, EOS
                assert c[0] == BOS and c[-1] == EOS and r[0] == BOS and r[-1] == EOS
                seen.append(j)
        assert sorted(seen) == list(range(n))  # every pair exactly once per epoch
        orders.append(seen)
        total = sum(1 + p + c + 1 + 1 + p + r + 1 for p, c, r in sizes)
        assert sum(int((r["segment_ids"] != 0).sum()) for r in rows) == total
    assert orders[0] != orders[1]  # epochs reshuffled
    assert src.packing_efficiency > 0.8


def test_overlong_pairs_truncated_and_counted(tmp_path):
    seq_len = 32
    sizes = [(3, 4, 5), (40, 3, 3), (2, 40, 2), (2, 30, 30), (20, 20, 1), (5, 5, 5)]
    view = PairView(_pairs_cache(tmp_path / "c", sizes), seq_len)
    over = [j for j, (p, c, r) in enumerate(sizes) if 2 * (1 + p) + c + r + 2 > seq_len]
    assert view.truncated == len(over) == 4
    for j, (p, c, r) in enumerate(sizes):
        tc, mc = view.side(j, 0)
        tr, mr = view.side(j, 1)
        assert len(tc) + len(tr) <= seq_len
        assert tc[0] == BOS and tr[0] == BOS  # BOS kept
        for t, m, base, n in ((tc, mc, CHOSEN, c), (tr, mr, REJECTED, r)):
            comp = t[m == 1]
            assert len(comp) >= 1 and (m[: len(t) - len(comp)] == 0).all()  # prompt, then completion
            full = [base + j] * n + [EOS]
            assert list(comp) == full[: len(comp)]  # the completion keeps its start
            prompt = t[1 : len(t) - len(comp)]
            assert (prompt == PROMPT + j).all() and len(prompt) <= p  # ... the prompt its end
            if j not in over:
                assert len(t) == 1 + p + n + 1
    # a long prompt is cut (keeping its end) to make room for both short completions, which stay whole
    assert view.keep[1, 0, 1] == view.keep[1, 1, 1] == 4  # 3 tokens + EOS
    assert view.keep[1, 0, 0] == view.keep[1, 1, 0] == (seq_len - 8) // 2  # the prompt gets the rest
    # long completions keep their start: the short one whole, the long one what is left, or half each
    assert view.keep[2, 1, 1] == 3 and view.keep[2, 0, 1] == seq_len - 2 * 3 - 3
    assert view.keep[3, 0, 1] == view.keep[3, 1, 1] == (seq_len - 2 * 3) // 2
    assert list(view.keep[4].ravel()) == [8, 14, 8, 2]  # prompt first cut to seq_len // 4, then the long answer
    src = SourceRows("p", view.cache, seq_len, seed=0, method="best_fit", window=10)
    rows = [src.row(k) for k in range(src.rows_in_epoch())]
    assert sorted(j for row in rows for j, _, _ in _check_row(row, seq_len)) == list(range(len(sizes)))


def _write_pairs(path, n, seed=0):
    rng = np.random.default_rng(seed)
    words = ["bank", "rate", "loan", "bond", "yield", "equity", "credit", "risk", "fund", "asset"]
    recs = []
    for i in range(n):

        def text(k):
            return " ".join(rng.choice(words, k))

        recs.append({"prompt": f"Q{i}: " + text(int(rng.integers(2, 6))) + "?", "chosen": text(int(rng.integers(1, 5))),
                     "rejected": text(int(rng.integers(1, 5)))})  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return recs


def _cfg(tmp_path, sources, dev, objective="dpo", seq_len=64, extra=()):
    from jaxfin.config import load_config

    return load_config(
        None,
        [f"tokenizer={REPO / 'demo_data/tokenizer.model'}", f"data.cache_dir={tmp_path / 'cache'}",
         f"data.seq_len={seq_len}", "train.batch_size=4", "train.steps=3", f"objective.type={objective}",
         f"data.sources={json.dumps(sources)}", f"data.dev={json.dumps(dev)}", *extra],
    )  # fmt: skip


def test_data_stream_dpo(tmp_path, capsys):
    from jaxfin.config.schema import MeshConfig
    from jaxfin.data.tokenizer import load_tokenizer
    from jaxfin.model.batch import BATCH_KEYS
    from jaxfin.parallel import make_mesh
    from jaxfin.train.data_stream import DataStream
    from jaxfin.train.state import batch_spec

    _write_pairs(tmp_path / "train.jsonl", 40)
    _write_pairs(tmp_path / "dev.jsonl", 6, seed=1)
    cfg = _cfg(tmp_path, [{"name": "prefs", "path": str(tmp_path / "train.jsonl"), "kind": "pairs"}],
               [{"name": "prefs_dev", "path": str(tmp_path / "dev.jsonl"), "kind": "pairs"}], seq_len=128)  # fmt: skip
    tok = load_tokenizer(cfg.tokenizer)
    data = DataStream(cfg.data, cfg.train, cfg.objective.type, tok)
    assert "40 pairs, 0 of them longer than seq_len 128" in capsys.readouterr().out
    plan = data.plan()["sources"][0]
    assert plan["pairs"] == 40 and plan["truncated_pairs"] == 0 and plan["sequences"] == 80
    batch = next(data.iterate(0, 1))
    # the fields the compiled step is built for (its abstract batch), no more (the loader's `source` is popped)
    spec = batch_spec(make_mesh(MeshConfig()), 4, 128)
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {k: (v.shape, v.dtype) for k, v in spec.items()}
    assert tuple(batch) == BATCH_KEYS and all(tuple(b) == BATCH_KEYS for b in data.dev_batches(2, 8)["prefs_dev"])
    assert (batch["segment_ids"].max(1) >= 4).any()  # rows hold several pairs
    for row in (dict(zip(batch, r)) for r in zip(*batch.values())):
        seg, mask = row["segment_ids"], row["loss_mask"]
        n_seg = int(seg.max())
        assert n_seg >= 2 and n_seg % 2 == 0
        for k in range(n_seg // 2):  # both sides start with the same prompt, then differ in their targets
            c, r = row["tokens"][seg == 2 * k + 1], row["tokens"][seg == 2 * k + 2]
            pc = int((mask[seg == 2 * k + 1] == 0).sum())
            assert pc == int((mask[seg == 2 * k + 2] == 0).sum()) and c[0] == tok.bos_id
            np.testing.assert_array_equal(c[:pc], r[:pc])
            assert c[-1] == tok.eos_id and r[-1] == tok.eos_id
    dev = data.dev_batches(2, 8)["prefs_dev"]
    assert sum(int(b["segment_ids"].max(1).sum()) for b in dev) // 2 == 6  # all 6 dev pairs, 2 segments each


def test_pairs_refused_or_required(tmp_path):
    from jaxfin.train.data_stream import DataStream

    _write_pairs(tmp_path / "p.jsonl", 4)
    (tmp_path / "t.jsonl").write_text(json.dumps({"text": "bank loan rate"}) + "\n")
    pairs = {"name": "prefs", "path": str(tmp_path / "p.jsonl"), "kind": "pairs"}
    text = {"name": "plain", "path": str(tmp_path / "t.jsonl")}

    def stream(cfg):
        return DataStream(cfg.data, cfg.train, cfg.objective.type, None)

    with pytest.raises(DataError, match=r"objective.type=dpo trains on preference pairs only.*data.sources: plain"):
        stream(_cfg(tmp_path, [pairs, text], []))
    with pytest.raises(DataError, match=r"objective.type=reward .*data.dev: plain \(kind text\)"):
        stream(_cfg(tmp_path, [pairs], [text], objective="reward"))
    with pytest.raises(DataError, match="next-token trainer cannot use"):
        stream(_cfg(tmp_path, [text], [pairs], objective="next_token"))


def test_real_preference_pairs(tmp_path, capsys):
    """HH-RLHF harmless-base test split: 2,303 usable pairs, each once per epoch, the completions exactly the
    tokenized responses (cut only where the pair is longer than a row)."""
    from jaxfin.data.tokenizer import load_tokenizer
    from jaxfin.train.data_stream import DataStream

    path = shared_data() / "preferences/hh_rlhf_harmless_base_test.jsonl"
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    good = [
        r for r in recs if r["prompt"] is not None and r["chosen_response"].strip() and r["rejected_response"].strip()
    ]
    seq_len = 512
    src = {"name": "hh", "path": str(path), "kind": "pairs",
           "fields": {"chosen": "chosen_response", "rejected": "rejected_response"}}  # fmt: skip
    cfg = _cfg(tmp_path, [src], [], seq_len=seq_len, extra=["data.filters.exact_dedup=false"])
    tok = load_tokenizer(cfg.tokenizer)
    data = DataStream(cfg.data, cfg.train, cfg.objective.type, tok)
    out = capsys.readouterr().out
    rows_src = data.sources[0]
    view = rows_src.pairs
    assert len(view) == len(good) == 2303
    # independent count of overlong pairs: tokenized lengths of the two rendered sequences
    enc = tok.encode_batch([r["prompt"] for r in good] + [r["chosen_response"] for r in good]
                           + [r["rejected_response"] for r in good])  # fmt: skip
    n = len(good)
    extra = (tok.bos_id is not None) + (tok.eos_id is not None)
    over = [j for j in range(n) if 2 * len(enc[j]) + len(enc[n + j]) + len(enc[2 * n + j]) + 2 * extra > seq_len]
    assert view.truncated == len(over) > 0 and f"{len(over):,} of them longer than seq_len {seq_len}" in out
    seen = []
    for k in range(rows_src.rows_in_epoch()):
        row = rows_src.row(k)
        seg, mask, tokens = row["segment_ids"], row["loss_mask"], row["tokens"]
        for s in range(1, int(seg.max()) + 1, 2):
            comp_c = tokens[(seg == s) & (mask == 1)]
            comp_r = tokens[(seg == s + 1) & (mask == 1)]
            key = (tuple(comp_c[:8]), tuple(comp_r[:8]))
            seen.append(key)
    expect = [(tuple((enc[n + j] + [tok.eos_id])[:8]), tuple((enc[2 * n + j] + [tok.eos_id])[:8])) for j in range(n)]
    assert sorted(seen) == sorted(expect)
    j = next(j for j in range(n) if j not in over)  # a whole pair: both sides exactly as rendered
    t, m = view.side(j, 0)
    assert list(t) == [tok.bos_id, *enc[j], *enc[n + j], tok.eos_id] and m.sum() == len(enc[n + j]) + 1
