"""Typed run configuration: every key a YAML file or a `key=value` override may set.

Field comments are the documentation of each key (`--print-config` shows the resolved values).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass
class RopeScaling:
    """RoPE frequency scaling. `type: llama3` is Llama 3.1/3.2's scheme; `default` means none."""

    type: str = "default"
    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclass
class LoraConfig:
    """Low-rank adapters: y = x W + (alpha / rank) * dropout(x) A B on the target projections (B starts at zero)."""

    rank: int = 0  # 0 = no adapters
    alpha: float = 16.0
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])  # or gate/up/down_proj


@dataclass
class ModelConfig:
    """Architecture of a Llama-family decoder plus runtime knobs that do not change the weights."""

    family: str = "llama"  # llama | mistral | qwen2 | mixtral (mixtral: a mixture-of-experts MLP, below)
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_layers: int = 32
    num_heads: int = 32
    num_kv_heads: int = 32  # < num_heads: GQA; 1: MQA
    head_dim: int = 0  # 0 = hidden_size // num_heads
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling = field(default_factory=RopeScaling)
    max_position_embeddings: int = 4096
    tie_embeddings: bool = False
    attention_bias: bool = False  # q/k/v projection biases (Qwen2)
    sliding_window: int = 0  # 0 = none; a window shorter than the context is refused (not supported yet)
    init_std: float = 0.02
    bos_token_id: int = 1
    eos_token_id: int = 2
    pad_token_id: int = -1  # -1 = none
    num_labels: int = 0  # 0 = causal LM head; N >= 1 = a `score` head of N outputs on the last token (reward model)
    # a value head `value_head/kernel` [D, 1] beside the LM head, on the same hidden states (PPO's critic); left out
    # of Hugging Face exports (the policy is a plain causal LM)
    value_head: bool = False
    lora: LoraConfig = field(default_factory=LoraConfig)  # adapters (part of the pytree: lora_a / lora_b leaves)
    # Mixture of experts (family mixtral; jaxfin/model/moe.py): each layer's MLP is num_experts SwiGLU experts of
    # intermediate_size, and a router sends each token to experts_per_token of them.
    num_experts: int = 0  # 0 = a dense MLP
    experts_per_token: int = 2
    norm_topk_prob: bool = True  # true: softmax over the selected k (Mixtral); false: the all-expert softmax's values
    router_aux_loss_coef: float = 0.01  # load balancing, E * sum_e f_e p_e averaged over layers (Switch, HF Mixtral)
    router_z_loss_coef: float = 0.001  # mean logsumexp(router logits)^2 (ST-MoE): keeps router logits small
    # Runtime knobs: they never change the parameter pytree or the checkpoint layout.
    param_dtype: str = "float32"
    compute_dtype: str = "auto"  # auto = bfloat16 on GPU/TPU, float32 on CPU
    scan_layers: bool = True  # lax.scan over the stacked layer weights, or a Python loop over them
    remat: str = "none"  # none | full | save_matmuls | save_projections (what backward keeps; jaxfin/model/llama.py)
    attention_backend: str = "xla"  # see jaxfin.kernels.attention
    # a mixture of experts' grouped matmul (all dropless; jaxfin/model/moe.py): auto (ragged on GPU/TPU, padded on
    # CPU) | ragged (jax.lax.ragged_dot) | padded (each expert's rows in a window the size of the largest group,
    # one batched matmul) | dense
    moe_dispatch: str = "auto"

    RUNTIME_KEYS = ("param_dtype", "compute_dtype", "scan_layers", "remat", "attention_backend", "moe_dispatch")

    @property
    def head_size(self) -> int:
        return self.head_dim or self.hidden_size // self.num_heads


