"""`jaxfin merge`: mergekit YAML in, Hugging Face folder out, streamed tensor by tensor.

Tiny HF Llamas are made here with transformers (different seeds). Expected tensors come from the inputs'
transformers state dicts: a numpy weighted mean written out for linear (and its gradient / filter parameters),
the TIES formula written out in float64 for TIES, the source layer for passthrough slices, and mergekit's
embed.py rule written out for the union vocabulary; with JAXFIN_MERGEKIT set, mergekit-yaml itself."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
import yaml
from conftest import REPO
from tolerances import assert_close_to_scale, rounding_tol

from jaxfin.cli import main
from jaxfin.merge.config import MergeConfigError, evaluate_setting, load_merge_config, parse_merge_config
from jaxfin.merge.engine import run_merge

# An entry-by-entry merge of <= 3 float32 tensors takes <= 6 chained roundings (θ−b, ×w, Σ, ÷Σw, ×λ, +b), each <= u
# of the terms' size: rounding_tol(3 terms, depth 6) = 125u bounds even that worst case (18u), relative to max-abs.
ELEMENTWISE = rounding_tol(np.float32, 3, depth=6)


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


def _llama(d: Path, tok, seed: int, layers: int = 3, hidden: int = 32) -> Path:
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=64, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, bos_token_id=0, eos_token_id=1, tie_word_embeddings=False,
    )  # fmt: skip
    transformers.LlamaForCausalLM(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def _sd(d) -> dict[str, np.ndarray]:
    m = transformers.AutoModelForCausalLM.from_pretrained(d)
    return {k: v.detach().float().numpy() for k, v in m.state_dict().items()}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("merge_models")
    tok = _bpe(_texts(0, 200), 300)
    out = {name: _llama(root / name, tok, seed) for seed, name in enumerate(["base", "a", "b"])}
    out["wide"] = _llama(root / "wide", tok, 7, hidden=48)
    out["tok2"] = _llama(root / "tok2", _bpe(_texts(1000, 1200), 320), 9)
    return out


def _write(d: Path, cfg: dict | str) -> Path:
    f = d / "merge.yaml"
    f.write_text(cfg if isinstance(cfg, str) else yaml.safe_dump(cfg))
    return f


def test_evaluate_setting_matches_mergekit_rule():
    assert evaluate_setting("x", [0.0, 1.0, 0.0], 0.25) == pytest.approx(0.5)
    assert evaluate_setting("x", [1.0, 0.8, 0.5], 0.75) == pytest.approx(0.65)
    assert evaluate_setting("x", [2.0], 0.7) == 2.0
    conds = [{"filter": "self_attn", "value": 0.1}, {"filter": None, "value": [0.0, 1.0]}]
    assert evaluate_setting("model.layers.0.self_attn.q_proj.weight", conds, 0.5) == 0.1
    assert evaluate_setting("model.layers.0.mlp.up_proj.weight", conds, 0.5) == pytest.approx(0.5)
    assert evaluate_setting("x", [{"filter": "mlp", "value": 1}], 0.5) is None


def test_linear_cli_end_to_end_loads_in_transformers(models, tmp_path):
    """Linear of a, b (b given as a jaxfin checkpoint): every tensor is the weighted mean; loads in transformers."""
    assert main(["convert", str(models["b"]), str(tmp_path / "b_jaxfin")]) == 0
    cfg = {
        "models": [
            {"model": str(models["a"]), "parameters": {"weight": 0.3}},
            {"model": str(tmp_path / "b_jaxfin"), "parameters": {"weight": 0.5}},
        ],
        "merge_method": "linear",
        "dtype": "float32",
    }
    out = tmp_path / "out"
    assert main(["merge", str(_write(tmp_path, cfg)), str(out), "--max-shard-size", "40KB"]) == 0
    assert (out / "model.safetensors.index.json").is_file()  # sharded
    sa, sb, so = _sd(models["a"]), _sd(models["b"]), _sd(out)
    assert set(so) == set(sa)
    for k in sa:
        assert_close_to_scale(so[k], (0.3 * sa[k] + 0.5 * sb[k]) / 0.8, ELEMENTWISE, err_msg=k)
    tok = transformers.AutoTokenizer.from_pretrained(out)
    assert tok.get_vocab() == transformers.AutoTokenizer.from_pretrained(models["a"]).get_vocab()


def _ties_oracle(thetas, base, weights, densities):
    """TIES as the paper / mergekit 0.1.5 define it, in float64 (normalize, λ = 1, w_i > 0): δ_i = θ_i − b (the one
    float32 subtraction, as the inputs are float32), τ_i = δ_i kept on its top int(d_i·n) entries by |δ_i|, the
    elected sign s = sgn(Σ w_i τ_i) (0 counts as +), then b + Σ m_i w_i τ_i / Σ m_i w_i over m_i = [sgn(τ_i) = s]
    (a zero divisor is 1). Returns the merge, the merge with the other sign, where the election is too close to
    call in float32, and where an elected-against nonzero τ_i was dropped."""
    taus = []
    for theta, d in zip(thetas, densities):
        delta = (theta - base).astype(np.float64).ravel()
        k = int(d * delta.size)
        order = np.argsort(-np.abs(delta), kind="stable")
        a = np.abs(delta[order])
        # the premise of a well-defined top-k: no two different entries tie across the boundary (zeros aside)
        assert k == delta.size or a[k - 1] > a[k] or a[k - 1] == 0
        tau = np.zeros_like(delta)
        tau[order[:k]] = delta[order[:k]]
        taus.append(tau.reshape(base.shape))
    wt = [w * t for w, t in zip(weights, taus)]
    total = sum(wt)
    # a float32 election sums float32 products w_i·τ_i: <= 2 roundings of u each on every term, 1 on the sum
    close = np.abs(total) <= 3 * float(np.finfo(np.float32).eps / 2) * sum(np.abs(x) for x in wt)

    def merged(s):
        masks = [np.sign(t) == s for t in taus]
        num = sum(m * x for m, x in zip(masks, wt))
        den = sum(m * w for m, w in zip(masks, weights))
        return base.astype(np.float64) + num / np.where(den == 0, 1.0, den), masks

    s = np.where(total >= 0, 1.0, -1.0)
    (want, masks), (other, _) = merged(s), merged(-s)
    dropped = sum((~m) & (t != 0) for m, t in zip(masks, taus))
    return want, other, close & (total != 0), dropped


def test_ties_per_tensor_matches_the_formula(models, tmp_path):
    """TIES of a, b over base with a density gradient for b: every tensor is the float64 TIES formula written out
    above (trim, sign election, disjoint mean), within float32 rounding; the election does drop entries."""
    cfg = textwrap.dedent(f"""\
        models:
          - model: {models["a"]}
            parameters: {{density: 0.5, weight: 0.7}}
          - model: {models["b"]}
            parameters: {{density: [0.3, 0.9], weight: 0.4}}
        merge_method: ties
        base_model: {models["base"]}
        parameters:
          normalize: true
          int8_mask: true
        dtype: float32
        """)
    out = tmp_path / "out"
    summary = run_merge(load_merge_config(_write(tmp_path, cfg)), out)
    assert summary["layers"] == 3
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_hidden_layers == 3
    s0, sa, sb, so = _sd(models["base"]), _sd(models["a"]), _sd(models["b"]), _sd(out)
    dropped = undecided = 0
    for k in so:
        t = int(k.split(".")[2]) / 2 if k.startswith("model.layers.") else 0.0  # t = 0 off the layers (mergekit)
        want, other, close, drop = _ties_oracle([sa[k], sb[k]], s0[k], [0.7, 0.4], [0.5, 0.3 + 0.6 * t])
        # where Σ w τ is within float32 rounding of 0 either sign is a right election: take the nearer
        want = np.where(close & (np.abs(so[k] - other) < np.abs(so[k] - want)), other, want)
        # engine in float32: ×w, Σ of 2, ÷Σ m w, +b on float32 deltas: <= 6 chained roundings, ELEMENTWISE
        assert_close_to_scale(so[k], want, ELEMENTWISE, err_msg=k)
        dropped, undecided = dropped + int(drop.sum()), undecided + int(close.sum())
    assert dropped > 1000  # the sign election really removed entries (else the test would not see it)
    assert undecided < 10  # and it is decided by more than rounding almost everywhere
    assert not np.allclose(so["model.layers.0.mlp.up_proj.weight"], sa["model.layers.0.mlp.up_proj.weight"])


def test_gradient_and_filter_parameters(models, tmp_path):
    """a's weight is the gradient [0, 1] over the 3 layers (t = i/2; embedding, norm and head t=0, as mergekit 0.1.5);
    b's weight is 3 on self_attn tensors and 1 elsewhere ({filter, value} list with a filter-less default)."""
    cfg = {
        "models": [
            {"model": str(models["a"]), "parameters": {"weight": [0.0, 1.0]}},
            {
                "model": str(models["b"]),
                "parameters": {"weight": [{"filter": "self_attn", "value": 3.0}, {"value": 1}]},
            },
        ],
        "merge_method": "linear",
    }
    out = tmp_path / "out"
    run_merge(load_merge_config(_write(tmp_path, cfg)), out)
    sa, sb, so = _sd(models["a"]), _sd(models["b"]), _sd(out)
    for k in so:
        t = int(k.split(".")[2]) / 2 if k.startswith("model.layers.") else 0.0
        wb = 3.0 if "self_attn" in k else 1.0
        assert_close_to_scale(so[k], (t * sa[k] + wb * sb[k]) / (t + wb), ELEMENTWISE, err_msg=k)


