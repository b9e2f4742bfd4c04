"""Cross-field checks of a Config that would otherwise fail late (inside jit) or silently. Every allowed-value list
comes from config/choices.py."""

from __future__ import annotations

import jax

from jaxfin.config import choices as C
from jaxfin.config.errors import ConfigError
from jaxfin.config.schema import Config, ModelConfig


def check_choice(value, allowed, key: str) -> None:
    """ConfigError naming `key` unless `value` is one of `allowed`."""
    if value not in allowed:
        raise ConfigError(f"'{key}' must be one of {', '.join(allowed)}; got '{value}'")


def validate(cfg: Config) -> None:
    validate_model_config(cfg.model)
    t = cfg.train
    if t.micro_batches < 1 or t.batch_size % t.micro_batches:
        raise ConfigError(
            f"'train.batch_size' ({t.batch_size}) must be a multiple of 'train.micro_batches' ({t.micro_batches})"
        )
    if t.steps < 0:
        raise ConfigError("'train.steps' must be >= 0")
    check_choice(cfg.optimizer.schedule, C.SCHEDULES, "optimizer.schedule")
    d = cfg.data
    if d.seq_len < 2:
        raise ConfigError("'data.seq_len' must be at least 2")
    check_choice(d.packing, C.PACKINGS, "data.packing")
    check_choice(d.mix_by, C.MIX_BY, "data.mix_by")
    for key, sources in (("data.sources", d.sources), ("data.dev", d.dev)):
        for i, src in enumerate(sources):
            check_choice(src.kind, C.SOURCE_KINDS, f"{key}[{i}].kind")
            check_choice(src.format, C.SOURCE_FORMATS, f"{key}[{i}].format")
            check_choice(src.chat_template, C.CHAT_TEMPLATES, f"{key}[{i}].chat_template")
            if not src.path:
                raise ConfigError(f"'{key}[{i}].path' is required")
            if not isinstance(src.domain, int) or src.domain < 0:
                raise ConfigError(f"'{key}[{i}].domain' must be a level 0, 1, 2, ... (or false/true); got "
                                  f"{src.domain!r}")  # fmt: skip
            src.domain = int(src.domain)  # false/true -> 0/1
    for level, n in d.prior_tokens.items():
        if not str(level).isdigit() or not isinstance(n, int) or n < 0:
            raise ConfigError(f"'data.prior_tokens' maps domain levels to token counts, e.g. {{'0': 1000}}; got "
                              f"{level!r}: {n!r}")  # fmt: skip
    if cfg.export_peft and not cfg.model.lora.rank:
        raise ConfigError("'export_peft' writes LoRA adapters: set model.lora.rank > 0 (or drop export_peft)")
    if cfg.export_peft and cfg.model.num_experts:
        raise ConfigError("'export_peft': PEFT has no layout for adapters on a mixture of experts' stacked experts; "
                          "use export_hf (the adapters merged into the weights)")  # fmt: skip
    o = cfg.objective
    check_choice(o.type, C.OBJECTIVES, "objective.type")
    check_choice(o.loss, C.DPO_LOSSES, "objective.loss")
    check_choice(o.reference, C.REFERENCES, "objective.reference")
    if o.type in C.RL_OBJECTIVES:
        _validate_rl(cfg)
    check_choice(cfg.checkpoint.best_mode, C.BEST_MODES, "checkpoint.best_mode")
    if cfg.checkpoint.keep < 1:
        raise ConfigError("'checkpoint.keep' must be >= 1")


def _validate_rl(cfg: Config) -> None:
    o, r = cfg.objective, cfg.objective.rollout
    check_choice(o.loss_type, C.RL_LOSS_TYPES, "objective.loss_type")
    check_choice(o.scale_rewards, C.SCALE_REWARDS, "objective.scale_rewards")
    if o.kl_estimator is not None:
        check_choice(o.kl_estimator, C.KL_ESTIMATORS, "objective.kl_estimator")
    if r.chat_template is not None:
        check_choice(r.chat_template, C.CHAT_TEMPLATES, "objective.rollout.chat_template")
    if r.num_generations < (2 if o.type == "grpo" else 1):
        raise ConfigError("'objective.rollout.num_generations' must be >= 2 for grpo (a group's advantages are "
                          "relative to its mean), >= 1 for ppo")  # fmt: skip
    if o.type == "ppo" and (
        o.ppo_epochs < 1
        or o.num_mini_batches < 1
        or cfg.train.batch_size % (o.num_mini_batches * cfg.train.micro_batches)
    ):
        raise ConfigError(f"ppo: 'objective.ppo_epochs' and 'num_mini_batches' must be >= 1, and train.batch_size "
                          f"({cfg.train.batch_size}) a multiple of num_mini_batches x train.micro_batches")  # fmt: skip
    if cfg.train.batch_size % r.num_generations:
        raise ConfigError(f"'train.batch_size' ({cfg.train.batch_size}) counts completions: it must be a multiple "
                          f"of 'objective.rollout.num_generations' ({r.num_generations})")  # fmt: skip
    if o.num_iterations < 1:
        raise ConfigError("'objective.num_iterations' must be >= 1")
    if (o.beta or 0.0) < 0 or o.epsilon <= 0 or (o.epsilon_high is not None and o.epsilon_high <= 0):
        raise ConfigError("'objective.beta' must be >= 0 and 'objective.epsilon' / 'epsilon_high' > 0")
    if not o.rewards and not o.reward_model:
        raise ConfigError(
            f"objective.type={o.type} needs 'objective.rewards', e.g. [{{type: choice, answer_field: answer}}]"
        )
    for i, rw in enumerate(o.rewards):
        check_choice(rw.type, C.REWARD_TYPES, f"objective.rewards[{i}].type")
        if rw.type == "format" and not rw.pattern:
            raise ConfigError(f"'objective.rewards[{i}]': a format reward needs 'pattern' (a regular expression)")
        if rw.type == "model" and not rw.path:
            raise ConfigError(f"'objective.rewards[{i}]': a model reward needs 'path' (a reward model folder)")
        if rw.type == "callable" and ":" not in rw.function:
            raise ConfigError(f"'objective.rewards[{i}]': a callable reward needs 'function: package.module:name'")
    names = [rw.name or rw.type for rw in o.rewards] + (["reward_model"] if o.reward_model else [])
    if len(set(names)) < len(names):
        raise ConfigError(f"'objective.rewards' log as rewards/<name>: give each a distinct 'name' (got {names})")


