"""What multiple-choice (tasks.py) and generative (gen_tasks.py) tasks share: the error they raise and where their
data lives."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class TaskError(ValueError):
    """A malformed task definition or data file; the message names the key (and file:line)."""


def default_data_dir() -> Path:
    """$JAXFIN_SHARED_DATA, else <repo>/../shared/data."""
    return Path(os.environ.get("JAXFIN_SHARED_DATA", REPO.parent / "shared" / "data"))


def read_rows(path: Path, fmt: str) -> list[tuple[int, object]]:
    """[(line number, row)] of a csv, jsonl or json (a list of records: numbered from 1) file; a malformed line
    raises TaskError with file:line. Rows are not checked to be objects (the caller says what a record must be)."""
    if not path.is_file():
        raise TaskError(f"data file not found: {path} (set data_dir or $JAXFIN_SHARED_DATA)")
    with path.open(encoding="utf-8", newline="") as f:
        if fmt == "csv":
            reader = csv.DictReader(f)
            return [(reader.line_num, row) for row in reader]
        if fmt == "json":
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise TaskError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
            if not isinstance(data, list):
                raise TaskError(f"{path}: a .json task file must be a list of records")
            return list(enumerate(data, 1))
        rows = []
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append((i, json.loads(line)))
                except json.JSONDecodeError as e:
                    raise TaskError(f"{path}:{i}: not valid JSON: {e.msg}") from None
        return rows