def test_passthrough_slices_frankenmerge(models, tmp_path):
    cfg = textwrap.dedent(f"""\
        slices:
          - sources:
            - model: {models["a"]}
              layer_range: [0, 2]
          - sources:
            - model: {models["b"]}
              layer_range: [1, 3]
        merge_method: passthrough
        dtype: float32
        """)
    out = tmp_path / "out"
    assert run_merge(load_merge_config(_write(tmp_path, cfg)), out)["layers"] == 4
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_hidden_layers == 4
    with torch.no_grad():
        assert torch.isfinite(model(torch.tensor([[0, 5, 9]])).logits).all()
    sa, sb, so = _sd(models["a"]), _sd(models["b"]), _sd(out)
    src = [(sa, 0), (sa, 1), (sb, 1), (sb, 2)]
    for k in so:
        if k.startswith("model.layers."):
            i, rest = int(k.split(".")[2]), k.split(".", 3)[3]
            sd, j = src[i]
            np.testing.assert_array_equal(so[k], sd[f"model.layers.{j}.{rest}"], err_msg=k)
    np.testing.assert_array_equal(so["model.embed_tokens.weight"], sa["model.embed_tokens.weight"])
    np.testing.assert_array_equal(so["lm_head.weight"], sb["lm_head.weight"])


