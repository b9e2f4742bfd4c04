"""What multiple-choice (tasks.py) and generative (gen_tasks.py) tasks share: the error they raise and where their
data lives."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class TaskError(ValueError):
    """A malformed task definition or data file; the message names the key (and file:line)."""


def default_data_dir() -> Path:
    """$JAXFIN_SHARED_DATA, else <repo>/../shared/data."""
    return Path(os.environ.get("JAXFIN_SHARED_DATA", REPO.parent / "shared" / "data"))
