"""`jaxfin moe`: a mergekit-moe YAML in, a Mixtral folder out (jaxfin/merge/moe.py).

Tiny HF Llamas are made with transformers (different seeds, one BPE tokenizer). Expected tensors come from the
inputs' safetensors (experts and non-expert tensors), gates from an independent transformers oracle (the
residual stream from `output_hidden_states`, the router input from a hook on `post_attention_layernorm`, the
embedding rows for cheap_embed); with JAXFIN_MERGEKIT set, mergekit-moe 0.1.5 itself. The three-expert demo trains
three experts from one base on three finance domains of ../shared/data and reports each gate mode's routing
accuracy on held-out text."""

import csv
import dataclasses
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
import yaml
from conftest import REPO, shared_data
from tolerances import assert_close_to_scale, rounding_tol

from jaxfin.cli import main
from jaxfin.hf.safetensors_io import SafetensorsReader
from jaxfin.merge.moe import MoEConfigError, assemble_moe, load_moe_config, routing_accuracy

MERGEKIT = os.environ.get("JAXFIN_MERGEKIT")  # a mergekit-yaml executable; mergekit-moe sits next to it
LAYERS, HIDDEN = 3, 32
PROMPTS = {
    "a": (["The Federal Reserve raised interest rates", "inflation expectations remain anchored"],
          ["earnings per share rose"]),
    "b": (["Quarterly revenue grew 12 percent", "the company cut its dividend"], []),
    "c": (["What is 12 plus 30 divided by 3?", "compute the ratio of debt to equity", "2019 | 2018"],
          ["The committee voted"]),
}  # fmt: skip
# Gates are unit rows from float32 forwards that sum D terms per matmul through <= 3 layers (about 4 chained
# reductions per layer), then a mean, a difference and a normalisation: jaxfin's and transformers' float32
# orders differ by rounding alone, relative to the rows' max-abs.
GATE_TOL = rounding_tol(np.float32, 2 * HIDDEN, depth=4 * LAYERS + 3)


def _texts(lo: int, hi: int) -> list[str]:
    lines = (REPO / "demo_data/finance_train.jsonl").read_text().splitlines()[lo:hi]
    return [json.loads(line)["text"] for line in lines]


def _bpe(texts: list[str], size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=size, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts, trainer)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")


def _llama(d: Path, tok, seed: int, layers: int = LAYERS, hidden: int = HIDDEN, intermediate: int = 64, **kw) -> Path:
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, bos_token_id=0, eos_token_id=1, tie_word_embeddings=False, **kw,
    )  # fmt: skip
    m = transformers.LlamaForCausalLM(cfg)
    with torch.no_grad():  # norm weights away from 1, so the post-norm router input differs from the residual
        for name, p in m.named_parameters():
            if "norm" in name:
                p.copy_(torch.rand_like(p) * 1.5 + 0.25)
    m.save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("moe_models")
    tok = _bpe(_texts(0, 200), 300)
    out = {name: _llama(root / name, tok, seed) for seed, name in enumerate(["base", "a", "b", "c"])}
    out["wide"] = _llama(root / "wide", tok, 7, hidden=48)
    out["theta"] = _llama(root / "theta", tok, 8, rope_theta=500000.0)
    return out


def _cfg(models, gate_mode="hidden", **extra) -> dict:
    experts = []
    for name in ("a", "b", "c"):
        pos, neg = PROMPTS[name]
        e = {"source_model": str(models[name]), "positive_prompts": pos}
        if neg:
            e["negative_prompts"] = neg
        experts.append(e)
    return {"base_model": str(models["base"]), "gate_mode": gate_mode, "dtype": "float32", "experts_per_token": 2,
            "experts": experts, **extra}  # fmt: skip