def test_union_vocabulary(models, tmp_path):
    """a and tok2 have different BPE vocabularies (same token at different ids, tokens in one only)."""
    cfg = {
        "models": [
            {"model": str(models["a"]), "parameters": {"weight": 0.25}},
            {"model": str(models["tok2"]), "parameters": {"weight": 0.75}},
        ],
        "merge_method": "linear",
        "tokenizer_source": "union",
    }
    out = tmp_path / "out"
    run_merge(load_merge_config(_write(tmp_path, cfg)), out)
    va = transformers.AutoTokenizer.from_pretrained(models["a"]).get_vocab()
    vb = transformers.AutoTokenizer.from_pretrained(models["tok2"]).get_vocab()
    vo = transformers.AutoTokenizer.from_pretrained(out).get_vocab()
    assert set(vo) == set(va) | set(vb)
    assert all(vo[t] == i for t, i in va.items())  # the base's (first model's) ids are kept
    only_b = set(vb) - set(va)
    assert only_b and set(va) - set(vb) and any(va[t] != vb[t] for t in set(va) & set(vb))
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert model.config.vocab_size == len(vo)
    sa, sb, so = _sd(models["a"]), _sd(models["tok2"]), _sd(out)
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        assert so[key].shape[0] == len(vo)
        for t, i in vo.items():
            if t in va and t in vb:
                expect = 0.25 * sa[key][va[t]] + 0.75 * sb[key][vb[t]]
            else:  # mergekit: a model lacking the token gets the only donor's row, so the merge is that row
                expect = sa[key][va[t]] if t in va else sb[key][vb[t]]
            assert_close_to_scale(so[key][i], expect, ELEMENTWISE, err_msg=f"{key} {t!r}")


