"""jaxfin as an lm-evaluation-harness model: `--model jaxfin --model_args pretrained=DIR,batch_size=8,...`.

lm-eval (0.4.13) finds models only through its in-process registry (no plugin entry points), so this module must be
imported before lm-eval looks the name up. The command line that does so and then runs lm-eval's own CLI:

    python -m jaxfin.eval.harness --model jaxfin --model_args pretrained=runs/cpt --tasks fpb_lm \\
        --include_path configs/eval/lm_eval [any other lm_eval option]

(`jaxfin eval` runs lm-eval tasks by name too: the `lm_eval` section of jaxfin/eval/config.py.)

Model args: `pretrained` (a jaxfin checkpoint, a training run dir or a Hugging Face dir, loaded by
`jaxfin.load_model`), `batch_size` (rows per forward pass; "auto" = 8), `max_length` (context, default the model's
max_position_embeddings, as the hf backend), `max_gen_toks` (256), `dtype` (auto | float32 | bfloat16: the compute
dtype), `tokenizer` (a .model file or HF tokenizer folder; default the model's own), `add_bos_token` and
`prefix_token_id` (as the hf backend's).

Requests are tokenised exactly as lm-eval's `hf` backend does (TemplateLM's `_encode_pair`, the HF tokenizer's own
special tokens, BOS as the prefix of an empty context; a SentencePiece-only checkpoint gets the HF tokenizer that
`jaxfin export` would write), so on the same weights both backends see the same token ids:

    loglikelihood           jaxfin.eval.tasks.score_requests: (context, continuation) pairs packed into rows, in
                            groups sorted by length (each group padded to its own power-of-two bucket)
    loglikelihood_rolling   lm-eval's disjoint rolling windows (max_length tokens, 1 token of context), scored as above
    generate_until          jaxfin.eval.generate.generate_full (batched KV cache), prompts sorted by length, greedy
                            unless do_sample; cut at the first `until` string, EOS included, as the hf backend
"""

from __future__ import annotations

import logging

import lm_eval.models  # noqa: F401  (the built-in models' lazy entries: registering ours first must not hide them)
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from tqdm import tqdm

log = logging.getLogger(__name__)

GROUP = 512  # requests per score_requests call (sorted by length: each group gets its own row length)


def _bool(v):
    if v is None or isinstance(v, bool):
        return v
    return str(v).strip().lower() in ("1", "true", "yes")


def hf_tokenizer(tok, model_config):
    """The transformers tokenizer for a jaxfin Tokenizer: its own, or for a SentencePiece model the fast tokenizer
    `jaxfin export` writes (jaxfin.hf.tokenizer.spm_to_hf)."""
    if tok.hf is not None:
        return tok.hf
    from jaxfin.hf.tokenizer import spm_to_hf

    return spm_to_hf(tok.path, model_config)