@dataclass
class SourceConfig:
    """One named data source (an item of `data.sources`). Paths are relative to the cwd."""

    name: str = ""
    path: str = ""  # a file, a folder, or a glob
    # auto (by extension) | jsonl | parquet | csv | text (.txt) | html (main text, trafilatura) | pdf (pypdf) |
    # hf_disk (a datasets save_to_disk folder)
    format: str = "auto"
    kind: str = "text"  # text (CPT) | chat (SFT) | pairs (preference) | completion (prompt + completion SFT)
    fields: dict[str, str] = field(default_factory=dict)  # our field -> the source's column, e.g. {text: body}
    weight: float = 1.0  # share of the mixture (by tokens or examples: data.mix_by)
    # domain level for the data intensity: 0 (or false) general replay, 1 (or true) domain (finance), 2, 3, ...
    # more specialised (e.g. a bank's private documents); intensity = the share of tokens at level >= 1
    domain: int | bool = 1
    chat_template: str = "tokenizer"  # chat kind: tokenizer (its own chat_template) | llama3 | chatml
    # [start, end]: only documents start..end-1 (0-based, in file order; end null = to the end), e.g. disjoint
    # train and dev splits of one file; [] = all
    records: list[int | None] = field(default_factory=list)


@dataclass
class JudgeConfig:
    """How an LLM judge (`quality_model.kind: judge`) is run: batched KV-cache greedy generation."""

    batch_size: int = 8  # prompts per generation batch
    max_new_tokens: int = 96  # room for {"score": N, "justification": "..."}
    max_chars: int = 2000  # characters of each document shown to the judge (its start)
    tokenizer: str = ""  # "" = the model's own tokenizer files
    chat_template: str = ""  # "" = a plain prompt (BOS + text) | tokenizer | llama3 | chatml (one user turn)


@dataclass
class QualityModelConfig:
    """Keep the documents a model scores best: the top fraction (`keep_top`) or those at or above `threshold`."""

    path: str = ""  # "" = off; kind classifier: a `jaxfin data train-quality` folder; kind judge: a model folder
    kind: str = "classifier"  # classifier (P(positive), 0..1) | judge (an LLM's 1-5 score; 0 = unparsable answer)
    keep_top: float = 0.0  # 0 < f <= 1: keep round-half-up(f * n) of a source's n scored documents; 0 = off
    threshold: float | None = None  # keep score >= threshold (set this or keep_top, not both)
    judge: JudgeConfig = field(default_factory=JudgeConfig)


@dataclass
class FilterConfig:
    """Document filters and dedup, applied in this order; each reports what it dropped."""

    min_chars: int = 1  # shorter documents are dropped ("too_short"); empty ones always are
    max_chars: int = 10_000_000  # longer ones are dropped ("too_long")
    keywords: list[str] = field(default_factory=list)  # words/phrases, or "@finance" for the built-in lexicon
    min_keyword_hits: int = 0  # 0 = keyword filter off
    quality: bool = False  # Gopher-style heuristics below
    max_symbol_ratio: float = 0.1  # ('#' + '...') per word
    min_mean_word_length: float = 3.0
    max_mean_word_length: float = 10.0
    max_duplicate_line_fraction: float = 0.3
    max_top_ngram_fraction: float = 0.2  # share of characters in the most frequent word 2-gram
    exact_dedup: bool = True
    near_dedup: bool = False  # MinHash + LSH
    near_dedup_threshold: float = 0.8  # estimated Jaccard similarity of word 5-gram shingles
    minhash_perms: int = 128
    # Model-scored quality, after every filter above (jaxfin/data/quality.py); scores in the cache folder's
    # quality_scores.jsonl
    quality_model: QualityModelConfig = field(default_factory=QualityModelConfig)


@dataclass
class StageConfig:
    """One curriculum stage: a token budget and the source weights during it."""

    tokens: int = 0  # this stage's budget; the last stage runs until train.steps
    weights: dict[str, float] = field(default_factory=dict)  # source name -> weight; {} = the sources' weights