def validate_model_config(m: ModelConfig) -> None:
    check_choice(m.family, C.FAMILIES, "model.family")
    check_choice(m.rope_scaling.type, C.ROPE_TYPES, "model.rope_scaling.type")
    if m.sliding_window and m.sliding_window < m.max_position_embeddings:
        raise ConfigError(
            f"this model needs sliding-window attention (window {m.sliding_window} < context "
            f"{m.max_position_embeddings}), which jaxfin does not support yet; set "
            f"max_position_embeddings <= sliding_window to train within the window"
        )
    if m.num_kv_heads < 1 or m.num_heads % m.num_kv_heads:
        raise ConfigError(
            f"'model.num_heads' ({m.num_heads}) must be a multiple of 'model.num_kv_heads' ({m.num_kv_heads})"
        )
    if not m.head_dim and m.hidden_size % m.num_heads:
        raise ConfigError(f"'model.hidden_size' ({m.hidden_size}) is not divisible by num_heads ({m.num_heads})")
    if m.head_size % 2:
        raise ConfigError(f"head dimension must be even for RoPE; got {m.head_size}")
    check_choice(m.param_dtype, C.DTYPES, "model.param_dtype")
    check_choice(m.compute_dtype, ("auto", *C.DTYPES), "model.compute_dtype")
    if "float64" in (m.param_dtype, m.compute_dtype) and not jax.config.jax_enable_x64:
        raise ConfigError("model dtype float64 needs JAX's 64-bit mode: set JAX_ENABLE_X64=1 (for numerical checks)")
    check_choice(m.remat, C.REMAT, "model.remat")
    check_choice(m.attention_backend, C.ATTENTION_BACKENDS, "model.attention_backend")
    _validate_moe(m)
    _validate_lora(m)


def _validate_moe(m: ModelConfig) -> None:
    check_choice(m.moe_dispatch, C.MOE_DISPATCH, "model.moe_dispatch")
    if (m.family in C.MOE_FAMILIES) != (m.num_experts > 0):
        raise ConfigError(
            f"'model.num_experts' is {m.num_experts} for family '{m.family}': a mixture of experts "
            f"({', '.join(C.MOE_FAMILIES)}) needs num_experts >= 1, a dense family 0"
        )
    if m.num_experts and not 1 <= m.experts_per_token <= m.num_experts:
        raise ConfigError(
            f"'model.experts_per_token' must be in 1..num_experts ({m.num_experts}); got {m.experts_per_token}"
        )
    for key in ("router_aux_loss_coef", "router_z_loss_coef"):
        if getattr(m, key) < 0:
            raise ConfigError(f"'model.{key}' must be >= 0; got {getattr(m, key)}")


def _validate_lora(m: ModelConfig) -> None:
    lora = m.lora
    if not isinstance(lora.rank, int) or isinstance(lora.rank, bool) or lora.rank < 0:
        raise ConfigError(f"'model.lora.rank' must be an integer >= 0 (0 = no adapters); got {lora.rank!r}")
    if not 0.0 <= lora.dropout < 1.0:
        raise ConfigError(f"'model.lora.dropout' must be in [0, 1); got {lora.dropout}")
    if lora.rank and lora.alpha <= 0:
        raise ConfigError(f"'model.lora.alpha' must be > 0; got {lora.alpha}")
    unknown = [t for t in lora.targets if t not in C.LORA_TARGETS]
    if unknown:
        raise ConfigError(
            f"'model.lora.targets': unknown projection(s) {', '.join(map(repr, unknown))}; "
            f"choose from {', '.join(C.LORA_TARGETS)}"
        )
    if len(set(lora.targets)) != len(lora.targets):
        raise ConfigError(f"'model.lora.targets' lists a projection twice: {lora.targets}")
    if lora.rank and not lora.targets:
        raise ConfigError("'model.lora.targets' is empty while model.lora.rank > 0; name the projections to adapt")
