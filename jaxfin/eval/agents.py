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
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from jaxfin.config import ConfigError, build_section, merge_trees, parse_overrides, read_yaml_mapping
from jaxfin.config.choices import CHAT_TEMPLATES
from jaxfin.eval.generate import GenerationConfig, generate

ROLE_TEMPLATE = "{system}\n\nQuestion: {question}\nAnswer:"
SUMMARY_TEMPLATE = "Question: {question}\n\nThe experts answered:\n{answers}\n\nFinal answer:"


@dataclass
class Role:
    name: str = ""
    system: str = ""  # who this agent is (a system prompt)


@dataclass
class AgentsConfig:
    model: str = ""
    tokenizer: str = ""
    chat_template: str | None = None
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    roles: list[Role] = field(default_factory=list)
    summary: Role = field(default_factory=lambda: Role(name="summary"))
    role_template: str = ROLE_TEMPLATE
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


def role_prompt(cfg: AgentsConfig, role: Role, question: str):
    return _prompt(cfg, role.system, question, cfg.role_template, question=question)


def summary_prompt(cfg: AgentsConfig, question: str, answers: dict[str, str]):
    lines = "\n".join(f"{name}: {text.strip()}" for name, text in answers.items())
    user = cfg.summary_template.format(question=question, answers=lines)
    return _prompt(cfg, cfg.summary.system, user, "{system}\n\n" + cfg.summary_template, question=question,
                   answers=lines)  # fmt: skip


def run_agents(cfg: AgentsConfig, model=None, tokenizer=None, log=print) -> list[dict]:
    """[{question, answers: {role: text}, summary}] for every question; also written to cfg.output as JSON lines."""
    import jaxfin
    from jaxfin.data.tokenizer import load_tokenizer

    questions = read_questions(cfg)
    model = model or jaxfin.load_model(cfg.model)
    tokenizer = tokenizer or load_tokenizer(cfg.tokenizer or model.tokenizer_dir)
    roles = cfg.roles
    prompts = [role_prompt(cfg, r, q) for q in questions for r in roles]
    log(f"agents: {len(roles)} roles x {len(questions)} questions")
    run = {"batch_size": cfg.batch_size, "chat_template": cfg.chat_template}
    texts = generate(model, tokenizer, prompts, cfg.generation, **run)
    answers = [{r.name: texts[i * len(roles) + j] for j, r in enumerate(roles)} for i in range(len(questions))]
    log(f"agents: {len(questions)} summaries")
    summary_prompts = [summary_prompt(cfg, q, a) for q, a in zip(questions, answers)]
    summaries = generate(model, tokenizer, summary_prompts, cfg.generation, **run)
    out = [{"question": q, "answers": a, "summary": s} for q, a, s in zip(questions, answers, summaries)]
    if cfg.output:
        Path(cfg.output).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.output).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out), encoding="utf-8")
        log(f"agents: wrote {cfg.output}")
    return out


def add_agents_parser(sub) -> None:
    p = sub.add_parser(
        "agents",
        help="role-prompted agents and a summariser over one model (the finance-brain recipe)",
        description="For each question: one answer per role (a system prompt each), then a summarising answer that "
        "combines them, all generated by MODEL with batched KV-cache decoding. Config keys: see jaxfin/eval/agents.py; "
        "example: configs/agents/finance_brain.yaml. Writes JSON lines {question, answers, summary} to `output`.",
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
