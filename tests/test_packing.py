"""Packing documents into the one batch shape, the checkpointable batch iterator, and JSONL reading errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxfin.data.packing import FIELDS, BatchIterator, DataError, pack, read_documents

SEQ = 8


def _pieces(rows):
    """Walk rows in order and cut them into (tokens, positions) pieces by segment id; padding is dropped."""
    pieces = []
    for r in range(len(rows["tokens"])):
        seg = rows["segment_ids"][r]
        for s in [s for s in dict.fromkeys(seg.tolist()) if s != 0]:
            at = np.flatnonzero(seg == s)
            assert np.array_equal(at, np.arange(at[0], at[-1] + 1)), "a segment must be contiguous"
            pieces.append((rows["tokens"][r, at].tolist(), rows["positions"][r, at].tolist()))
    return pieces


def _check_invariants(docs, rows, seq_len):
    assert set(rows) == set(FIELDS)
    n = len(rows["tokens"])
    for k in FIELDS:
        assert rows[k].shape == (n, seq_len) and rows[k].dtype == np.int32, k
    seg = rows["segment_ids"]
    for r in range(n):
        nz = seg[r][seg[r] != 0]
        n_real = len(nz)
        assert n_real >= 1
        assert (seg[r, n_real:] == 0).all(), "0 only on trailing padding"
        assert nz[0] == 1 and np.all(np.diff(nz) >= 0) and np.all(np.diff(nz) <= 1), "segments count up from 1"
        assert (rows["tokens"][r, n_real:] == 0).all() and (rows["positions"][r, n_real:] == 0).all()
    np.testing.assert_array_equal(rows["loss_mask"], (seg != 0).astype(np.int32))
    pieces = _pieces(rows)
    for toks, positions in pieces:
        assert positions == list(range(len(toks))), "positions restart at 0 in every piece"
    # every token exactly once, in order, and no piece mixes two documents
    doc_iter = iter(docs)
    current, rest = [], []
    for toks, _ in pieces:
        if not rest:
            current = next(doc_iter)
            while not current:  # empty documents produce nothing
                current = next(doc_iter)
            rest = list(current)
        assert toks == rest[: len(toks)], "a piece is the next run of tokens of one document"
        rest = rest[len(toks) :]
    assert not rest and all(not d for d in doc_iter), "every document is fully packed"


def test_pack_small_example_exact():
    docs = [list(range(1, 6)), [6, 7, 8], list(range(9, 21)), [21], [22, 23]]
    rows = pack(docs, SEQ)
    _check_invariants(docs, rows, SEQ)
    # worked out by hand: greedy, in order; the 12-token doc starts a new row (no room) and is split 8 + 4
    np.testing.assert_array_equal(
        rows["tokens"],
        [[1, 2, 3, 4, 5, 6, 7, 8], [9, 10, 11, 12, 13, 14, 15, 16], [17, 18, 19, 20, 21, 22, 23, 0]],
    )
    np.testing.assert_array_equal(
        rows["segment_ids"], [[1, 1, 1, 1, 1, 2, 2, 2], [1, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 2, 3, 3, 0]]
    )
    np.testing.assert_array_equal(
        rows["positions"], [[0, 1, 2, 3, 4, 0, 1, 2], [0, 1, 2, 3, 4, 5, 6, 7], [0, 1, 2, 3, 0, 0, 1, 0]]
    )
    np.testing.assert_array_equal(rows["loss_mask"], [[1] * 8, [1] * 8, [1] * 7 + [0]])


def test_long_document_is_split_with_each_piece_at_position_zero():
    doc = list(range(100, 120))  # 20 tokens, seq_len 8 -> 8 + 8 + 4
    rows = pack([[1, 2, 3], doc], SEQ)
    _check_invariants([[1, 2, 3], doc], rows, SEQ)
    pieces = [p for p in _pieces(rows) if p[0][0] >= 100]
    assert [len(t) for t, _ in pieces] == [5, 8, 7]
    assert all(pos[0] == 0 for _, pos in pieces)


def test_room_of_one_token_starts_a_new_row():
    docs = [list(range(1, 8)), [8, 9, 10]]  # 7 tokens leave room 1: a 1-token piece would have no target
    rows = pack(docs, SEQ)
    _check_invariants(docs, rows, SEQ)
    assert rows["tokens"].shape == (2, SEQ)
    assert rows["tokens"][1, :3].tolist() == [8, 9, 10]


def test_pack_random_documents_invariants():
    rng = np.random.default_rng(0)
    docs = [rng.integers(1, 1000, rng.integers(0, 30)).tolist() for _ in range(40)]
    for seq_len in (2, 5, 8, 16):
        _check_invariants(docs, pack(docs, seq_len), seq_len)


def test_pack_nothing_is_an_error():
    with pytest.raises(DataError):
        pack([], SEQ)
    with pytest.raises(DataError):
        pack([[], []], SEQ)


# ---------------------------------------------------------------- BatchIterator


def _rows(n, seq=4):
    """Rows whose every token is the row number, so batches say which rows they hold."""
    tokens = np.repeat(np.arange(n, dtype=np.int32)[:, None], seq, axis=1)
    ones = np.ones_like(tokens)
    return {"tokens": tokens, "segment_ids": ones, "positions": np.zeros_like(tokens), "loss_mask": ones}


def _ids(batch):
    return batch["tokens"][:, 0].tolist()


def test_first_epoch_visits_every_row_once():
    it = BatchIterator(_rows(12), batch_size=4, seed=3)
    epoch0 = [i for _ in range(3) for i in _ids(next(it))]
    assert sorted(epoch0) == list(range(12))
    epoch1 = [i for _ in range(3) for i in _ids(next(it))]
    assert sorted(epoch1) == list(range(12))
    assert epoch0 != epoch1  # reshuffled per epoch
    assert epoch0 != list(range(12))  # shuffled at all
    b = next(BatchIterator(_rows(12), batch_size=4, seed=3))
    assert set(b) == set(FIELDS) and b["tokens"].shape == (4, 4)
    for k in FIELDS:  # fields of a row stay together
        np.testing.assert_array_equal(b[k], _rows(12)[k][b["tokens"][:, 0]])


def test_ragged_tail_is_dropped_never_repeated():
    it = BatchIterator(_rows(10), batch_size=3, seed=0)
    epoch0 = [i for _ in range(3) for i in _ids(next(it))]
    assert len(set(epoch0)) == 9


def test_same_seed_same_batches_other_seed_other_batches():
    a = BatchIterator(_rows(10), batch_size=3, seed=7)
    b = BatchIterator(_rows(10), batch_size=3, seed=7)
    c = BatchIterator(_rows(10), batch_size=3, seed=8)
    seq_a = [_ids(next(a)) for _ in range(7)]
    assert seq_a == [_ids(next(b)) for _ in range(7)]
    assert seq_a != [_ids(next(c)) for _ in range(7)]


@pytest.mark.parametrize("k", [0, 2, 3, 5])
def test_state_restore_resumes_exactly(k):
    rows = _rows(10)
    it = BatchIterator(rows, batch_size=3, seed=1)
    for _ in range(k):
        next(it)
    state = json.loads(json.dumps(it.state()))  # checkpoints store it as JSON
    expected = [_ids(next(it)) for _ in range(5)]  # crosses at least one epoch boundary (3 batches/epoch)
    fresh = BatchIterator(rows, batch_size=3, seed=1)
    fresh.restore(state)
    assert [_ids(next(fresh)) for _ in range(5)] == expected


def test_restore_refuses_changed_data():
    it = BatchIterator(_rows(10), batch_size=3, seed=1)
    next(it)
    state = it.state()
    with pytest.raises(DataError, match="data changed"):
        BatchIterator(_rows(10), batch_size=3, seed=2).restore(state)
    with pytest.raises(DataError, match="data changed"):
        BatchIterator(_rows(11), batch_size=3, seed=1).restore(state)


def test_fewer_rows_than_a_batch_is_an_error():
    with pytest.raises(DataError):
        BatchIterator(_rows(2), batch_size=3, seed=0)


# ---------------------------------------------------------------- read_documents


def test_read_documents_jsonl_and_txt(tmp_path):
    a = tmp_path / "a.jsonl"
    a.write_text('{"text": "one"}\n\n{"text": "two", "id": 5}\n')
    t = tmp_path / "b.txt"
    t.write_text("a whole\nfile\n")
    assert read_documents([str(a), str(t)]) == ["one", "two", "a whole\nfile\n"]
    c = tmp_path / "c.jsonl"
    c.write_text('{"body": "x"}\n')
    assert read_documents([str(c)], text_field="body") == ["x"]


def test_bad_json_line_reports_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"text": "ok"}\n\n{"text": oops}\n{"text": "later"}\n')  # line 2 is blank, line 3 is bad
    with pytest.raises(DataError) as ei:
        read_documents([str(p)])
    assert "bad.jsonl:3" in str(ei.value)


@pytest.mark.parametrize("line", ['{"txt": "a"}', '{"text": 3}', '["text"]'])
def test_missing_field_is_named(tmp_path, line):
    p = tmp_path / "f.jsonl"
    p.write_text('{"body": "ok"}\n' + line + "\n")
    with pytest.raises(DataError) as ei:
        read_documents([str(p)], text_field="body")
    msg = str(ei.value)
    assert "f.jsonl:2" in msg and "'body'" in msg


def test_missing_file_is_reported(tmp_path):
    missing = tmp_path / "nowhere.jsonl"
    with pytest.raises(DataError) as ei:
        read_documents([str(missing)])
    assert "nowhere.jsonl" in str(ei.value) and "not found" in str(ei.value)


def test_pack_refuses_rows_too_short_for_a_target():
    with pytest.raises(DataError, match="seq_len"):
        pack([[1, 2, 3]], 1)


def test_read_documents_bom_and_unsupported_suffix(tmp_path):
    p = tmp_path / "bom.jsonl"
    p.write_bytes(b'\xef\xbb\xbf{"text": "a"}\n{"text": "b"}\n')
    assert read_documents([str(p)]) == ["a", "b"]
    gz = tmp_path / "x.jsonl.gz"
    gz.write_bytes(b"\x1f\x8b\x08\x00")
    with pytest.raises(DataError, match=r"x\.jsonl\.gz.*unsupported"):
        read_documents([str(gz)])
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(b'{"text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"latin1\.jsonl: not UTF-8"):
        read_documents([str(bad)])