def test_base_vocabulary_and_mismatch_refused(models, tmp_path):
    cfg = {"models": [{"model": str(models["a"])}, {"model": str(models["tok2"])}], "merge_method": "linear",
           "parameters": {"weight": 1.0}}  # fmt: skip
    with pytest.raises(MergeConfigError, match="vocab_size.*tokenizer_source"):
        run_merge(load_merge_config(_write(tmp_path, cfg)), tmp_path / "x")
    cfg["tokenizer_source"] = "base"
    out = tmp_path / "out"
    run_merge(load_merge_config(_write(tmp_path, cfg)), out)
    va = transformers.AutoTokenizer.from_pretrained(models["a"]).get_vocab()
    vb = transformers.AutoTokenizer.from_pretrained(models["tok2"]).get_vocab()
    assert transformers.AutoTokenizer.from_pretrained(out).get_vocab() == va
    sa, sb, so = _sd(models["a"]), _sd(models["tok2"]), _sd(out)
    e = "model.embed_tokens.weight"
    for t, i in va.items():
        expect = (sa[e][i] + sb[e][vb[t]]) / 2 if t in vb else sa[e][i]
        assert_close_to_scale(so[e][i], expect, ELEMENTWISE)


def test_mismatched_hidden_size_refused(models, tmp_path, capsys):
    cfg = {"models": [{"model": str(models["a"])}, {"model": str(models["wide"])}], "merge_method": "linear"}
    f = _write(tmp_path, cfg)
    with pytest.raises(MergeConfigError) as e:
        run_merge(load_merge_config(f), tmp_path / "x")
    msg = str(e.value)
    assert "hidden_size" in msg and str(models["a"]) in msg and str(models["wide"]) in msg
    assert main(["merge", str(f), str(tmp_path / "y")]) == 2
    assert "hidden_size is 32" in capsys.readouterr().err


MERGEKIT_EXAMPLES = {  # copied verbatim from arcee-ai/mergekit examples/, model names substituted
    "ties.yml": """models:
  - model: abacaj/phi-2-super # Best
    parameters:
      density: [0.8, 0.3, 0.1]
      weight: [1.0, 0.8, 0.5]
  - model: rhysjones/phi-2-orange-v2 #Middle
    parameters:
      density: [0.1, 0.4, 0.1]
      weight: [0.2, 0.8, 0.1]
  - model: mobiuslabsgmbh/aanaphi2-v0.1 # 2nd End
    parameters:
      density: [0.1, 0.2, 0.6]
      weight: [0.5, 0.8, 1.0]
merge_method: ranked_ties
base_model: microsoft/phi-2
parameters:
dtype: bfloat16
""",
    "gradient-slerp.yml": """slices:
  - sources:
      - model: psmathur/orca_mini_v3_13b
        layer_range: [0, 40]
      - model: garage-bAInd/Platypus2-13B
        layer_range: [0, 40]
merge_method: slerp
base_model: psmathur/orca_mini_v3_13b
parameters:
  t:
    - pattern: self_attn
      value: [0, 0.5, 0.3, 0.7, 1]
    - pattern: mlp
      value: [1, 0.5, 0.7, 0.3, 0]
    - value: 0.5
dtype: float16
""",
    "bio-merge.yml": """models:
  - model: mistralai/Mistral-7B-Instruct-v0.2
    parameters:
      density: 0.5
      weight: 0.5
  - model: BioMistral/BioMistral-7B
    parameters:
      density: 0.5
      weight: 0.5
merge_method: ties
base_model: mistralai/Mistral-7B-v0.1
parameters:
  normalize: false
  int8_mask: true
dtype: float16""",
    "orcamini-platy-44layer.yml": """slices:
  - sources:
    - model: psmathur/orca_mini_v3_13b
      layer_range: [0, 24]
  - sources:
    - model: garage-bAInd/Platypus2-13B
      layer_range: [20, 40]
merge_method: passthrough
dtype: float16
""",
}
NAMES = ["abacaj/phi-2-super", "rhysjones/phi-2-orange-v2", "mobiuslabsgmbh/aanaphi2-v0.1", "microsoft/phi-2",
         "psmathur/orca_mini_v3_13b", "garage-bAInd/Platypus2-13B", "mistralai/Mistral-7B-Instruct-v0.2",
         "BioMistral/BioMistral-7B", "mistralai/Mistral-7B-v0.1"]  # fmt: skip


