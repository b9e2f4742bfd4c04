"""The entry point every other-side script (torch_train.py, torch_rl.py, torch_eval.py) runs: read the spec, run,
print the result as one JSON line. The scripts run by path (jaxfin/bench/worker.py), so this module is imported as
their sibling `side`, without importing the jaxfin package (and JAX)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable


def serve(run: Callable[[dict, Callable[[], str] | None], dict], argv: list[str] | None = None) -> int:
    """The spec from the file argv[0], else the first stdin line; with "cue" in it, `run` reads one stdin line per
    round (and the caller's "end"). A ValueError is the spec's fault: "error: ..." on stderr, exit 2."""
    argv = sys.argv[1:] if argv is None else argv
    if argv:
        with open(argv[0]) as f:
            spec = json.load(f)
    else:
        spec = json.loads(sys.stdin.readline())
    cue = sys.stdin.readline if spec.get("cue") else None
    try:
        result = run(spec, cue)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0
