"""Recipes: several stages run in order, each starting from an earlier one's result (configs/recipes/).

A recipe is a YAML file with one top-level key, `recipe`:

    recipe:
      output_dir: runs/recipes/NAME        # stage S writes to OUTPUT_DIR/S
      config: ../tiny.yaml                 # the base config of every training stage (relative to this file)
      base: PATH                           # optional: the model the first stage starts from; {base: true}
      vars: {replay: 0.05}                 # optional: `${replay}` in the stages; `vars.replay=0` on the command line
      stages:
        - name: cpt                        # a training stage: base config + `set` (nested keys or dotted ones),
          set: {train.steps: 200, data.sources: [...], optimizer.warmup_ratio: 0.1}  # its own schedule
        - name: expand                     # jaxfin.vocab.expand_vocab(PREVIOUS, OUT, ...)
          vocab_expand: {tokens: tokens.txt}  # or {mine: CORPUS, num: N}, {mine_chars: [CORPUS, ...], num: N}:
                                           # any option of `jaxfin vocab expand`
        - name: dpo
          from_checkpoint: latest          # start from the previous stage's last model, not its best/
          set: {objective.type: dpo, ...}  # init_from defaults to the previous stage's model
        - name: expert_a                   # `from: STAGE` starts from that stage's model instead of the previous
          from: cpt                        # one's: stages can branch (several experts from one base)
          set: {...}
        - name: merged                     # `jaxfin merge`: a mergekit YAML (a file relative to this one, or
          merge: ../merges/ties.yaml       # inline) whose models may be {stage: cpt}, {stage: cpt, checkpoint:
                                           # latest}, {base: true}, a stage's name or a folder
        - name: moe                        # `jaxfin moe` (jaxfin/merge/moe.py): a mergekit-moe YAML, inline; a
          moe: {base_model: cpt, experts: [{source_model: expert_a, ...}, ...]}  # model that names a stage is its model
        - name: eval                       # `jaxfin eval` (jaxfin/eval/config.py), inline; a model that names a
          eval: {models: [cpt, expert_a, moe], text: [...], tasks: [fpb]}    # stage is that stage's model
          report: {experts: {expert_a: dev_a}, combined: [moe]}  # optional checks for report.md (below)
        - name: index                      # `jaxfin index build` (jaxfin/retrieval): a BM25 index of documents
          index: {docs: [private/], chunk_chars: 400}  # (any option of build_index by its keyword name)
        - name: agents                     # `jaxfin agents` (jaxfin/eval/agents.py), inline: `model`, a role's
          agents: {model: cpt, retrieval: {index: index, k: 4},  # `model` or `adapter` (a training stage's
                   roles: [{name: r, system: ..., adapter: lora_r}], questions_file: q.jsonl}  # export_peft)
                                           # and retrieval.index (an index stage) may name stages

A stage's model: a training stage's `best/` (written when `checkpoint.best_metric` is set: the dev-best model)
when it has one and the reader asks for `best` (the default; `from_checkpoint: latest` on a stage, or
`{stage: S, checkpoint: latest}` in a merge, for the last one), else its `export_hf` when it has one, else its
output dir (a run dir loads its latest checkpoint); an expansion, merge or moe stage's output dir (a Hugging Face
folder). An eval, index or agents stage has none: the stage after it starts from the model before it. An agents
stage writes OUTPUT_DIR/agents/agents.jsonl; when its questions_file rows carry `answer` (and `category`, a role's
name) it reports summary_accuracy, role_accuracy and retrieval_recall (the answer string found in the summary, in
the category's role's answer, in the passages retrieved for it).

Data intensity: each training stage's tokens by domain level (the sources' `domain: 0|1|2|...`) are carried to the
stages that start from its model (through vocabulary expansions; a merge or moe starts afresh): the stage is run
with `data.prior_tokens` set, logs `cumulative_intensity` (the share of tokens at level >= 1 since the chain
began) and `cumulative_intensity/levelL`, and its summary (recipe_state.json, `jaxfin recipe status`, report.md)
has them; `jaxfin scaling intensity --recipe OUTPUT_DIR` prints the chain as `--stage TOKENS:RATIO` would.

In a training stage, relative `export_hf` / `export_peft` paths are inside the stage's output dir, and `init_from`
(if set) wins over `from`. `output_dir=DIR` on the command line moves the recipe's root; the other command-line
overrides apply to every training stage (e.g. `train.steps=20` for a smoke run), except `eval_stages.KEY=V`, which
sets KEY of every eval stage (e.g. `eval_stages.max_docs=20`).

Resuming: OUTPUT_DIR/recipe_state.json records each stage's input hash (the values its resolved config or spec
sets away from the schema's defaults, so a jaxfin upgrade that adds a setting reruns nothing; the command-line
overrides that reach it; the hashes of the stages whose models it reads; data files by path) and
whether it finished. A rerun skips the stages done under the same inputs, resumes the first one not finished (a
training stage from its last checkpoint; an expansion, merge or moe stage is built in NAME.partial and renamed
when done), and reruns a stage whose inputs changed (its old output moved to NAME.stale) together with every
stage that reads it, and nothing else. A training stage stopped by SIGTERM ends the run. `jaxfin recipe status
DIR_OR_RECIPE` lists the stages, their state and headline metrics (given the recipe file: which would rerun).

After the stages, OUTPUT_DIR/report.md has each eval stage's table (every model on every text set and task) and,
with `report`, its checks: each expert (`experts`: model -> its own text set) has the lowest loss on its own set
among the dense models (the eval's models not in `combined`), and each `combined` model's loss on every expert's
set is at most that expert's.
"""

from jaxfin.recipe.plan import is_recipe, load_recipe
from jaxfin.recipe.run import read_state, run_recipe

__all__ = ["is_recipe", "load_recipe", "read_state", "run_recipe"]