@pytest.mark.parametrize("example", sorted(MERGEKIT_EXAMPLES))
def test_mergekit_examples_parse(example, tmp_path):
    text = MERGEKIT_EXAMPLES[example]
    for n in NAMES:  # local folders under the names the YAML uses (relative to the YAML's folder)
        (tmp_path / n).mkdir(parents=True, exist_ok=True)
    plan = load_merge_config(_write(tmp_path, text))
    assert all(plan.paths[m] == (tmp_path / m).resolve() for m in plan.referenced_models())
    if example == "ties.yml":
        assert plan.merge_method == "ranked_ties" and plan.dtype == "bfloat16" and len(plan.slices[0].sources) == 4
        src = plan.slices[0].sources[0]
        assert evaluate_setting("w", src.parameters["density"], 0.5) == pytest.approx(0.3)
    if example == "gradient-slerp.yml":
        t = plan.parameters["t"]
        assert evaluate_setting("model.layers.3.mlp.up_proj.weight", t, 0.25) == pytest.approx(0.5)
        assert evaluate_setting("model.layers.3.mlp.up_proj.weight", t, 0.375) == pytest.approx(0.6)
        assert evaluate_setting("model.norm.weight", t, 1.0) == 0.5
    if example == "bio-merge.yml":
        assert plan.parameters == {"normalize": False, "int8_mask": True} and plan.dtype == "float16"
    if example == "orcamini-platy-44layer.yml":
        assert [s.sources[0].layer_range for s in plan.slices] == [(0, 24), (20, 40)]


def test_config_errors_are_messages(tmp_path):
    with pytest.raises(MergeConfigError, match="unknown key"):
        parse_merge_config({"merge_method": "linear", "models": [{"model": "."}], "dtypee": "x"})
    with pytest.raises(MergeConfigError, match="exactly one of 'models' or 'slices'"):
        parse_merge_config({"merge_method": "linear"})
    with pytest.raises(MergeConfigError, match="unknown merge_method 'ranked_ties'"):
        run_merge(parse_merge_config({"merge_method": "ranked_ties", "models": [{"model": "."}]}), tmp_path / "o")
    assert not (tmp_path / "o").exists()
    with pytest.raises(FileNotFoundError, match="never downloads"):
        parse_merge_config({"merge_method": "linear", "models": [{"model": "no/such-model"}]}, base_dir=tmp_path)


CHILD = """import json, sys
from jaxfin.merge.config import load_merge_config
from jaxfin.merge.engine import SafetensorsReader, run_merge

def status(key):  # kB -> bytes
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key))

def peak_growth(f):  # reset the peak-RSS mark (Linux clear_refs 5), run f, peak minus the RSS before
    open("/proc/self/clear_refs", "w").write("5")
    before = status("VmRSS:")
    out = f()
    return status("VmHWM:") - before, out

small, big, out = sys.argv[1:4]
run_merge(load_merge_config(small), out + "_small")  # every lazy import and first-call cost paid here
merge, s = peak_growth(lambda: run_merge(load_merge_config(big), out, max_shard_size="20MB"))
plan = load_merge_config(big)
whole, _ = peak_growth(lambda: [SafetensorsReader(plan.paths[plan.base_model]).read(n) for n in
                                SafetensorsReader(plan.paths[plan.base_model]).names()])
print(json.dumps({"merge": merge, "whole_model": whole, "read": s["bytes_read"]}))
"""


def _random_llama(d: Path, seed: int, layers: int = 20, hidden: int = 256, inter: int = 688, vocab: int = 1000) -> int:
    """A float32 Llama written straight to safetensors (no torch): many small layers, so that one model is far
    larger than any one tensor. Returns its size in bytes."""
    from safetensors.numpy import save_file

    d.mkdir()
    cfg = transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=False,
    )  # fmt: skip
    cfg.save_pretrained(d)
    rng = np.random.default_rng(seed)
    shapes = {
        "model.embed_tokens.weight": (vocab, hidden),
        "model.norm.weight": (hidden,),
        "lm_head.weight": (vocab, hidden),
    }
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes |= {p + f"self_attn.{n}_proj.weight": (hidden, hidden) for n in "qkvo"}
        shapes |= {p + "mlp.gate_proj.weight": (inter, hidden), p + "mlp.up_proj.weight": (inter, hidden)}
        shapes |= {p + "mlp.down_proj.weight": (hidden, inter)}
        shapes |= {p + "input_layernorm.weight": (hidden,), p + "post_attention_layernorm.weight": (hidden,)}
    tensors = {k: rng.standard_normal(s, dtype=np.float32) for k, s in shapes.items()}
    save_file(tensors, d / "model.safetensors")
    return sum(x.nbytes for x in tensors.values())


