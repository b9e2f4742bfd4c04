"""The lm-eval task YAMLs' data loader (`custom_dataset: !function shared_data.load`): the team's shared data is
read in place, never copied into the repo. `data_files` paths are relative to $JAXFIN_SHARED_DATA (default
<repo>/../shared/data); `builder` is the datasets builder (csv | json)."""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def root() -> Path:
    return Path(os.environ.get("JAXFIN_SHARED_DATA", REPO.parent / "shared" / "data"))


def load(builder: str = "csv", data_files: dict | None = None, **_metadata):
    import datasets

    base = root()
    files = {split: str(base / rel) for split, rel in (data_files or {}).items()}
    for split, f in files.items():
        if not Path(f).is_file():
            raise FileNotFoundError(f"lm-eval task data ({split}) not found: {f} (set $JAXFIN_SHARED_DATA)")
    return datasets.load_dataset(builder, data_files=files)
