"""Role agents (the "finance brain" recipe): k role-prompted answers to each question, then one summarising answer
that combines them, all from one model through the generation API (jaxfin/eval/generate.py).

```yaml
model: runs/finance_brain/hf        # a jaxfin checkpoint, a run dir or a Hugging Face dir
tokenizer: ""                       # "" = the model's own
chat_template: null                 # null = plain prompts; tokenizer | llama3 | chatml = system + user messages
generation: {max_new_tokens: 96, temperature: 0.0, stop: ["\n\n"]}
roles:
  - {name: credit_card, system: "You are a credit-card risk analyst at a retail bank."}
  - {name: credit_rating, system: "You are a corporate credit-rating analyst."}
  - {name: regulation, system: "You are a banking-regulation compliance officer."}
summary:
  system: "You are the chief risk officer. Combine the experts' answers into one decision."
questions: ["Should we raise the credit limit of a client whose debt-to-income ratio rose from 20% to 45%?"]
questions_file: ""                  # or one question per line (.txt) / a `question` field per line (.jsonl)
output: agents.jsonl
```

A role's prompt is `role_template` filled with {system} and {question} (plain) or the messages [system, user:
question] (chat template); the summary's user message is `summary_template` filled with {question} and {answers}
(one "name: answer" line per role). The k roles of every question are generated in one batched call, then the
summaries in a second.

Per-role models and retrieval:
```yaml
retrieval: {index: runs/index/filings, k: 4}   # from `jaxfin index build DOCS... --out DIR`; "" = no retrieval
roles:
  - {name: credit_card, system: "...", model: runs/cc_sft/hf}           # its own model ("" = `model`)
  - {name: credit_rating, system: "...", adapter: runs/rating_lora/peft} # a LoRA adapter (PEFT folder / run)
  - {name: regulation, system: "...", retrieval_k: 0}                    # -1 = inherit retrieval.k, 0 = none
summary: {system: "...", model: "", adapter: ""}                         # the summary never retrieves
```
Every (model, adapter) pair is loaded once and shared by the roles naming it; each pair generates all of its
prompts in one batched call. `retrieval` is one setting every role inherits (a role changes only its k): the
question is the BM25 query, and a role with passages gets `rag_template` with {context} = its passages, one
`context_template` line each ("[1] (source: ID) text"); with a chat template the user message is context + blank
line + question. With retrieval on, each output line gains `passages: {role: [{id, score, text}]}`, the passages
each role's prompt contained.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from jaxfin.config import ConfigError, build_section, merge_trees, parse_overrides, read_yaml_mapping
from jaxfin.config.choices import CHAT_TEMPLATES
from jaxfin.eval.generate import GenerationConfig, generate

ROLE_TEMPLATE = "{system}\n\nQuestion: {question}\nAnswer:"
RAG_TEMPLATE = "{system}\n\n{context}\n\nQuestion: {question}\nAnswer:"
CONTEXT_TEMPLATE = "[{n}] (source: {id}) {text}"
SUMMARY_TEMPLATE = "Question: {question}\n\nThe experts answered:\n{answers}\n\nFinal answer:"


@dataclass
class Role:
    name: str = ""
    system: str = ""  # who this agent is (a system prompt)
    model: str = ""  # its own model ("" = the config's `model`)
    adapter: str = ""  # a LoRA adapter on its model: a PEFT folder (a run's export_peft) or a LoRA run dir
    retrieval_k: int = -1  # passages in its prompt: -1 = the config's retrieval.k, 0 = none


@dataclass
class RetrievalConfig:
    index: str = ""  # an index folder from `jaxfin index build`; "" = no retrieval
    k: int = 4


@dataclass
class AgentsConfig:
    model: str = ""
    tokenizer: str = ""
    chat_template: str | None = None
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    roles: list[Role] = field(default_factory=list)
    summary: Role = field(default_factory=lambda: Role(name="summary"))
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    role_template: str = ROLE_TEMPLATE
    rag_template: str = RAG_TEMPLATE  # a role's prompt when it has passages: {system} {context} {question}
    context_template: str = CONTEXT_TEMPLATE  # one passage: {n} (1-based) {id} {score} {text}
    summary_template: str = SUMMARY_TEMPLATE
    questions: list[str] = field(default_factory=list)
    questions_file: str = ""
    output: str = "agents.jsonl"
    batch_size: int = 8


def load_agents_config(path: str | Path, overrides: list[str] = ()) -> AgentsConfig:

    extra = parse_overrides(list(overrides), AgentsConfig, "output=out.jsonl")
    data = merge_trees(read_yaml_mapping(path), extra)
    try:
        cfg = build_section(AgentsConfig, data, str(path))
    except TypeError as e:
        raise ConfigError(f"{path}: {e}") from None
    if not cfg.model:
        raise ConfigError(f"{path}: 'model' is required")
    if not cfg.roles or any(not r.name or not r.system for r in cfg.roles):
        raise ConfigError(f"{path}: 'roles' needs at least one {{name, system}} entry")
    if cfg.chat_template not in (None, *CHAT_TEMPLATES):
        raise ConfigError(f"{path}: 'chat_template' must be null, tokenizer, llama3 or chatml")
    if cfg.retrieval.k < 0 or any(r.retrieval_k < -1 for r in cfg.roles):
        raise ConfigError(f"{path}: 'retrieval.k' must be >= 0 and a role's 'retrieval_k' >= -1 (-1 = inherit)")
    if cfg.summary.retrieval_k > 0:
        raise ConfigError(f"{path}: 'summary.retrieval_k': the summary does not retrieve (it reads the answers)")
    return cfg


def read_questions(cfg: AgentsConfig) -> list[str]:
    questions = list(cfg.questions)
    if cfg.questions_file:
        p = Path(cfg.questions_file)
        if not p.is_file():
            raise FileNotFoundError(f"questions_file not found: {p}")
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            if p.suffix == ".jsonl":
                row = json.loads(line)
                if not isinstance(row, dict) or not isinstance(row.get("question"), str):
                    raise ValueError(f"{p}:{n}: expected an object with a 'question' string")
                questions.append(row["question"])
            else:
                questions.append(line)
    if not questions:
        raise ConfigError("no questions: set 'questions' or 'questions_file'")
    return questions


def _prompt(cfg: AgentsConfig, system: str, user: str, template: str, **fields):
    if cfg.chat_template:
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]
    return template.format(system=system, **fields)


def role_k(cfg: AgentsConfig, role: Role) -> int:
    """How many passages go into this role's prompt."""
    if not cfg.retrieval.index:
        return 0
    return cfg.retrieval.k if role.retrieval_k < 0 else role.retrieval_k


