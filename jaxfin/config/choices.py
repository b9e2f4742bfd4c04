"""Every allowed-value list of the config, owned here: the validation (config/validate.py), the command line and
the code that implements each choice import these tuples instead of copying them."""

# model
FAMILIES = ("llama", "mistral", "qwen2", "mixtral")
MOE_FAMILIES = ("mixtral",)  # their MLP is a mixture of experts
MOE_DISPATCH = ("auto", "ragged", "padded", "dense")
ROPE_TYPES = ("default", "llama3")
# float64 is for numerical checks (tests of program structure without float32 rounding); it needs JAX's x64 mode
DTYPES = ("float32", "bfloat16", "float16", "float64")
# What the backward pass keeps from each layer's forward (the rest is recomputed): nothing (`full`), every matmul
# output including attention scores (`save_matmuls`), only the q/k/v/o and MLP projections (`save_projections`).
REMAT = ("none", "full", "save_matmuls", "save_projections")
# pallas: interpret mode on CPU; not chosen by auto until GPU-tested
ATTENTION_BACKENDS = ("auto", "xla", "pallas", "cudnn")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# data
SOURCE_KINDS = ("text", "chat", "pairs", "completion", "prompts")
SOURCE_FORMATS = ("auto", "jsonl", "parquet", "csv", "text", "html", "pdf", "hf_disk")
CHAT_TEMPLATES = ("tokenizer", "llama3", "chatml")
PACKINGS = ("best_fit", "first_fit")
MIX_BY = ("tokens", "examples")

# training
SCHEDULES = ("cosine", "linear", "constant")
OBJECTIVES = ("next_token", "dpo", "reward", "grpo", "ppo")
RL_OBJECTIVES = ("grpo", "ppo")
RL_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
SCALE_REWARDS = ("group", "batch", "none")
KL_ESTIMATORS = ("k1", "k3")
REWARD_TYPES = ("exact", "numeric", "choice", "format", "callable", "model")
DPO_LOSSES = ("sigmoid", "robust", "hinge", "ipo")
REFERENCES = ("frozen", "precomputed", "none")
BEST_MODES = ("min", "max")