class JaxfinLM(TemplateLM):
    """A jaxfin model behind lm-eval's LM interface (see the module docstring). `model` / `tokenizer` may also be a
    loaded `jaxfin.Model` and `jaxfin.data.tokenizer.Tokenizer` (how `jaxfin eval` passes them)."""

    def __init__(self, pretrained=None, *, model=None, tokenizer=None, batch_size=8, max_length=None,
                 max_gen_toks=256, dtype="auto", add_bos_token=None, prefix_token_id=None, **kwargs):  # fmt: skip
        super().__init__()
        for k in ("device", "max_batch_size", "trust_remote_code", "parallelize"):
            kwargs.pop(k, None)  # lm-eval's CLI passes these to every model; nothing to do on a JAX device
        if kwargs:
            log.warning("jaxfin model: ignoring model args %s", sorted(kwargs))
        import jaxfin
        from jaxfin.data.tokenizer import Tokenizer, load_tokenizer

        if model is None:
            if not pretrained:
                raise ValueError("the jaxfin model needs pretrained=DIR (a jaxfin checkpoint, run dir or HF dir)")
            if dtype not in ("auto", "float32", "bfloat16"):
                raise ValueError(f"dtype must be auto, float32 or bfloat16; got '{dtype}'")
            model = jaxfin.load_model(pretrained, **({} if dtype == "auto" else {"compute_dtype": dtype}))
        self.model = model
        self.pretrained = str(pretrained or "")
        if not isinstance(tokenizer, Tokenizer):
            path = tokenizer or model.tokenizer_dir
            if not path:
                raise ValueError(f"model {pretrained} has no tokenizer files: pass tokenizer=PATH")
            tokenizer = load_tokenizer(path)
        self.jaxfin_tokenizer = tokenizer
        self.tokenizer = hf_tokenizer(tokenizer, model.config)
        self.add_bos_token = _bool(add_bos_token)
        self.custom_prefix_token_id = None if prefix_token_id is None else int(prefix_token_id)
        if batch_size in (None, "auto") or str(batch_size).startswith("auto"):
            batch_size = 8
        self._batch_size = int(batch_size)
        self._max_length = int(max_length) if max_length else model.config.max_position_embeddings
        self._max_gen_toks = int(max_gen_toks)

    # --------------------------------------------------------------------------------- the hf backend's conventions

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        if self.custom_prefix_token_id is not None:
            return self.custom_prefix_token_id
        if self.tokenizer.bos_token_id is not None:
            return self.tokenizer.bos_token_id
        return self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name_or_path.replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, left_truncate_len=None, **kwargs):
        from lm_eval.models.utils import _add_special_kwargs, has_bos_prefix

        special = _add_special_kwargs(add_special_tokens, self.add_bos_token)
        if add_special_tokens is None and has_bos_prefix(string, self.tokenizer.decode(self.prefix_token_id)):
            special["add_special_tokens"] = False
        ids = self.tokenizer.encode(string, **special)
        return ids[-left_truncate_len:] if left_truncate_len else ids

    def _context_ids(self, context: str) -> list[int]:
        """A generation prompt's ids as the hf backend's tok_batch_encode makes them."""
        from lm_eval.models.utils import has_bos_prefix

        special = {}
        if has_bos_prefix(context, getattr(self.tokenizer, "bos_token", None)):
            special = {"add_special_tokens": False}
        elif self.add_bos_token is not None:
            special = {"add_special_tokens": self.add_bos_token}
        return self.tokenizer(context, **special)["input_ids"]

    def apply_chat_template(self, chat_history, add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(chat_history, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)  # fmt: skip

    def get_model_info(self) -> dict:
        import jax

        n = sum(int(x.size) for x in jax.tree.leaves(self.model.params))
        return {"model_num_parameters": n, "model_dtype": str(self.model.config.compute_dtype),
                "pretrained": self.pretrained}  # fmt: skip

    # --------------------------------------------------------------------------------- requests

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
        from jaxfin.eval.tasks import score_requests

        for _, ctx, cont in requests:
            if not ctx or not cont:
                raise ValueError("a loglikelihood request needs a non-empty context and continuation")
            if len(cont) > self.max_length:
                raise ValueError(f"a continuation of {len(cont)} tokens exceeds max_length {self.max_length}")
        order = sorted(range(len(requests)), key=lambda i: -len(requests[i][1]) - len(requests[i][2]))
        out: list = [None] * len(requests)
        bar = tqdm(total=len(requests), disable=disable_tqdm or self.rank != 0, desc="jaxfin loglikelihood")
        for g in range(0, len(order), GROUP):
            idx = order[g : g + GROUP]
            scores = score_requests(self.model, [(list(requests[i][1]), list(requests[i][2])) for i in idx],
                                    batch_size=self.batch_size, max_length=self.max_length)  # fmt: skip
            for i, s in zip(idx, scores):
                out[i] = s
                if requests[i][0] is not None:
                    self.cache_hook.add_partial("loglikelihood", requests[i][0], s)
            bar.update(len(idx))
        bar.close()
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        from lm_eval import utils

        windows, counts = [], []
        for (string,) in [req.args for req in requests]:
            ws = list(map(utils.make_disjoint_window, utils.get_rolling_token_windows(
                token_list=self.tok_encode(string), prefix_token=self.prefix_token_id, max_seq_len=self.max_length,
                context_len=1)))  # fmt: skip
            windows += [(None, *w) for w in ws]
            counts.append(len(ws))
        scores = self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm)
        out, k = [], 0
        for req, n in zip(requests, counts):
            total = sum(s for s, _ in scores[k : k + n])
            k += n
            out.append(total)
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return out

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text

        from jaxfin.eval.generate import GenerationConfig, generate_full

        eos = self.tokenizer.decode(self.eot_token_id, skip_special_tokens=False)
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(repr(sorted(req.args[1].items())), []).append(i)
        out: list = [None] * len(requests)
        bar = tqdm(total=len(requests), disable=disable_tqdm or self.rank != 0, desc="jaxfin generate_until")
        for idx in groups.values():
            gen_kwargs = requests[idx[0]].args[1]
            kw = normalize_gen_kwargs(dict(gen_kwargs), self.max_gen_toks)
            until = handle_stop_sequences(kw.pop("until", None), eos=eos)
            max_new = int(kw.pop("max_gen_toks"))
            if max_new >= self.max_length:
                raise ValueError(f"max_gen_toks {max_new} must be less than max_length {self.max_length}")
            sample = bool(kw.get("do_sample")) and float(kw.get("temperature") or 0.0) > 0
            cfg = GenerationConfig(max_new_tokens=max_new, stop=[s for s in until if s],
                                   temperature=float(kw.get("temperature") or 0.0) if sample else 0.0,
                                   top_k=int(kw.get("top_k") or 0) if sample else 0,
                                   top_p=float(kw.get("top_p") or 1.0) if sample else 1.0)  # fmt: skip
            ids = {i: self._context_ids(requests[i].args[0])[-(self.max_length - max_new) :] for i in idx}
            idx = sorted(idx, key=lambda i: -len(ids[i]))  # batching by length: similar lengths share a bucket
            gens = generate_full(self.model, self.jaxfin_tokenizer, [ids[i] for i in idx], cfg,
                                 batch_size=self.batch_size)  # fmt: skip
            for i, g in zip(idx, gens):
                text = self.tokenizer.decode(g.tokens, skip_special_tokens=True)
                out[i] = postprocess_generated_text(text, stop=until, think_end_token=None)
                self.cache_hook.add_partial("generate_until", requests[i].args, out[i])
            bar.update(len(idx))
        bar.close()
        return out


