"""demo_data/bank_private (the finance-brain recipe's fictional bank): the shipped files are what the documented
command writes, the grades follow the manual's rule, and the held-out questions' facts are only in the documents."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "demo_data/bank_private"


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_documented_command_reproduces_the_shipped_files(tmp_path):
    subprocess.run([sys.executable, "-m", "tools.bank_private", "--out", str(tmp_path)], cwd=REPO, check=True,
                   capture_output=True)  # fmt: skip
    assert _files(tmp_path) == _files(SHIPPED)


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (SHIPPED / name).read_text(encoding="utf-8").splitlines()]


def test_grades_follow_the_rating_manual():
    manual = (SHIPPED / "docs/rating_manual.html").read_text(encoding="utf-8")
    assert "利息保障倍數達8倍以上者評為A級；3倍以上未達8倍者評為BBB級；未達3倍者評為BB級" in manual
    for split in ("train", "test"):
        rows = _rows(f"credit_rating_{split}.jsonl")
        labels = set()
        for r in rows:
            cov = float(re.search(r"利息保障倍數為([0-9.]+)倍", r["prompt"]).group(1))
            assert r["label"] == ("A級" if cov >= 8 else "BBB級" if cov >= 3 else "BB級")
            assert r["text"] == r["prompt"] + r["label"]
            labels.add(r["label"])
        assert labels == {"A級", "BBB級", "BB級"}


def test_held_out_answers_are_in_the_documents_and_not_in_the_role_data():
    docs = "".join(p.read_text(encoding="utf-8") for p in (SHIPPED / "docs").glob("*.html"))
    qa = {p.stem: p.read_text(encoding="utf-8") for p in SHIPPED.glob("qa_*.jsonl")}
    questions = _rows("questions.jsonl")
    assert {q["category"] for q in questions} == {"credit_card", "credit_rating", "regulation"}
    for q in questions:
        assert q["question"] not in qa[f"qa_{q['category']}"]  # held out of the role adapter's data
        number = re.search(r"[0-9][0-9,.]*", q["answer"]).group(0)
        assert number in docs