@dataclass
class DataConfig:
    """Where tokens come from. A source given as a plain path is shorthand for `{path: PATH}`."""

    sources: list[SourceConfig] = field(default_factory=list)  # training sources
    dev: list[SourceConfig] = field(default_factory=list)  # dev sets: dev_loss (token mean) and dev_loss/<name>
    seq_len: int = 2048
    cache_dir: str = "data_cache"  # token caches, keyed by content: shared by runs and `jaxfin data prepare`
    filters: FilterConfig = field(default_factory=FilterConfig)
    max_bad_fraction: float = 0.01  # more bad records (malformed, empty, ...) than this stops with an error
    packing: str = "best_fit"  # best_fit | first_fit
    pack_window: int = 1000  # documents packed together (a larger window packs tighter)
    mix_by: str = "tokens"  # tokens | examples (documents; FinDAP style)
    stages: list[StageConfig] = field(default_factory=list)  # curriculum; [] = one stage, the sources' weights
    loader_threads: int = 2  # Grain threads gathering batches ahead of the train step
    # tokens trained on before this run by domain level ({"0": N, "1": M}): the cumulative data intensity counts
    # them; a recipe sets it for each stage from the stages its model descends from
    prior_tokens: dict[str, int] = field(default_factory=dict)


@dataclass
class OptimizerConfig:
    """AdamW with warm-up then decay; no weight decay on norms and biases."""

    lr: float = 3e-4
    schedule: str = "cosine"  # cosine | linear | constant (after warm-up)
    warmup_steps: int = -1  # -1 = use warmup_ratio
    warmup_ratio: float = 0.01
    min_lr_ratio: float = 0.1  # final lr = lr * min_lr_ratio
    weight_decay: float = 0.1
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    clip_norm: float = 1.0  # global-norm clipping; 0 = off


@dataclass
class TrainConfig:
    steps: int = 1000
    seed: int = 0
    batch_size: int = 8  # global rows of data.seq_len tokens per optimizer step
    micro_batches: int = 1  # gradient accumulation: batch_size is split into this many micro-batches
    log_every: int = 10
    dev_every: int = 100  # 0 = never
    dev_batches: int = 4  # batches of batch_size rows per dev evaluation
    patience: int = 0  # early stop after this many dev evaluations without a new best checkpoint.best_metric; 0 = off
    # Parameter path patterns to train (jaxfin/train/trainable.py); [] = all (or only the LoRA adapters when
    # model.lora.rank > 0). Frozen parameters get no optimizer state.
    trainable: list[str] = field(default_factory=list)


@dataclass
class RewardConfig:
    """One reward of an RL objective (jaxfin/rl/rewards.py); several add up with their weights."""

    # exact | numeric | choice | format (rules) | callable (package.module:function) | model (a reward model)
    type: str = ""
    weight: float = 1.0
    name: str = ""  # logged as rewards/<name>; "" = the type
    answer_field: str = "answer"  # the prompt record's field holding the gold answer (exact, numeric, choice)
    tolerance: float = 1e-4  # numeric: relative to the gold number
    choices: list[str] = field(default_factory=list)  # choice: the labels ([] = the record's `choices`)
    pattern: str = ""  # format: a regular expression the completion must match (re.search, DOTALL)
    function: str = ""  # callable: package.module:function, called as TRL calls reward functions
    path: str = ""  # model: a jaxfin `reward` run (or its export) or an HF ...ForSequenceClassification folder


@dataclass
class RolloutConfig:
    """How an RL objective samples completions: the KV-cache generator on the training mesh, current params."""

    num_generations: int = 8  # completions per prompt (GRPO's group size G); train.batch_size = prompts x G
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    stop: list[str] = field(default_factory=list)  # strings that end a completion (its tokens up to the stop kept)
    chat_template: str | None = None  # prompts as a user turn: tokenizer | llama3 | chatml; null = BOS + text
    # a string prompt is formatted with its record's fields first, e.g. "Sentiment of: {prompt}\nAnswer:"
    prompt_template: str = "{prompt}"