LOGLIK_TYPES = ("multiple_choice", "loglikelihood", "loglikelihood_rolling")


def run_lm_eval(model, tokenizer, section, *, batch_size: int = 8, log=print) -> dict:
    """`jaxfin eval`'s lm_eval section (jaxfin/eval/config.py: LmEvalSection) on one loaded model: lm-eval's
    `simple_evaluate` with the jaxfin model object -> {task: {task, protocol, backend, metrics, n, n_shot}} for every
    task and group lm-eval reports. protocol: `loglik` for log-likelihood tasks (lm-eval's conventions),
    `generative` for generate_until ones (lm-eval's own metrics, not FinBen's)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    lm = JaxfinLM(model=model, tokenizer=tokenizer, batch_size=batch_size, max_length=section.max_length or None)
    tm = TaskManager(include_path=section.include_path or None)
    out = lm_eval.simple_evaluate(model=lm, tasks=list(section.tasks), task_manager=tm,
                                  num_fewshot=section.num_fewshot, limit=section.limit or None,
                                  log_samples=False)  # fmt: skip
    types = {name: (cfg or {}).get("output_type") for name, cfg in (out.get("configs") or {}).items()}
    version = lm_eval.__version__
    report = {}
    for name, res in out["results"].items():
        metrics = {}
        for k, v in res.items():
            metric, _, filt = k.partition(",")
            if metric in ("alias", "sample_len") or not isinstance(v, (int, float)) or isinstance(v, bool):
                continue
            metrics[metric if filt in ("none", "") else f"{metric} ({filt})"] = float(v)
        kind = types.get(name)
        n = ((out.get("n-samples") or {}).get(name) or {}).get("effective", "")
        report[name] = {"task": name, "protocol": "generative" if kind == "generate_until" else "loglik",
                        "backend": f"lm-eval {version}", "output_type": kind or "group", "metrics": metrics, "n": n,
                        "n_shot": (out.get("n-shot") or {}).get(name)}  # fmt: skip
        log(f"  lm-eval {name}: {metrics}")
    return report


def main(argv=None) -> None:
    """lm-eval's own command line, with the `jaxfin` model registered."""
    import sys

    from lm_eval.__main__ import cli_evaluate

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    cli_evaluate()


if __name__ == "__main__":  # `python -m jaxfin.eval.harness`: this file runs as a copy named __main__; register and
    from jaxfin.eval.harness import main as _main  # run the importable module's class, so lm-eval has one "jaxfin"

    _main()
else:
    register_model("jaxfin")(JaxfinLM)
