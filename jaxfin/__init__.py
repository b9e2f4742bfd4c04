"""jaxfin: a pure-JAX stack for adapting Llama-family models to finance.

The package is built in layers; a module imports only from its own part or from parts below it (at module
level and inside functions alike; tests/test_architecture.py checks it):

    config                       the YAML schema, allowed values (choices.py) and validation
    kernels, parallel            attention kernels; mesh, sharding rules, multi-host helpers
    model                        parameter tables, init, forward, LoRA, the loss on logits; `Model` (data only)
    data                         sources, filters, tokenization caches, packing, the loader
    hf                           Hugging Face config / safetensors / tokenizer / PEFT conversion
    store                        models on disk: load_model, save_model, run checkpoints, `jaxfin convert`
    eval, retrieval              text metrics, finance tasks, generation, agents, the quality judge: functions of a
                                 Model; the BM25 passage index the agents read
    rl                           RL's losses (TRL parity), rewards and reward models, prompts, rollouts on a mesh
    train                        train state, steps, objectives, the loop and its hooks (may run eval tasks)
    merge, scaling, vocab,       parameter-space merging, scaling laws, vocabulary expansion, benchmarks,
    bench, compile               ahead-of-time compilation for absent accelerators (`jaxfin compile`)
    recipe, demo, cli, launch    multi-stage recipes, the demo, the `jaxfin` command, `python -m jaxfin.launch`

Why this order: eval sits below train because training evaluates tasks as it runs, and nothing in eval needs
the trainer; rl sits between them because the trainer runs RL objectives and rollouts use eval's generator;
store sits above hf because a model dir may be either format; the package root only re-exports
the store's `load_model` / `save_model`.
"""

from jaxfin.model import Model
from jaxfin.store import load_model, save_model

__version__ = "0.1.0"
__all__ = ["Model", "load_model", "save_model"]
