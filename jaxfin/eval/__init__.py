"""Evaluation: raw-text loss / perplexity / bits per byte (text.py), forgetting reports (report.py), the
`jaxfin eval` runner (run.py, config.py, cli.py); multiple-choice and generative tasks (tasks.py) and KV-cache
generation (generate.py)."""

from jaxfin.eval.config import EvalConfig, load_eval_config
from jaxfin.eval.run import evaluate
from jaxfin.eval.text import text_metrics

__all__ = ["EvalConfig", "evaluate", "load_eval_config", "text_metrics"]