def format_context(cfg: AgentsConfig, passages: list[dict]) -> str:
    return "\n".join(cfg.context_template.format(n=n, **p) for n, p in enumerate(passages, 1))


def role_prompt(cfg: AgentsConfig, role: Role, question: str, passages: list[dict] = ()):
    if not passages:
        return _prompt(cfg, role.system, question, cfg.role_template, question=question)
    context = format_context(cfg, passages)
    return _prompt(cfg, role.system, f"{context}\n\n{question}", cfg.rag_template, question=question,
                   context=context)  # fmt: skip


def summary_prompt(cfg: AgentsConfig, question: str, answers: dict[str, str]):
    lines = "\n".join(f"{name}: {text.strip()}" for name, text in answers.items())
    user = cfg.summary_template.format(question=question, answers=lines)
    return _prompt(cfg, cfg.summary.system, user, "{system}\n\n" + cfg.summary_template, question=question,
                   answers=lines)  # fmt: skip


class _Models:
    """(model, adapter) -> (Model, tokenizer), each loaded once; `default` is the config's model if given."""

    def __init__(self, cfg: AgentsConfig, model=None, tokenizer=None, log=print):
        self.cfg, self.log, self.cache = cfg, log, {}
        if model is not None:
            self.cache[(cfg.model, "")] = (model, tokenizer)

    def key(self, role: Role) -> tuple[str, str]:
        return (role.model or self.cfg.model, role.adapter)

    def get(self, key: tuple[str, str]):
        import jaxfin
        from jaxfin.data.tokenizer import load_tokenizer

        model, tok = self.cache.get(key, (None, None))
        if model is None:
            path, adapter = key
            base = self.cache.get((path, ""), (None, None))[0]
            model = base or jaxfin.load_model(path)
            if adapter:
                from jaxfin.store.adapter import load_adapter

                model = load_adapter(model, adapter)
            self.log(f"agents: loaded {path}" + (f" + adapter {adapter}" if adapter else ""))
        tok = tok or load_tokenizer(self.cfg.tokenizer or model.tokenizer_dir)
        self.cache[key] = (model, tok)
        return model, tok


