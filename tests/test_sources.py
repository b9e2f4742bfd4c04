"""Sources: every format read from the shared real data, and corrupted copies of it whose every bad record must be
counted under its reason at its exact file:line while the good records still come through in order.

Expected values come from independent readers (plain json / pandas / byte counting), never from jaxfin.data.sources.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import shared_data

from jaxfin.config.schema import SourceConfig
from jaxfin.data import DataError
from jaxfin.data.sources import SourceReport, check_bad_fraction, read_source, read_sources

BEIGE = "finance_corpus_en/beige_book_2014_2020.jsonl"


@pytest.fixture(scope="module")
def data():
    return shared_data()


def read(path, max_chars=10_000_000, **kw):
    report = SourceReport(kw.pop("name", "src"))
    docs = list(read_source(SourceConfig(path=str(path), **kw), report, max_chars=max_chars))
    return docs, report


def json_lines(path):
    """(1-based line number, parsed object) of every non-blank line: the independent oracle for JSONL."""
    lines = path.read_bytes().split(b"\n")
    return [(n, json.loads(raw)) for n, raw in enumerate(lines, 1) if raw.strip()]


def locs(report, reason):
    return [loc for loc, _ in report.examples.get(reason, [])]


# ---------------------------------------------------------------- real files, every format


def test_jsonl_text_matches_plain_json(data):
    path = data / BEIGE
    expected = json_lines(path)
    docs, report = read(path)
    assert len(expected) == 676
    assert [d.data["text"] for d in docs] == [r["text"] for _, r in expected]
    assert [d.loc for d in docs] == [f"{path}:{n}" for n, _ in expected]
    assert (report.read, report.kept, report.bad_fraction()) == (676, 676, 0.0)
    assert report.bytes_read == path.stat().st_size
    assert all(d.kind == "text" and d.source == "src" and d.text_for_filters() == d.data["text"] for d in docs)


@pytest.mark.parametrize("folder, n_files", [("finance_corpus_en", 3), ("general_corpus_en", 2)])
def test_glob_reads_every_file_in_sorted_order(data, folder, n_files):
    files = sorted((data / folder).glob("*.jsonl"))
    expected = [(f"{f}:{n}", r["text"]) for f in files for n, r in json_lines(f)]
    it, reports = read_sources([SourceConfig(path=str(data / folder / "*.jsonl"))])
    docs = list(it)
    assert len(files) == n_files
    assert [(d.loc, d.data["text"]) for d in docs] == expected
    assert reports[folder].kept == len(expected)  # the default name is the folder before the wildcard


def test_txt_folder_one_document_per_file(data):
    folder = data / "fomc_minutes_text/minutes"
    files = sorted(folder.glob("*.txt"))
    docs, report = read(folder)
    assert len(files) == 46
    assert [d.loc for d in docs] == [f"{f}:1" for f in files]
    assert [d.data["text"] for d in docs] == [f.read_text(encoding="utf-8") for f in files]
    assert report.kept == 46


def test_glob_of_txt_files(data):
    pattern = data / "fomc_minutes_text/minutes/2019*.txt"
    docs, _ = read(pattern)
    assert [d.loc.rsplit("/", 1)[1] for d in docs] == sorted(p.name + ":1" for p in pattern.parent.glob("2019*.txt"))
    assert len(docs) == 8


def test_single_txt_file(data):
    path = data / "general_text_tinyshakespeare/tinyshakespeare.txt"
    (doc,), report = read(path)
    assert doc.data["text"] == path.read_text(encoding="utf-8")
    assert doc.loc == f"{path}:1" and report.bytes_read == path.stat().st_size


def test_csv_with_field_mapping(data):
    path = data / "financial_phrasebank/sentences_allagree.csv"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    n_lines = path.read_bytes().count(b"\n")
    docs, report = read(path, fields={"text": "sentence"})
    assert n_lines == len(frame) + 1 == 2265  # no multi-line records: record i sits on line i + 2
    assert [d.data["text"] for d in docs] == frame["sentence"].tolist()
    assert [d.loc for d in docs] == [f"{path}:{i + 2}" for i in range(len(frame))]
    assert report.kept == 2264


def test_instructions_as_chat(data):
    path = data / "instructions/gsm8k_test.jsonl"
    expected = json_lines(path)
    docs, report = read(path, kind="chat")
    assert report.kept == len(expected) == 1319
    for doc, (n, rec) in zip(docs, expected):
        assert doc.loc == f"{path}:{n}"
        assert doc.data["messages"] == [
            {"role": "user", "content": rec["instruction"]},
            {"role": "assistant", "content": rec["output"]},
        ]
        assert doc.text_for_filters() == rec["instruction"] + "\n" + rec["output"]


def test_chat_input_system_and_mapping(data, tmp_path):
    recs = [r for _, r in json_lines(data / "instructions/finlora_formula_test.jsonl")[:3]]
    path = tmp_path / "qa.jsonl"
    rows = [{"q": r["instruction"], "ctx": "Context.", "a": r["output"], "sys": "Be brief."} for r in recs]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    docs, _ = read(path, kind="chat", fields={"instruction": "q", "input": "ctx", "output": "a", "system": "sys"})
    assert docs[1].data["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": recs[1]["instruction"] + "\n\nContext."},
        {"role": "assistant", "content": recs[1]["output"]},
    ]


def test_preferences_as_pairs(data):
    path = data / "preferences/hh_rlhf_harmless_base_test.jsonl"
    expected = json_lines(path)
    null_lines = [n for n, r in expected if r["prompt"] is None]
    empty_lines = [
        n
        for n, r in expected
        if r["prompt"] is not None and not (r["chosen_response"].strip() and r["rejected_response"].strip())
    ]
    docs, report = read(path, kind="pairs")
    assert len(null_lines) == 5 and len(empty_lines) == 4
    assert report.read == len(expected) == 2312
    assert report.dropped == {"missing_field": 5, "empty": 4}
    assert locs(report, "missing_field") == [f"{path}:{n}" for n in null_lines]
    assert locs(report, "empty") == [f"{path}:{n}" for n in empty_lines]
    good = [(n, r) for n, r in expected if n not in null_lines + empty_lines]
    assert [d.loc for d in docs] == [f"{path}:{n}" for n, _ in good]
    for doc, (_, rec) in zip(docs, good):
        assert doc.data["prompt"] == rec["prompt"]
        assert doc.text_for_filters() == rec["chosen"]  # the prompt is cut off the answers, not lost
        assert doc.data["chosen"].strip() == rec["chosen_response"]
        assert doc.data["rejected"].strip() == rec["rejected_response"]


def test_prompt_completion_records_with_mapped_fields_and_bad_lines(data, tmp_path):
    """kind completion: {prompt, completion} (TRL's prompt-completion format), columns mapped with `fields`; a
    missing or non-string field and an empty completion are counted at their lines, the rest kept as they are."""
    recs = [r for _, r in json_lines(data / "instructions/finlora_formula_test.jsonl")[:4]]
    rows = [{"q": r["instruction"], "a": r["output"]} for r in recs]
    rows[1] = {"q": "Only a question."}
    rows[2] = {"q": "Q?", "a": 3.5}
    rows.append({"q": "Q?", "a": "  "})
    path = tmp_path / "pc.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    docs, report = read(path, kind="completion", fields={"prompt": "q", "completion": "a"})
    assert report.dropped == {"missing_field": 1, "wrong_type": 1, "empty": 1}
    assert locs(report, "missing_field") == [f"{path}:2"] and locs(report, "empty") == [f"{path}:5"]
    assert [d.loc for d in docs] == [f"{path}:1", f"{path}:4"]
    assert docs[1].data == {"prompt": recs[3]["instruction"], "completion": recs[3]["output"]}
    assert docs[1].text_for_filters() == recs[3]["instruction"] + recs[3]["output"]


def test_records_take_a_slice_of_the_documents_for_disjoint_splits(data):
    """records [start, end]: the good documents start..end-1 in file order (bad records do not count), so a train
    split [0, 2000] and a dev split [2000, null] of one file are disjoint and together the whole."""
    path = data / "preferences/hh_rlhf_harmless_base_test.jsonl"
    whole, _ = read(path, kind="pairs")
    train, _ = read(path, kind="pairs", records=[0, 2000])
    dev, _ = read(path, kind="pairs", records=[2000, None])
    assert [d.loc for d in train + dev] == [d.loc for d in whole] and len(train) == 2000
    assert [d.loc for d in read(path, kind="pairs", records=[5, 8])[0]] == [d.loc for d in whole[5:8]]
    for bad in ([3], [5, 5], [-1, 4], [2, "x"]):
        with pytest.raises(DataError, match=r"source 'src': records must be \[start, end\]"):
            read(path, kind="pairs", records=bad)


@pytest.fixture(scope="module")
def beige_dataset(data):
    import datasets

    rows = [r for _, r in json_lines(data / BEIGE)]
    return datasets.Dataset.from_list(rows)


def test_parquet_and_save_to_disk_equal_the_jsonl(data, tmp_path, beige_dataset):
    jsonl_docs, _ = read(data / BEIGE)
    beige_dataset.to_parquet(str(tmp_path / "beige.parquet"))
    beige_dataset.save_to_disk(str(tmp_path / "beige_disk"))
    for path in (tmp_path / "beige.parquet", tmp_path / "beige_disk"):
        docs, report = read(path)
        assert [d.data for d in docs] == [d.data for d in jsonl_docs]
        assert [d.loc for d in docs] == [f"{path}:row {i}" for i in range(676)]
        assert report.kept == 676 and report.bytes_read > 0


def test_parquet_mapping_nulls_and_bad_columns(tmp_path, beige_dataset):
    ds = beige_dataset.select(range(20)).rename_column("text", "body")
    ds = ds.map(lambda r, i: {"body": None if i == 7 else r["body"], "n": i}, with_indices=True)
    path = tmp_path / "b.parquet"
    ds.to_parquet(str(path))
    docs, report = read(path, fields={"text": "body"})
    assert len(docs) == 19 and locs(report, "missing_field") == [f"{path}:row 7"]
    with pytest.raises(DataError, match=r"'text'.*not in .*b\.parquet") as e:
        read(path)  # the default mapping: there is no `text` column
    assert "body" in str(e.value)  # the message lists the columns that do exist
    with pytest.raises(DataError, match=r"'nope'.*b\.parquet"):
        read(path, fields={"text": "nope"})
    with pytest.raises(DataError, match=r"'n' in .*b\.parquet holds int64"):
        read(path, fields={"text": "n"})


def test_chat_messages_from_parquet(data, tmp_path):
    import datasets

    recs = [r for _, r in json_lines(data / "instructions/finlora_xbrl_term_test.jsonl")[:50]]
    rows = [
        {"messages": [{"role": "user", "content": r["instruction"]}, {"role": "assistant", "content": r["output"]}]}
        for r in recs
    ]
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "chat.parquet"))
    docs, _ = read(tmp_path / "chat.parquet", kind="chat")
    jsonl_docs, _ = read(data / "instructions/finlora_xbrl_term_test.jsonl", kind="chat")
    assert [d.data for d in docs] == [d.data for d in jsonl_docs[:50]]


def test_save_to_disk_with_splits_is_refused(tmp_path, beige_dataset):
    import datasets

    datasets.DatasetDict(train=beige_dataset.select(range(3))).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(DataError, match=r"several splits.*dd/train"):
        read(tmp_path / "dd")


# ---------------------------------------------------------------- corrupted copies of real files


def corrupt_jsonl(src, dst, huge):
    """The first 30 lines of a real JSONL with one fault per line; returns {line: reason} (None = good)."""
    orig = src.read_bytes().split(b"\n")[:30]
    rec = [json.loads(line) for line in orig]
    lines, truth = [], {}

    def add(raw, reason=None):
        assert raw not in orig or reason in (None, "blank")  # each corruption really changed its line
        lines.append(raw)
        truth[len(lines)] = reason

    add(orig[0])
    add(b"", "blank")  # not a record, but counted in line numbers
    add(orig[1][: len(orig[1]) // 2], "malformed_json")  # truncated
    add(orig[2])
    add(orig[3].replace(b'"text": "', b'"text": "\xff\xfe', 1), "invalid_utf8")
    add(json.dumps({k: v for k, v in rec[4].items() if k != "text"}).encode(), "missing_field")
    add(json.dumps({**rec[5], "text": 12345}).encode(), "wrong_type")
    add(json.dumps({**rec[6], "text": " \n\t "}).encode(), "empty")
    add(json.dumps({**rec[7], "text": "x" * huge}).encode(), "too_long")
    add(orig[8].replace(b', "text"', b',\r "text"', 1))  # a stray CR is JSON whitespace: good, and no new line
    add(json.dumps({**rec[9], "text": "ok \udc80"}).encode(), "invalid_utf8")  # escaped lone surrogate
    add(b"[1, 2]", "wrong_type")
    for raw in orig[10:]:
        add(raw)
    dst.write_bytes(b"\n".join(lines) + b"\n")
    return truth, rec


def test_corrupted_jsonl_counts_each_fault_at_its_line(data, tmp_path):
    path = tmp_path / "beige_bad.jsonl"
    truth, rec = corrupt_jsonl(data / BEIGE, path, huge=200_001)
    docs, report = read(path, max_chars=200_000)
    bad = {n: r for n, r in truth.items() if r not in (None, "blank")}
    assert b"\r" in path.read_bytes() and path.read_bytes().count(b"\n") == len(truth)  # the CR is no line break
    assert report.read == len(truth) - 1
    assert report.dropped == {r: list(bad.values()).count(r) for r in set(bad.values())}
    for reason in set(bad.values()):
        assert locs(report, reason) == [f"{path}:{n}" for n, r in bad.items() if r == reason]
    good = [n for n, r in truth.items() if r is None]
    assert [d.loc for d in docs] == [f"{path}:{n}" for n in good]
    assert [d.data["text"] for d in docs] == [rec[i]["text"] for i in (0, 2, 8, *range(10, 30))]
    assert dict(report.examples["invalid_utf8"])[f"{path}:5"].startswith("invalid UTF-8 byte 0xff")
    check_bad_fraction(report, 0.5)
    with pytest.raises(DataError) as e:
        check_bad_fraction(report, 0.0)
    for n, reason in bad.items():
        assert reason in str(e.value) and f"{path}:{n}:" in str(e.value)


def test_corrupted_csv(data, tmp_path):
    orig = (data / "financial_phrasebank/sentences_allagree.csv").read_bytes().split(b"\n")[:40]
    lines = list(orig)
    lines[4] = lines[4].replace(b" ", b" \xe9", 1)  # a Latin-1 byte: the file's original encoding
    lines[8] = lines[8] + b",extra"
    lines[11] = b'"",neutral'
    lines[14:15] = [b'"First line of a quoted', b'second line",positive']  # valid: one record on two lines
    path = tmp_path / "fpb_bad.csv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    docs, report = read(path, fields={"text": "sentence"})
    assert report.read == len(lines) - 2  # minus the header and the continuation line
    assert report.dropped == {"invalid_utf8": 1, "malformed_csv": 1, "empty": 1}
    assert (locs(report, "invalid_utf8"), locs(report, "malformed_csv"), locs(report, "empty")) == (
        [f"{path}:5"],
        [f"{path}:9"],
        [f"{path}:12"],
    )
    assert {d.loc: d.data["text"] for d in docs}[f"{path}:15"] == "First line of a quoted\nsecond line"
    good = [n for n in range(2, len(lines) + 1) if n not in (5, 9, 12, 16)]
    assert [d.loc for d in docs] == [f"{path}:{n}" for n in good]


def test_corrupted_txt_folder(data, tmp_path):
    text = (data / "general_text_tinyshakespeare/tinyshakespeare.txt").read_bytes()
    lines = text.split(b"\n")
    folder = tmp_path / "books"
    folder.mkdir()
    (folder / "a.txt").write_bytes(b"\n".join(lines[:99] + [b"\x80" + lines[99]] + lines[100:]))
    (folder / "b.txt").write_bytes(text)
    (folder / "c.txt").write_bytes(b"")
    (folder / "d.txt").write_bytes(b" \n\n ")
    (folder / "notes.md").write_bytes(b"ignored: not a .txt file")
    docs, report = read(folder)
    assert [d.loc for d in docs] == [f"{folder}/b.txt:1"]
    assert report.dropped == {"invalid_utf8": 1, "empty": 2}
    assert locs(report, "invalid_utf8") == [f"{folder}/a.txt:100"]
    assert locs(report, "empty") == [f"{folder}/c.txt:1", f"{folder}/d.txt:1"]
    _, report = read(folder / "b.txt", max_chars=len(text) - 1)
    assert report.dropped == {"too_long": 1}
    _, report = read(folder / "b.txt", max_chars=len(text) // 5)  # refused from the size, without reading
    assert report.dropped == {"too_long": 1}


def test_read_sources_policy_and_early_stop(data, tmp_path):
    path = tmp_path / "beige_bad.jsonl"
    truth, _ = corrupt_jsonl(data / BEIGE, path, huge=200_001)
    good = SourceConfig(path=str(data / "fomc_minutes_text/minutes"), name="fomc")
    it, reports = read_sources([good, SourceConfig(path=str(path))], max_chars=200_000)
    with pytest.raises(DataError, match=r"source 'beige_bad'.*bad input"):
        list(it)
    assert reports["fomc"].kept == 46
    it, reports = read_sources([good, SourceConfig(path=str(path))], max_bad_fraction=0.5, max_chars=200_000)
    assert len(list(it)) == 46 + list(truth.values()).count(None)
    # A wrong mapping makes every record bad: stop after 1000 records, not after the 5000 of the glob.
    it, reports = read_sources([SourceConfig(path=str(data / "finance_corpus_en/*.jsonl"), fields={"text": "body"})])
    with pytest.raises(
        DataError, match=r"stopped early.*\n  missing_field: 1000\n.*beige_book_2014_2020\.jsonl:1: no field 'body'"
    ):
        list(it)
    assert reports["finance_corpus_en"].read == 1000


def test_report_summary_and_non_bad_reasons(data):
    path = data / "fomc_minutes_text/minutes"
    _, report = read(path, name="fomc")
    report.drop("too_short", f"{path}/20190130.txt:1", "3 chars")
    report.drop("empty", f"{path}/20190320.txt:1")
    assert report.kept == 44
    assert report.bad_fraction() == 1 / 46  # filter drops are not bad input
    assert report.format() == (
        f"fomc: read 46, kept 44, dropped: too_short 1 ({path}/20190130.txt:1), empty 1 ({path}/20190320.txt:1)"
    )
    d = json.loads(json.dumps(report.to_dict()))
    assert d["dropped"] == {"too_short": 1, "empty": 1} and d["examples"]["too_short"][0]["detail"] == "3 chars"


# ---------------------------------------------------------------- whole-source errors


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"path": "no/such/file.jsonl", "name": "fin"}, r"source 'fin': path not found: 'no/such/file.jsonl'"),
        ({"path": "no/such/*.jsonl"}, r"no files match 'no/such/\*.jsonl'"),
        ({"path": "{data}/" + BEIGE, "format": "xml"}, r"unknown format 'xml'"),
        ({"path": "{data}/" + BEIGE, "kind": "speech"}, r"unknown kind 'speech'"),
        ({"path": "{data}/" + BEIGE, "fields": {"body": "text"}}, r"\['body'\] are not fields of kind 'text'"),
        ({"path": "{data}/finance_corpus_en"}, r"mixes formats \(3 jsonl, 1 text\)"),
        ({"path": "{data}/finance_corpus_en/SOURCE.md"}, r"cannot tell the format of .*SOURCE\.md"),
        ({"path": "{data}/general_text_tinyshakespeare", "kind": "chat"}, r"kind 'chat' needs records"),
    ],
)
def test_unusable_sources_fail_at_once(data, kw, message):
    kw["path"] = kw["path"].format(data=data)
    with pytest.raises(DataError, match=message):
        read_source(SourceConfig(**kw), SourceReport(kw.get("name", "src")))  # no iteration needed


def test_json_array_file_is_refused(data):
    with pytest.raises(DataError, match=r"tatqa_dataset_dev\.json looks like one JSON array"):
        read(data / "tatqa/tatqa_dataset_dev.json")


def test_source_names_must_be_unique_and_non_empty(data, tmp_path):
    one = SourceConfig(path=str(data / BEIGE))
    with pytest.raises(DataError, match="repeated: beige_book_2014_2020"):
        read_sources([one, SourceConfig(path=str(data / BEIGE))])
    with pytest.raises(DataError, match="no name"):
        read_sources([SourceConfig(path="*.jsonl")])
    (tmp_path / "empty.jsonl").write_bytes(b"\n\n")
    it, _ = read_sources([SourceConfig(path=str(tmp_path / "empty.jsonl"))])
    with pytest.raises(DataError, match="source 'empty': no records"):
        list(it)


# ---------------------------------------------------------------- HTML and PDF files

NAV = '<nav><a href="/">Home</a> | <a href="/markets">Markets</a> | Subscribe to our newsletter</nav>'
FOOTER = "<footer>Copyright 2024 Example Media. All rights reserved. Privacy policy | Cookie settings</footer>"
SCRIPT = '<script>window.trackingPixel = "analytics-tag-7731";</script><style>.ad{color:red}</style>'


def html_page(paragraphs: list[str]) -> str:
    body = "".join(f"<p>{p}</p>" for p in paragraphs)
    return f"<html><head><title>Report</title>{SCRIPT}</head><body>{NAV}<article>{body}</article>{FOOTER}</body></html>"


def minimal_pdf(pages: list[list[str]]) -> bytes:
    """A valid PDF written by hand (catalog, pages, Helvetica, one text stream per page, exact xref offsets)."""
    objs = ["<< /Type /Catalog /Pages 2 0 R >>", "", "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    kids = []
    for lines in pages:
        ops = "BT /F1 12 Tf 72 720 Td 14 TL " + " ".join(f"({line}) '" for line in lines) + " ET"
        objs.append(f"<< /Length {len(ops)} >>\nstream\n{ops}\nendstream")
        objs.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
                    f"/Contents {len(objs)} 0 R >>")  # fmt: skip
        kids.append(len(objs))
    objs[1] = f"<< /Type /Pages /Kids [{' '.join(f'{k} 0 R' for k in kids)}] /Count {len(kids)} >>"
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for i, obj in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n{obj}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def test_html_keeps_the_main_text_not_the_boilerplate(data, tmp_path):
    texts = [json.loads(line)["text"] for line in (data / BEIGE).read_text().splitlines()[:3]]
    folder = tmp_path / "pages"
    folder.mkdir()
    paragraphs = [[p for p in t.split("\n") if p.strip()][:4] for t in texts]
    for i, ps in enumerate(paragraphs):
        (folder / f"page{i}.html").write_text(html_page(ps), encoding="utf-8")
    (folder / "page3.htm").write_text("<html><body></body></html>")  # nothing to extract: one bad record
    docs, report = read(folder)  # format auto: a folder of .html/.htm files
    assert [d.loc for d in docs] == [str(folder / f"page{i}.html") for i in range(3)]
    for doc, ps in zip(docs, paragraphs):
        for p in ps:
            assert " ".join(p.split()) in " ".join(doc.data["text"].split())
        for boiler in ("Subscribe to our newsletter", "All rights reserved", "analytics-tag", "Cookie settings"):
            assert boiler not in doc.data["text"]
    assert report.read == 4 and report.dropped == {"empty": 1}
    assert locs(report, "empty") == [str(folder / "page3.htm")]
    with pytest.raises(DataError, match=r"1 of 4 records are bad input"):
        check_bad_fraction(report, 0.2)
    check_bad_fraction(report, 0.25)


def test_pdf_text_of_every_page_and_broken_files_are_counted(tmp_path):
    pages = [["Net interest income rose 12 percent in 2023.", "Deposits fell as rates rose."], ["Loan losses: 1.2bn"]]
    good = minimal_pdf(pages)
    (tmp_path / "a_report.pdf").write_bytes(good)
    (tmp_path / "b_corrupt.pdf").write_bytes(good[: len(good) // 2])  # cut off: no xref, no trailer
    (tmp_path / "c_not_a.pdf").write_bytes(b"<html>saved with the wrong extension</html>")
    (tmp_path / "d_blank.pdf").write_bytes(minimal_pdf([[]]))  # a page without text (as a scanned page)
    docs, report = read(tmp_path / "*.pdf", name="filings")
    assert len(docs) == 1 and docs[0].loc == str(tmp_path / "a_report.pdf")
    page_texts = docs[0].data["text"].split("\n\n")
    assert [t.splitlines() for t in page_texts] == pages
    assert report.read == 4 and report.dropped == {"unreadable_file": 2, "empty": 1}
    assert locs(report, "unreadable_file") == [str(tmp_path / "b_corrupt.pdf"), str(tmp_path / "c_not_a.pdf")]
    assert locs(report, "empty") == [str(tmp_path / "d_blank.pdf")]
    with pytest.raises(DataError, match=r"3 of 4 records are bad input"):
        check_bad_fraction(report, 0.5)


def test_encrypted_pdf_is_a_bad_record(tmp_path):
    import io

    import pypdf

    w = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(minimal_pdf([["secret figures"]]))))
    w.encrypt("password")
    buf = io.BytesIO()
    w.write(buf)
    (tmp_path / "locked.pdf").write_bytes(buf.getvalue())
    docs, report = read(tmp_path / "locked.pdf")
    assert docs == [] and report.dropped == {"unreadable_file": 1}
    assert "password" in report.examples["unreadable_file"][0][1]
    with pytest.raises(DataError, match="one plain document each"):
        read(tmp_path / "locked.pdf", kind="chat")
