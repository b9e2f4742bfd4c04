"""The other side of a comparison benchmark (torch, TRL, lm-eval's hf backend) in a subprocess: its own thread
pools, memory and GPU memory. The script (beside this module) is run by path, not as `-m jaxfin.bench...`, so that
importing the jaxfin package (and with it JAX) does not count against it.

Protocol: one JSON line (the spec, with "cue": true) to its stdin; it builds and warms up, then answers each "go"
with one JSON line (a round's timings, or its warm-up) and, after "end" (when `END` is set) or its last round, one
JSON line with the whole result. Libraries may print to stdout too: only JSON objects with the expected key count.
A failure raises with the tail of its stderr (its last line alone when it exits 2 with "error: ...").
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path


class Worker:
    SCRIPT = ""  # e.g. "torch_train.py"
    SIDE = "torch"  # for messages
    RESULT_KEY = "params"  # a key only the final result line has
    END = False  # send "end" before reading the result (the side waits for it)

    def __init__(self, spec: dict):
        self.stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (open while the worker lives)
        script = Path(__file__).with_name(self.SCRIPT)
        self.proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True)  # fmt: skip
        self._send(json.dumps({**spec, "cue": True}))

    def _send(self, line: str) -> None:
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            self._failed()

    def _json_line(self, key: str) -> dict:
        for line in self.proc.stdout:
            try:
                out = json.loads(line) if line.startswith("{") else None
            except json.JSONDecodeError:
                out = None
            if isinstance(out, dict) and key in out:
                return out
        self._failed()

    def ask(self, key: str) -> dict:
        """One "go" and its answer, the JSON line holding `key` (e.g. "round", "warmup")."""
        self._send("go")
        return self._json_line(key)

    def round(self, r: int = 0) -> dict:
        return self.ask("round")

    def result(self) -> dict:
        if self.END:
            self._send("end")
        out = self._json_line(self.RESULT_KEY)
        self.proc.wait()
        self.stderr.close()
        return out

    def _failed(self):
        code = self.proc.wait()
        self.stderr.seek(0)
        lines = self.stderr.read().strip().splitlines()
        if code == 2 and lines and lines[-1].startswith("error: "):
            raise ValueError(lines[-1][len("error: ") :])
        tail = "\n".join(lines[-20:])
        raise ValueError(f"the {self.SIDE} side failed (exit {code}); its last output:\n{tail}")