def _write(d: Path, cfg: dict | str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    f = d / "moe.yml"
    f.write_text(cfg if isinstance(cfg, str) else yaml.safe_dump(cfg, sort_keys=False))
    return f


def _sd(d) -> dict[str, np.ndarray]:
    r = SafetensorsReader(d)
    return {n: r.read(n) for n in r.names()}


def _experts(sd: dict, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(router [E, D], w1 [E, F, D], w2 [E, D, F], w3 [E, F, D]) of layer i, from either tensor layout."""
    if f"model.layers.{i}.mlp.experts.gate_up_proj" in sd:
        gu = sd[f"model.layers.{i}.mlp.experts.gate_up_proj"]
        f = gu.shape[1] // 2
        return (
            sd[f"model.layers.{i}.mlp.gate.weight"],
            gu[:, :f],
            sd[f"model.layers.{i}.mlp.experts.down_proj"],
            gu[:, f:],
        )
    p = f"model.layers.{i}.block_sparse_moe"
    n = sd[f"{p}.gate.weight"].shape[0]
    w = [np.stack([sd[f"{p}.experts.{e}.{k}.weight"] for e in range(n)]) for k in ("w1", "w2", "w3")]
    return (sd[f"{p}.gate.weight"], *w)


def _gates(d) -> np.ndarray:
    sd = _sd(d)
    return np.stack([_experts(sd, i)[0] for i in range(LAYERS)]).astype(np.float64)


# ------------------------------------------------------------------------------------------- (a) the output


@pytest.mark.parametrize("layout", ["per_expert", "fused"])
def test_output_loads_and_holds_the_experts(models, tmp_path, layout):
    """Both layouts load in transformers' MixtralForCausalLM and in jaxfin (same logits); each expert is its source's
    MLP bit for bit; every other tensor is the base's; config.json is a Mixtral with E experts and k per token; the
    base's tokenizer comes along. jaxfin's per-token router choice (what routing_accuracy counts) is transformers'."""
    from jaxfin.hf.convert import load_hf
    from jaxfin.merge.moe import trace

    out = tmp_path / "out"
    summary = assemble_moe(_write(tmp_path, _cfg(models)), out, layout=layout)
    assert summary["layers"] == LAYERS and summary["experts_per_token"] == 2
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["architectures"], cfg["model_type"]) == (["MixtralForCausalLM"], "mixtral")
    assert (cfg["num_local_experts"], cfg["num_experts_per_tok"]) == (3, 2)
    so, sb = _sd(out), _sd(models["base"])
    srcs = [_sd(models[n]) for n in ("a", "b", "c")]
    for i in range(LAYERS):
        _, w1, w2, w3 = _experts(so, i)
        for e, s in enumerate(srcs):
            for got, proj in ((w1, "gate_proj"), (w2, "down_proj"), (w3, "up_proj")):
                np.testing.assert_array_equal(got[e], s[f"model.layers.{i}.mlp.{proj}.weight"])
    dense = [n for n in sb if ".mlp." not in n]
    assert set(dense) == {n for n in so if ".mlp." not in n and "block_sparse_moe" not in n}
    for n in dense:
        np.testing.assert_array_equal(so[n], sb[n], err_msg=n)
    tok = transformers.AutoTokenizer.from_pretrained(out)
    assert tok.get_vocab() == transformers.AutoTokenizer.from_pretrained(models["base"]).get_vocab()

    hf = transformers.MixtralForCausalLM.from_pretrained(out).eval()
    ids = tok("<s>" + _texts(300, 301)[0][:300], add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        res = hf(ids, output_router_logits=True)
    model = load_hf(out, compute_dtype="float32")
    assert model.config.num_experts == 3
    logits = np.asarray(model.logits(ids.numpy()))
    want = res.logits.float().numpy()
    assert_close_to_scale(logits, want, rounding_tol(np.float32, 64, depth=4 * LAYERS + 2))
    top1 = trace(model, [ids[0].tolist()])["top1"][0]  # [L, n]
    hf_top1 = np.stack([r.reshape(-1, 3).float().numpy().argmax(-1) for r in res.router_logits])
    assert (top1 == hf_top1).mean() > 0.99  # the same choices, bar near-ties of two logits


def test_non_expert_average_and_bf16(models, tmp_path):
    """`non_expert: average` (BTX): every non-MLP tensor is the experts' float32 mean; dtype bfloat16 writes every
    tensor as bfloat16 (experts: their float32 weights rounded to bfloat16, ml_dtypes' rounding)."""
    import ml_dtypes

    out = tmp_path / "avg"
    assemble_moe(_write(tmp_path, _cfg(models, "cheap_embed", non_expert="average", dtype="bfloat16")), out)
    so = _sd(out)
    assert {x.dtype for x in so.values()} == {np.dtype(ml_dtypes.bfloat16)}
    srcs = [_sd(models[n]) for n in ("a", "b", "c")]
    for n in (n for n in srcs[0] if ".mlp." not in n):
        want = ((srcs[0][n] + srcs[1][n] + srcs[2][n]) / 3).astype(ml_dtypes.bfloat16)
        np.testing.assert_array_equal(so[n], want, err_msg=n)
    _, w1, _, _ = _experts(so, 1)
    np.testing.assert_array_equal(w1[2], srcs[2]["model.layers.1.mlp.gate_proj.weight"].astype(ml_dtypes.bfloat16))
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    transformers.AutoModelForCausalLM.from_pretrained(out)


def test_cli_relative_paths_and_print_plan(models, tmp_path, capsys):
    """`jaxfin moe` resolves models against the YAML's folder and prints a JSON summary; --print-plan parses only."""
    cfg = _cfg(models, "random")
    for e in cfg["experts"]:
        e["source_model"] = os.path.relpath(e["source_model"], tmp_path / "y")
    f = _write(tmp_path / "y", cfg)
    assert main(["moe", str(f), str(tmp_path / "out"), "--seed", "3", "--max-shard-size", "20KB"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["gate_mode"] == "random" and (tmp_path / "out/model.safetensors.index.json").is_file()
    assert main(["moe", str(f), str(tmp_path / "x"), "--print-plan"]) == 0
    assert json.loads(capsys.readouterr().out)["experts_per_token"] == 2
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------------- (b) the gates


def _oracle_gates(models, mode: str) -> np.ndarray:
    """[L, E, D] float64 from transformers in float32, one prompt at a time (mergekit's tokenization: BOS string +
    prompt): hidden = output_hidden_states[i] (the residual stream entering layer i) at the last token;
    hidden_normed = post_attention_layernorm's output at the last token (a hook); cheap_embed = the normalised sum
    of the prompts' embedding rows. Per expert: mean(positive) - mean(negative), normalised."""
    tok = transformers.AutoTokenizer.from_pretrained(models["base"])
    hf = transformers.AutoModelForCausalLM.from_pretrained(models["base"], dtype=torch.float32).eval()
    embed = hf.model.embed_tokens.weight.detach().double().numpy()
    captured = {}
    for i, layer in enumerate(hf.model.layers):
        layer.post_attention_layernorm.register_forward_hook(lambda m, a, y, i=i: captured.__setitem__(i, y))

    def per_prompt(p):
        ids = tok(tok.bos_token + p, add_special_tokens=False, return_tensors="pt")["input_ids"]
        if mode == "cheap_embed":
            return embed[ids[0].numpy()].sum(0)
        with torch.no_grad():
            out = hf(ids, output_hidden_states=True)
        if mode == "hidden":
            return np.stack([h[0, -1].double().numpy() for h in out.hidden_states[:-1]])
        return np.stack([captured[i][0, -1].double().numpy() for i in range(LAYERS)])

    def unit(v):
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    def vec(prompts):
        if mode == "cheap_embed":
            return np.broadcast_to(unit(sum(per_prompt(p) for p in prompts)), (LAYERS, HIDDEN))
        return np.mean([per_prompt(p) for p in prompts], axis=0)

    rows = []
    for name in ("a", "b", "c"):
        pos, neg = PROMPTS[name]
        rows.append(unit(vec(pos) - vec(neg)) if neg else unit(vec(pos)))
    return np.stack(rows, axis=1)


@pytest.mark.parametrize("mode", ["hidden", "hidden_normed", "cheap_embed"])
def test_gates_match_the_transformers_oracle(models, tmp_path, mode):
    out = tmp_path / mode
    assemble_moe(_write(tmp_path, _cfg(models, mode)), out)
    got, want = _gates(out), _oracle_gates(models, mode)
    assert_close_to_scale(got, want, GATE_TOL)
    np.testing.assert_allclose(np.linalg.norm(got, axis=-1), 1.0, rtol=1e-6)
    if mode == "hidden_normed":  # really another space than the residual stream
        assert np.abs(got - _oracle_gates(models, "hidden")).max() > 0.05


def test_random_gates_are_seeded_and_scaled_to_the_router_input(models, tmp_path):
    """`random`: rows of norm ||post_attention_layernorm_i|| (the router input's RMS norm), the same for one seed,
    different for another; `uniform_random`: within +-1/sqrt(D)."""
    runs = {}
    for seed in (0, 0, 1):
        out = tmp_path / f"r{seed}_{len(runs)}"
        assemble_moe(_write(tmp_path, _cfg(models, "random")), out, seed=seed)
        runs[out.name] = _gates(out)
    a, b, c = runs.values()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    base = _sd(models["base"])
    nu = np.stack([np.linalg.norm(base[f"model.layers.{i}.post_attention_layernorm.weight"]) for i in range(LAYERS)])
    np.testing.assert_allclose(np.linalg.norm(a, axis=-1), np.broadcast_to(nu[:, None], (LAYERS, 3)), rtol=1e-5)
    out = tmp_path / "uniform"
    assemble_moe(_write(tmp_path, _cfg(models, "uniform_random")), out)
    g = _gates(out)
    assert np.abs(g).max() <= 1 / np.sqrt(HIDDEN) and g.std() > 0.05


# ------------------------------------------------------------------------------------------- (c) mergekit-moe


@pytest.mark.skipif(not MERGEKIT, reason="set JAXFIN_MERGEKIT to a mergekit-yaml executable (mergekit-moe next to it)")
@pytest.mark.parametrize("mode", ["hidden", "cheap_embed"])
def test_matches_mergekit_moe(models, tmp_path, mode):
    """The same YAML through mergekit-moe 0.1.5: the same tensor names (fused layout) and config; every expert and
    non-expert tensor bit for bit. cheap_embed gates (float32 in both) to 1e-6. mergekit's hidden gates come
    from the base run in bfloat16 (its get_gate_params loads it so): jaxfin's float32 gates are within bfloat16
    rounding of them, nearer the float32 transformers oracle than mergekit's; with hidden_dtype bfloat16 (the
    forward in bfloat16 and mergekit's bfloat16 mean / difference / norm) layer 0 (the embeddings: no forward) is
    equal and the deeper layers within two bfloat16 steps (2^-8 each below 1); and mergekit's own code with the base
    loaded in float32 (its one bfloat16) gives jaxfin's hidden gates to 1e-4."""
    mk_moe = Path(MERGEKIT).with_name("mergekit-moe")
    f = _write(tmp_path, _cfg(models, mode))
    r = subprocess.run([str(mk_moe), str(f), str(tmp_path / "mk")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assemble_moe(f, tmp_path / "jx", layout="fused")
    mk, jx = _sd(tmp_path / "mk"), _sd(tmp_path / "jx")
    assert set(mk) == set(jx)
    gates = {n for n in mk if n.endswith("mlp.gate.weight")}
    for n in set(mk) - gates:
        np.testing.assert_array_equal(jx[n], mk[n], err_msg=n)
    g_mk = np.stack([mk[f"model.layers.{i}.mlp.gate.weight"] for i in range(LAYERS)]).astype(np.float64)
    g_jx = _gates(tmp_path / "jx")
    ca, cb = (json.loads((tmp_path / d / "config.json").read_text()) for d in ("jx", "mk"))
    for k in ("model_type", "num_local_experts", "num_experts_per_tok", "num_hidden_layers", "hidden_size", "dtype"):
        assert ca[k] == cb[k], k
    diff = np.abs(g_jx - g_mk).max(axis=(1, 2))
    print(f"{mode}: max |jaxfin - mergekit| per layer {diff}")
    if mode == "cheap_embed":
        assert diff.max() < 1e-6
        return
    oracle = _oracle_gates(models, "hidden")
    assert np.abs(g_jx - oracle).max() < 1e-5 < np.abs(g_mk - oracle).max()
    assert diff.max() < 2**-6  # a few bfloat16 roundings of unit rows
    assemble_moe(f, tmp_path / "jx_bf16", layout="fused", hidden_dtype="bfloat16")
    diff16 = np.abs(_gates(tmp_path / "jx_bf16") - g_mk).max(axis=(1, 2))
    print(f"hidden_dtype bfloat16: max |jaxfin - mergekit| per layer {diff16}")
    assert diff16[0] == 0 and diff16.max() <= 2**-7
    # mergekit's own code with the base loaded in float32 (its only bfloat16): the gates to 1e-4
    r = subprocess.run([str(mk_moe.with_name("python")), "-c", MERGEKIT_MOE_FLOAT32, str(f), str(tmp_path / "mk32")],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    g_mk32 = np.stack([_sd(tmp_path / "mk32")[f"model.layers.{i}.mlp.gate.weight"] for i in range(LAYERS)])
    diff32 = np.abs(g_jx - g_mk32.astype(np.float64)).max(axis=(1, 2))
    print(f"mergekit with a float32 base: max |jaxfin - mergekit| per layer {diff32}")
    assert diff32.max() < 1e-4


# mergekit-moe's main with the one change: get_gate_params loads the base model in float32, not bfloat16
MERGEKIT_MOE_FLOAT32 = """
import sys, torch, transformers, mergekit.moe.router as router
class Float32:
    @staticmethod
    def from_pretrained(*args, **kwargs):
        return transformers.AutoModelForCausalLM.from_pretrained(*args, **{**kwargs, "torch_dtype": torch.float32})
router.AutoModelForCausalLM = Float32
from mergekit.scripts.moe import main
sys.argv[0] = "mergekit-moe"
sys.exit(main())
"""


# ------------------------------------------------------------------------------------------- (d) mistakes


def _error(models, tmp_path, cfg) -> str:
    with pytest.raises(MoEConfigError) as e:
        assemble_moe(_write(tmp_path, cfg), tmp_path / "never")
    assert not (tmp_path / "never").exists()
    return str(e.value)


def test_experts_of_another_architecture_refused(models, tmp_path, capsys):
    cfg = _cfg(models)
    cfg["experts"][1]["source_model"] = str(models["wide"])
    msg = _error(models, tmp_path, cfg)
    assert "hidden_size" in msg and str(models["base"]) in msg and str(models["wide"]) in msg
    cfg["experts"][1]["source_model"] = str(models["theta"])
    msg = _error(models, tmp_path, cfg)
    assert "rope_theta" in msg and str(models["theta"]) in msg
    assert main(["moe", str(tmp_path / "moe.yml"), str(tmp_path / "o")]) == 2  # one line, no traceback
    assert "experts differ in architecture: rope_theta" in capsys.readouterr().err


@pytest.mark.parametrize(
    "change, match",
    [
        ({"gate_mode": "learned"}, r"gate_mode: unknown gate_mode 'learned'; known: hidden"),
        ({"shared_experts": [{"source_model": "x"}]}, r"shared_experts: .*Mixtral only.*Qwen2-MoE"),
        ({"architecture": "qwen"}, r"architecture: 'qwen': only Mixtral output is supported"),
        ({"non_expert": "mean"}, r"non_expert: 'mean' is not one of base, average"),
        ({"experts_per_token": 4}, r"3 experts but experts_per_token 4"),
        ({"dtype": "int8"}, r"dtype: 'int8'"),
        ({"gate_modes": "hidden"}, r"unknown key\(s\) \['gate_modes'\]"),
    ],
)
def test_config_mistakes_name_the_key(models, tmp_path, change, match):
    with pytest.raises(MoEConfigError, match=match):
        load_moe_config(_write(tmp_path, _cfg(models) | change))


def test_prompt_checks_as_mergekit(models, tmp_path):
    cfg = _cfg(models)
    del cfg["experts"][1]["positive_prompts"]
    with pytest.raises(MoEConfigError, match=r"experts\[1\].positive_prompts: gate_mode hidden needs prompts"):
        load_moe_config(_write(tmp_path, cfg))
    load_moe_config(_write(tmp_path, cfg | {"gate_mode": "random"}))  # random needs none
    cfg = _cfg(models)
    for e in cfg["experts"]:
        e.update(positive_prompts=["same"], negative_prompts=[])
    with pytest.raises(MoEConfigError, match="identical for all experts"):
        load_moe_config(_write(tmp_path, cfg))
    cfg = _cfg(models)
    for e in cfg["experts"]:
        e["source_model"] = str(models["a"])
    with pytest.raises(MoEConfigError, match="i-understand-this-is-not-useful-without-training"):
        load_moe_config(_write(tmp_path, cfg))
    load_moe_config(tmp_path / "moe.yml", allow_all_same=True)
    cfg["experts"][0]["source_model"] = "no/such-model"
    with pytest.raises(FileNotFoundError, match="no/such-model"):
        load_moe_config(_write(tmp_path, cfg))


# ------------------------------------------------------------------------------------------- (e) the demo


def _csv(path: Path) -> list[str]:
    with path.open(newline="") as fh:
        return [r["sentence"] for r in csv.DictReader(fh)]


def _tatqa(path: Path) -> list[str]:
    """Each question with the first table row that holds values (numeric-reasoning text)."""
    out = []
    for doc in json.loads(path.read_text()):
        table = doc["table"]["table"]
        row = next((r for r in table[1:] if any(c.strip() for c in r[1:])), table[0])
        out += [q["question"] + " " + " | ".join(c.strip() for c in row if c.strip()) for q in doc["questions"]]
    return out


def _domains() -> tuple[list[list[str]], list[list[str]]]:
    """(train, held-out) texts of macro (FOMC statements, minutes and speeches), micro (Financial PhraseBank
    company news) and quant (TAT-QA questions over financial tables), shuffled with a fixed seed."""
    d = shared_data()
    train = [_csv(d / "fomc_hawkish_dovish/lab_manual_combine_train_seed5768.csv"),
             _csv(d / "financial_phrasebank/gtfintechlab_allagree_train_seed5768.csv"),
             _tatqa(d / "tatqa/tatqa_dataset_dev.json")]  # fmt: skip
    test = [_csv(d / "fomc_hawkish_dovish/lab_manual_combine_test_seed5768.csv"),
            _csv(d / "financial_phrasebank/gtfintechlab_allagree_test_seed5768.csv"),
            _tatqa(d / "tatqa/tatqa_dataset_test_gold.json")]  # fmt: skip
    rng = np.random.default_rng(0)
    return [[x[i] for i in rng.permutation(len(x))] for x in train], [
        [x[i] for i in rng.permutation(len(x))] for x in test
    ]


def _train_experts(root: Path, train: list[list[str]]) -> dict[str, Path]:
    """A tiny Llama trained briefly on all three domains (the base), then three copies trained on one domain
    each (jaxfin's forward, Adam, next-token loss on BOS + text, 64 tokens)."""
    import jax
    import jax.numpy as jnp
    import optax

    from jaxfin.hf.convert import load_hf, save_hf
    from jaxfin.model import forward

    tok = _bpe([t for x in train for t in x[:600]], 512)
    _llama(root / "init", tok, 0, layers=2, hidden=64, intermediate=128)
    model = load_hf(root / "init", compute_dtype="float32")
    opt = optax.adam(3e-3)
    seq, batch = 64, 16

    @jax.jit
    def step(p, o, x, m):
        def loss(p):
            logp = jax.nn.log_softmax(forward(p, model.config, x)[:, :-1])
            picked = jnp.take_along_axis(logp, x[:, 1:, None], -1)[..., 0]
            return -(picked * m[:, 1:]).sum() / m[:, 1:].sum()

        g = jax.grad(loss)(p)
        u, o = opt.update(g, o, p)
        return optax.apply_updates(p, u), o

    def train_on(p, texts, steps, seed):
        ids = [[0] + tok(t, add_special_tokens=False)["input_ids"][: seq - 1] for t in texts]
        rng, o = np.random.default_rng(seed), opt.init(p)
        for _ in range(steps):
            x, m = np.zeros((batch, seq), np.int32), np.zeros((batch, seq), np.float32)
            for r, i in enumerate(rng.integers(0, len(ids), batch)):
                x[r, : len(ids[i])], m[r, : len(ids[i])] = ids[i], 1
            p, o = step(p, o, x, m)
        return p

    out = {"base": root / "base"}
    base = train_on(model.params, [t for x in train for t in x[40:1000]], 150, 0)
    save_hf(dataclasses.replace(model, params=base), out["base"])
    for e, name in enumerate(("macro", "micro", "quant")):
        out[name] = root / name
        save_hf(dataclasses.replace(model, params=train_on(base, train[e][40:], 80, e + 1)), out[name])
    return out


DEMO_MODES = ("hidden", "hidden_normed", "hidden_avg", "cheap_embed", "random", "uniform_random")


def test_three_expert_demo_routing_accuracy(tmp_path):
    """Three experts (macro / micro / quant) from one base; 16 training sentences of each domain as its positive
    prompts; 30 held-out texts per domain. Prints each gate mode's routing accuracy (routing_accuracy: top-1
    router choice over tokens and layers, and at each text's last token; chance 1/3). The prompt-built gates must
    route held-out text to its own expert clearly more often than chance; the random ones need not."""
    t0 = time.perf_counter()
    train, test = _domains()
    paths = _train_experts(tmp_path, train)
    held_out = [x[:30] for x in test]
    results = {}
    for mode in DEMO_MODES:
        cfg = {"base_model": str(paths["base"]), "gate_mode": mode, "experts_per_token": 2,
               "experts": [{"source_model": str(paths[n]), "positive_prompts": train[e][:16]}
                           for e, n in enumerate(("macro", "micro", "quant"))]}  # fmt: skip
        out = tmp_path / f"moe_{mode}"
        assemble_moe(_write(tmp_path / mode, cfg), out)
        results[mode] = routing_accuracy(out, held_out)
    print(f"\nrouting accuracy on held-out domain text (chance 1/3; {time.perf_counter() - t0:.0f} s):")
    for mode, r in results.items():
        per = ", ".join(f"{x:.2f}" for x in r["per_expert"])
        print(f"  {mode:15s} token {r['token']:.3f}  last token {r['last_token']:.3f}  per expert [{per}]")
    for mode in ("hidden", "hidden_normed", "cheap_embed"):
        assert results[mode]["token"] > 0.38, (mode, results[mode])
    for mode in ("hidden", "hidden_normed"):
        assert results[mode]["last_token"] > 0.6, (mode, results[mode])
    assert all(0.0 <= r["token"] <= 1.0 for r in results.values())