@dataclass
class ObjectiveConfig:
    """What the trainer minimises. Preference objectives read `pairs` sources (prompt, chosen, rejected); RL
    objectives read `prompts` sources (a prompt plus fields the rewards read, such as `answer`)."""

    type: str = "next_token"  # next_token (CPT, SFT, joint CPT+IT) | dpo | reward (Bradley-Terry) | grpo | ppo
    loss: str = "sigmoid"  # dpo: sigmoid | robust | hinge | ipo
    # dpo: the preference temperature (null = 0.1); grpo: the KL coefficient to the frozen reference (null = 0: no
    # reference held, as TRL)
    beta: float | None = None
    label_smoothing: float = 0.0  # sigmoid (conservative DPO) and robust
    reference: str = "frozen"  # dpo: frozen (copy of the initial params) | precomputed (one pass, cached) | none
    nll_weight: float = 0.0  # alpha: + alpha * NLL of the chosen completion, normalised per pair by its length
    # RL (grpo, ppo): rollouts, rewards and the clipped surrogate (jaxfin/rl/)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    rewards: list[RewardConfig] = field(default_factory=list)
    reward_model: str = ""  # shorthand for one more reward {type: model, path: DIR, name: reward_model}
    loss_type: str = "dapo"  # grpo | bnpo | dr_grpo | dapo: how per-token losses are averaged (TRL's)
    scale_rewards: str = "group"  # group | batch | none: what the advantage is divided by (a std, or nothing)
    epsilon: float = 0.2  # the ratio's clip range below 1 (and above, unless epsilon_high); PPO's cliprange
    epsilon_high: float | None = None  # GRPO: DAPO's clip-higher, e.g. 0.28
    kl_estimator: str | None = None  # k1 | k3 (Schulman's estimators of KL(policy || reference)); null = TRL's
    #                                   default: k3 for grpo, k1 for ppo
    num_iterations: int = 1  # GRPO: optimizer steps per rollout batch (the old log-probs kept from the rollout)
    # PPO (TRL's defaults): the value head (model.value_head, added when missing), a per-token KL penalty
    # -kl_coef x KL in the reward, GAE, whitened advantages, clipped policy and value losses
    kl_coef: float = 0.05
    gamma: float = 1.0
    lam: float = 0.95
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    ppo_epochs: int = 4  # passes over each rollout batch
    num_mini_batches: int = 1  # optimizer steps per pass (the rollout batch split into this many, shuffled)
    missing_eos_penalty: float | None = None  # subtracted from the score of a completion that hit max_new_tokens
    whiten_rewards: bool = False


@dataclass
class EvalDuringTrainingConfig:
    """Evaluation tasks during training (jaxfin/eval/tasks.py), logged as eval/<task>/<metric>."""

    every: int = 0  # run the tasks every N steps (and at the end); 0 = never
    tasks: list[str] = field(default_factory=list)  # task YAML paths or built-in names (fpb, fiqa_sa, fomc, ...)
    limit: int = 200  # examples per task (0 = all)
    batch_size: int = 8


@dataclass
class CheckpointConfig:
    every: int = 500  # 0 = only on exit
    keep: int = 3  # keep the last K
    async_save: bool = True
    # Keep the best model so far in OUTPUT_DIR/best (a Hugging Face dir + best.json) by this logged metric
    # (e.g. dev_loss, dev_rewards/accuracy, eval/fpb/acc); "" = off.
    best_metric: str = "dev_loss"
    best_mode: str = "min"  # min | max


@dataclass
class LogmeConfig:
    """The task `train.trainable: ["@logme:K"]` ranks layers on (LogME of each layer's mean-pooled hidden states
    against its labels; jaxfin/train/logme.py)."""

    task: str = ""  # a multiple-choice task YAML or built-in name (fpb, fiqa_sa, fomc); its gold indices are labels
    limit: int = 500  # its first N examples (0 = all)
    batch_size: int = 8  # packed rows per forward


@dataclass
class MeshConfig:
    """Device mesh axis sizes; -1 = all remaining devices."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1
    expert: int = 1  # expert parallelism (mixture of experts): experts split over it, tokens exchanged all-to-all


@dataclass
class Config:
    output_dir: str = "runs/default"
    init_from: str = ""  # HF dir or jaxfin checkpoint; its architecture replaces `model` (runtime knobs kept)
    tokenizer: str = ""  # sentencepiece .model file or HF tokenizer dir; "" = from init_from
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    eval: EvalDuringTrainingConfig = field(default_factory=EvalDuringTrainingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    logme: LogmeConfig = field(default_factory=LogmeConfig)  # layer ranking for train.trainable `@logme:K`
    export_hf: str = ""  # if set, export the final model as a Hugging Face dir here (LoRA adapters merged)
    export_peft: str = ""  # with LoRA: also write the adapters as a PEFT adapter folder here (base = init_from)


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)
