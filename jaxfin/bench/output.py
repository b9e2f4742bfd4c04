"""How every benchmark reports: JSON to --out, then JSON (--json) or the readable summary on stdout."""

from __future__ import annotations

import json
from pathlib import Path


def emit(result: dict, args, summary) -> int:
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text if args.json else summary(result))
    return 0