def test_streaming_peak_memory_stays_below_one_model(models, tmp_path):
    """TIES of 3 models of ~65 MB each (~195 MB read) in a subprocess: its peak RSS during the merge grows by less
    than half of one model (Linux peak-RSS mark reset just before; all imports done by a merge of the tiny models
    first). The same measurement sees a whole model read into memory."""
    small = _write(tmp_path, {
        "models": [{"model": str(models["a"]), "parameters": {"weight": 0.5, "density": 0.5}},
                   {"model": str(models["b"]), "parameters": {"weight": 0.5, "density": 0.5}}],
        "merge_method": "ties", "base_model": str(models["base"]),
    })  # fmt: skip
    small = small.rename(tmp_path / "small.yaml")
    sizes = [_random_llama(tmp_path / n, seed) for seed, n in enumerate(["big0", "big1", "big2"])]
    big = _write(tmp_path, {
        "models": [{"model": str(tmp_path / "big1"), "parameters": {"weight": 0.5, "density": 0.5}},
                   {"model": str(tmp_path / "big2"), "parameters": {"weight": 0.5, "density": 0.5}}],
        "merge_method": "ties", "base_model": str(tmp_path / "big0"),
    })  # fmt: skip
    r = subprocess.run([sys.executable, "-c", CHILD, str(small), str(big), str(tmp_path / "out")],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["read"] == sum(sizes)
    cap = sizes[0] // 2
    print(f"inputs {sum(sizes) / 2**20:.0f} MiB; peak RSS growth: merge {got['merge'] / 2**20:.1f} MiB (cap "
          f"{cap / 2**20:.0f} MiB), reading one model whole {got['whole_model'] / 2**20:.1f} MiB")  # fmt: skip
    assert got["whole_model"] > 0.9 * sizes[0]  # the measurement sees memory that is held
    assert got["merge"] < cap
    assert len(list((tmp_path / "out").glob("model-*.safetensors"))) == 4  # 65 MB in 20 MB shards


def test_device_backend_and_jaxfin_output(models, tmp_path):
    """--device (merge_tensor's jit backend) gives the numpy path's tensors; --format jaxfin loads with jaxfin."""
    import jaxfin

    cfg = {
        "models": [{"model": str(models["a"]), "parameters": {"weight": 1.0}}, {"model": str(models["b"])}],
        "merge_method": "task_arithmetic", "base_model": str(models["base"]), "parameters": {"weight": 0.5},
    }  # fmt: skip
    f = _write(tmp_path, cfg)
    run_merge(load_merge_config(f), tmp_path / "cpu")
    assert main(["merge", str(f), str(tmp_path / "dev"), "--device"]) == 0
    assert main(["merge", str(f), str(tmp_path / "ckpt"), "--format", "jaxfin"]) == 0
    s_cpu, s_dev = _sd(tmp_path / "cpu"), _sd(tmp_path / "dev")
    s0, sa, sb = _sd(models["base"]), _sd(models["a"]), _sd(models["b"])
    for k in s_cpu:
        assert_close_to_scale(s_cpu[k], s0[k] + 1.0 * (sa[k] - s0[k]) + 0.5 * (sb[k] - s0[k]), ELEMENTWISE, err_msg=k)
        assert_close_to_scale(s_dev[k], s_cpu[k], ELEMENTWISE, err_msg=k)  # XLA vs numpy: order, FMA
    m = jaxfin.load_model(tmp_path / "ckpt")
    np.testing.assert_allclose(np.asarray(m.params["embed_tokens"]["embedding"]), s_cpu["model.embed_tokens.weight"])
    np.testing.assert_allclose(np.asarray(m.params["lm_head"]["kernel"]), s_cpu["lm_head.weight"].T)


def test_whole_model_topk_ties(models, tmp_path):
    """`sparsify_scope: model`: TIES of one model (weight 1) is base + δ kept where |δ| is among the top 40% of the
    whole model's |δ| (threshold from a numpy sort here), not 40% of each tensor."""
    cfg = {
        "models": [{"model": str(models["a"]), "parameters": {"weight": 1.0, "density": 0.4}}],
        "merge_method": "ties", "base_model": str(models["base"]), "parameters": {"sparsify_scope": "model"},
    }  # fmt: skip
    out = tmp_path / "out"
    run_merge(load_merge_config(_write(tmp_path, cfg)), out)
    s0, sa, so = _sd(models["base"]), _sd(models["a"]), _sd(out)
    absd = np.sort(np.concatenate([np.abs(sa[k] - s0[k]).ravel() for k in so]))
    thr = absd[absd.size - int(0.4 * absd.size)]
    fractions = []
    for k in so:
        d = sa[k] - s0[k]
        assert_close_to_scale(so[k], s0[k] + np.where(np.abs(d) >= thr, d, 0), ELEMENTWISE, err_msg=k)
        fractions.append(np.mean(np.abs(d) >= thr))
    assert max(fractions) - min(fractions) > 0.3  # per-tensor kept fractions differ: the trim is global


def test_bench_merge_synthetic(capsys):
    assert main(["bench", "merge", "--synthetic", "--layers", "2", "--hidden", "64", "--intermediate", "128",
                 "--vocab", "100", "--json"]) == 0  # fmt: skip
    r = json.loads(capsys.readouterr().out)
    assert r["merge_method"] == "ties" and r["input_bytes"] == 3 * 4 * (
        2 * 100 * 64 + 64 + 2 * (4 * 64 * 64 + 3 * 64 * 128 + 2 * 64)
    )
    assert r["jaxfin"]["gb_per_s"] > 0 and r["jaxfin"]["peak_rss_bytes"] > 0


MERGEKIT = os.environ.get("JAXFIN_MERGEKIT")  # a mergekit-yaml executable (its own venv); parity tests need it
PARITY = {
    "linear_gradient_filter": "models:\n  - model: {a}\n    parameters: {{weight: [0.0, 1.0]}}\n  - model: {b}\n"
    "    parameters:\n      weight:\n        - filter: self_attn\n          value: 3.0\n        - value: 1\n"
    "merge_method: linear\ndtype: float32\n",
    "union_linear": "models:\n  - model: {a}\n    parameters: {{weight: 0.25}}\n  - model: {tok2}\n"
    "    parameters: {{weight: 0.75}}\nmerge_method: linear\ntokenizer_source: union\ndtype: float32\n",
    "base_vocab_ties": "models:\n  - model: {a}\n    parameters: {{weight: 0.6, density: 0.5}}\n  - model: {tok2}\n"
    "    parameters: {{weight: 0.4, density: 0.7}}\nmerge_method: ties\nbase_model: {base}\n"
    "tokenizer_source: base\ndtype: float32\n",
    "passthrough": "slices:\n  - sources:\n    - model: {a}\n      layer_range: [0, 2]\n  - sources:\n"
    "    - model: {b}\n      layer_range: [1, 3]\nmerge_method: passthrough\ndtype: float32\n",
    "slerp_gradient": "slices:\n  - sources:\n      - model: {a}\n        layer_range: [0, 3]\n      - model: {b}\n"
    "        layer_range: [0, 3]\nmerge_method: slerp\nbase_model: {a}\nparameters:\n  t:\n"
    "    - filter: self_attn\n      value: [0, 0.5, 0.3, 0.7, 1]\n"
    "    - filter: mlp\n      value: [1, 0.5, 0.7, 0.3, 0]\n"
    "    - value: 0.5\ndtype: float32\n",
    "task_arithmetic": "models:\n  - model: {a}\n    parameters: {{weight: 0.7}}\n  - model: {b}\n"
    "    parameters: {{weight: [0.2, 0.9]}}\nmerge_method: task_arithmetic\nbase_model: {base}\n"
    "parameters: {{lambda: 0.8, normalize: true}}\ndtype: float32\n",
    "breadcrumbs_ties": "models:\n  - model: {a}\n    parameters: {{weight: 0.5, density: 0.6, gamma: 0.05}}\n"
    "  - model: {b}\n    parameters: {{weight: 0.5, density: 0.8, gamma: 0.02}}\nmerge_method: breadcrumbs_ties\n"
    "base_model: {base}\ndtype: float32\n",
    "model_stock": "models:\n  - model: {a}\n  - model: {b}\nmerge_method: model_stock\nbase_model: {base}\n"
    "dtype: float32\n",
}


@pytest.mark.skipif(not MERGEKIT, reason="set JAXFIN_MERGEKIT to a mergekit-yaml executable")
@pytest.mark.parametrize("case", sorted(PARITY))
def test_matches_mergekit(case, models, tmp_path):
    """The same YAML through mergekit-yaml: same tensor names, shapes, config depth and vocabulary; embedding rows
    compared by token (mergekit numbers union-added tokens in set order)."""
    from jaxfin.merge.engine import SafetensorsReader

    f = _write(tmp_path, PARITY[case].format(**{k: str(v) for k, v in models.items()}))
    run_merge(load_merge_config(f), tmp_path / "jx")
    r = subprocess.run([MERGEKIT, str(f), str(tmp_path / "mk"), "--quiet"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = SafetensorsReader(tmp_path / "jx"), SafetensorsReader(tmp_path / "mk")
    assert set(a.names()) == set(b.names())
    va = transformers.AutoTokenizer.from_pretrained(tmp_path / "jx").get_vocab()
    vb = transformers.AutoTokenizer.from_pretrained(tmp_path / "mk").get_vocab()
    assert set(va) == set(vb)
    order = np.array([vb[t] for t, _ in sorted(va.items(), key=lambda kv: kv[1])])
    for n in a.names():
        x, y = a.read(n), b.read(n)
        if n in ("model.embed_tokens.weight", "lm_head.weight"):
            y = y[order]
        # mergekit: torch / numpy float32 in another order; slerp and model_stock also sum the whole tensor (norms,
        # dots), pairwise / cascaded: ~16 + log2(n) additions deep
        assert_close_to_scale(x, y, rounding_tol(np.float32, 16 + np.log2(x.size), depth=6), err_msg=n)
    ca, cb = (json.loads((tmp_path / d / "config.json").read_text()) for d in ("jx", "mk"))
    assert (ca["num_hidden_layers"], ca["vocab_size"]) == (cb["num_hidden_layers"], cb["vocab_size"])


def test_sharded_input_and_bfloat16(models, tmp_path):
    """A sharded input (a passthrough copy of a in 30 KB shards) merges like the original; dtype bfloat16 rounds the
    inputs to bf16 and writes bf16 (numpy + ml_dtypes oracle); the output loads in transformers as bfloat16."""
    import ml_dtypes

    copy = {
        "slices": [{"sources": [{"model": str(models["a"]), "layer_range": [0, 3]}]}],
        "merge_method": "passthrough",
    }
    (tmp_path / "c").mkdir()
    run_merge(load_merge_config(_write(tmp_path / "c", copy)), tmp_path / "a_sharded", max_shard_size="30KB")
    assert len(list((tmp_path / "a_sharded").glob("model-*-of-*.safetensors"))) > 3
    cfg = {"models": [{"model": str(tmp_path / "a_sharded"), "parameters": {"weight": 1.0}},
                      {"model": str(models["b"]), "parameters": {"weight": 2.0}}],
           "merge_method": "linear", "dtype": "bfloat16"}  # fmt: skip
    run_merge(load_merge_config(_write(tmp_path, cfg)), tmp_path / "out")
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert model.dtype == torch.bfloat16
    sa, sb, so = _sd(models["a"]), _sd(models["b"]), _sd(tmp_path / "out")

    def bf16(x):
        return x.astype(ml_dtypes.bfloat16).astype(np.float32)

    for k in sa:  # exact: the engine's float32 ops are these (×1, ×2 exact, one add, ÷3), then one bf16 rounding
        np.testing.assert_array_equal(so[k], bf16((bf16(sa[k]) + 2.0 * bf16(sb[k])) / 3.0), err_msg=k)
