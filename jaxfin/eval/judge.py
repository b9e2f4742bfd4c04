"""The LLM quality judge of `filters.quality_model: {kind: judge}` (jaxfin/data/quality.py): a jaxfin model that
grades each document 1-5 with JUDGE_PROMPT by batched KV-cache generation; its answers parsed by
`parse_judgement`. Importing this module registers it with the data pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxfin.data import DataError
from jaxfin.data.quality import JUDGE_PROMPT, SCORERS, parse_judgement


class Judge:
    """An LLM that scores documents 1-5 with JUDGE_PROMPT; `score` also keeps the justifications."""

    def __init__(self, path: str | Path, cfg):
        import jaxfin
        from jaxfin.data.tokenizer import load_tokenizer
        from jaxfin.eval.generate import device_params

        self.cfg = cfg
        self.model = jaxfin.load_model(path)
        self.model.params = device_params(self.model.params)  # once, not on every generate() call
        tok_path = cfg.tokenizer or self.model.tokenizer_dir
        if not tok_path:
            raise DataError(f"quality_model.path: no tokenizer files in {path}; set quality_model.judge.tokenizer")
        self.tok = load_tokenizer(tok_path)
        self.unparsed = 0

    def prompt(self, text: str) -> list[int]:
        """Token ids of the prompt for one document, its text cut so that prompt + answer fit the context."""
        from jaxfin.eval.generate import render_prompt

        template = self.cfg.chat_template or None
        text = text[: self.cfg.max_chars]
        ids = render_prompt(JUDGE_PROMPT.format(text=text), self.tok, template)
        room = self.model.config.max_position_embeddings - self.cfg.max_new_tokens
        while len(ids) > room and text:  # rare (a short context): shorten the extract, keep the instructions
            text = text[: len(text) * room // len(ids) - 1]
            ids = render_prompt(JUDGE_PROMPT.format(text=text), self.tok, template)
        return ids

    def score(self, texts: list[str]) -> np.ndarray:
        return self.judge(texts)[0]

    def judge(self, texts: list[str]) -> tuple[np.ndarray, list[str]]:
        """(scores, justifications) of a batch of documents; unparsable answers score 0 and count in `unparsed`."""
        from jaxfin.eval.generate import GenerationConfig, generate

        gen = GenerationConfig(max_new_tokens=self.cfg.max_new_tokens)
        outs = generate(self.model, self.tok, [self.prompt(t) for t in texts], gen, batch_size=self.cfg.batch_size)
        parsed = [parse_judgement(out) for out in outs]
        self.unparsed += sum(not ok for _, _, ok in parsed)
        return np.asarray([s for s, _, _ in parsed], np.float64), [why for _, why, _ in parsed]


SCORERS["judge"] = Judge