def _generate_grouped(cfg: AgentsConfig, models: _Models, jobs: list[tuple[tuple[str, str], object]]) -> list[str]:
    """Texts for (model key, prompt) jobs, in order; one batched `generate` call per model key."""
    out = [""] * len(jobs)
    run = {"batch_size": cfg.batch_size, "chat_template": cfg.chat_template}
    for key in dict.fromkeys(k for k, _ in jobs):
        idx = [i for i, (k, _) in enumerate(jobs) if k == key]
        model, tok = models.get(key)
        for i, text in zip(idx, generate(model, tok, [jobs[i][1] for i in idx], cfg.generation, **run)):
            out[i] = text
    return out


def retrieve(cfg: AgentsConfig, questions: list[str]) -> list[dict[str, list[dict]]]:
    """Per question: role name -> the passages [{id, score, text}] its prompt gets (empty without retrieval)."""
    ks = {r.name: role_k(cfg, r) for r in cfg.roles}
    if not max(ks.values()):
        return [{name: [] for name in ks} for _ in questions]
    from jaxfin.retrieval import Index

    index = Index.load(cfg.retrieval.index)
    out = []
    for q in questions:
        hits = index.search(q, max(ks.values()))
        out.append({name: hits[:k] for name, k in ks.items()})
    return out


def run_agents(cfg: AgentsConfig, model=None, tokenizer=None, log=print) -> list[dict]:
    """[{question, answers: {role: text}, summary}] for every question (plus `passages: {role: [{id, score, text}]}`
    with retrieval on); also written to cfg.output as JSON lines. `model` / `tokenizer`: cfg.model already loaded."""
    questions = read_questions(cfg)
    models = _Models(cfg, model, tokenizer, log)
    roles = cfg.roles
    passages = retrieve(cfg, questions)
    jobs = [(models.key(r), role_prompt(cfg, r, q, ps[r.name])) for q, ps in zip(questions, passages) for r in roles]
    log(f"agents: {len(roles)} roles x {len(questions)} questions on {len({k for k, _ in jobs})} model(s)")
    texts = _generate_grouped(cfg, models, jobs)
    answers = [{r.name: texts[i * len(roles) + j] for j, r in enumerate(roles)} for i in range(len(questions))]
    log(f"agents: {len(questions)} summaries")
    summary_key = models.key(cfg.summary)
    summaries = _generate_grouped(cfg, models, [(summary_key, summary_prompt(cfg, q, a))
                                                for q, a in zip(questions, answers)])  # fmt: skip
    out = [{"question": q, "answers": a, "summary": s} for q, a, s in zip(questions, answers, summaries)]
    if cfg.retrieval.index:
        for rec, ps in zip(out, passages):
            rec["passages"] = ps
    if cfg.output:
        Path(cfg.output).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.output).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out), encoding="utf-8")
        log(f"agents: wrote {cfg.output}")
    return out


def add_agents_parser(sub) -> None:
    p = sub.add_parser(
        "agents",
        help="role agents (own models or LoRA adapters, retrieved passages) and a summariser (the finance brain)",
        description="For each question: one answer per role (a system prompt each), then a summarising answer that "
        "combines them, all generated with batched KV-cache decoding. Config keys: see jaxfin/eval/agents.py; example: "
        "configs/agents/finance_brain.yaml. A role may name its own `model` and LoRA `adapter`; `retrieval: {index: "
        "DIR, k: 4}` (an index from `jaxfin index build`) puts the best passages for the question, with their source "
        "ids, into every role's prompt. Writes JSON lines {question, answers, summary[, passages]} to `output`.",
    )
    p.add_argument("config", help="agents YAML")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. model=runs/x output=out.jsonl")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=lambda args: _cli(args))


def _cli(args) -> int:
    import sys

    cfg = load_agents_config(args.config, args.overrides)
    if args.print_config:
        import dataclasses

        import yaml

        print(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False, allow_unicode=True), end="")
        return 0
    for r in run_agents(cfg, log=lambda m: print(m, file=sys.stderr)):
        print(json.dumps(r, ensure_ascii=False))
    return 0
