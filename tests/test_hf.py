"""Hugging Face import/export against transformers (the oracle): logits parity, bitwise round trips, configs,
tokenizers and the refusals. Tiny random models, fp32 on CPU; fixtures are module-scoped to keep it fast."""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import chex
import jax
import ml_dtypes
import numpy as np
import pytest
import sentencepiece as spm
import torch
import transformers
from tolerances import assert_close_to_scale, rounding_tol

import jaxfin
from jaxfin.config import ConfigError, ModelConfig
from jaxfin.hf import config_from_hf, load_hf, params_from_hf, params_to_hf, save_hf
from jaxfin.hf.tokenizer import export_tokenizer
from jaxfin.store.convert import convert_main
from jaxfin.store.jaxfin_dir import load_jaxfin, save_jaxfin

REPO = Path(__file__).resolve().parents[1]
DEMO_SPM = REPO / "demo_data" / "tokenizer.model"
SHAPE = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, max_position_embeddings=64)
TOKENS = np.random.default_rng(0).integers(0, 128, (2, 24))
# two float32 programs (jaxfin vs transformers, scan vs loop): depth 4L reductions of <= F terms, relative to max-abs
HF_TOL = float(rounding_tol(np.float32, SHAPE["intermediate_size"], depth=4 * SHAPE["num_hidden_layers"]))  # ~6e-5
SENTENCES = [
    "The bank raised interest rates by 25 basis points.",
    "  leading,  double  and trailing spaces  ",
    "Zürich café: €1,234.56 (+3.5%) — naïve 日本 银行",
    "unseen words like xyzzy and ΩΨ",
    "",
]
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 16,
}
VARIANTS = {  # name -> (config class, kwargs, save_pretrained kwargs)
    "llama2_mha": ("LlamaConfig", dict(num_attention_heads=4, num_key_value_heads=4), {}),
    "llama3_gqa": (
        "LlamaConfig",
        dict(num_attention_heads=4, num_key_value_heads=2, rope_theta=500000.0, eos_token_id=[2, 5]),
        {"max_shard_size": "40KB"},
    ),
    "llama31_rope": (
        "LlamaConfig",
        dict(num_attention_heads=4, num_key_value_heads=2, rope_parameters=LLAMA3_ROPE),
        {},
    ),
    "llama32_tied": (
        "LlamaConfig",
        dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True),
        {},
    ),
    "mqa_head_dim": ("LlamaConfig", dict(num_attention_heads=4, num_key_value_heads=1, head_dim=32), {}),
    "mistral": ("MistralConfig", dict(num_attention_heads=4, num_key_value_heads=2, sliding_window=64), {}),
    "qwen2_bias": (
        "Qwen2Config",
        dict(num_attention_heads=4, num_key_value_heads=2, bos_token_id=1, eos_token_id=2),
        {},
    ),
}


def _train_spm(tmp: Path, model_type: str) -> Path:
    """A tiny SentencePiece model with the demo's special ids (pad 0, unk 1, bos 2, eos 3)."""
    rng = np.random.default_rng(1)
    words = "the bank raised interest rates while credit markets priced risk and equity fell".split()  # noqa: SIM905
    lines = [" ".join(rng.choice(words, rng.integers(3, 12))) for _ in range(300)] + ["Zürich café 2024: $1,234.56"]
    (tmp / "corpus.txt").write_text("\n".join(lines))
    spm.SentencePieceTrainer.train(
        input=str(tmp / "corpus.txt"),
        model_prefix=str(tmp / model_type),
        model_type=model_type,
        vocab_size=320 if model_type == "bpe" else 48,
        byte_fallback=model_type == "bpe",
        character_coverage=1.0,
        pad_id=0,
        unk_id=1,
        bos_id=2,
        eos_id=3,
        minloglevel=2,
    )
    return tmp / f"{model_type}.model"


@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory) -> Path:
    """An HF tokenizer dir (converted from a trained SentencePiece model) that source model dirs ship with."""
    tmp = tmp_path_factory.mktemp("tok")
    out = tmp / "hf"
    out.mkdir()
    export_tokenizer(_train_spm(tmp, "bpe"), out, ModelConfig(bos_token_id=2, eos_token_id=3, pad_token_id=0))
    return out


def _randomize(model) -> None:
    """HF init leaves norms at 1 and biases at 0, which would hide mapping mistakes."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))


def _hf_logits(model_dir: Path, tokens=TOKENS) -> np.ndarray:
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor(tokens)).logits.numpy()


def _make_hf(path: Path, cls: str, kwargs: dict, save_kw: dict, seed: int = 0, dtype=torch.float32):
    torch.manual_seed(seed)
    config = getattr(transformers, cls)(**SHAPE, **kwargs)
    model = transformers.AutoModelForCausalLM.from_config(config).to(dtype).eval()
    _randomize(model)
    model.save_pretrained(path, safe_serialization=True, **save_kw)
    return model


@dataclass
class Variant:
    name: str
    path: Path  # an HF dir (safetensors + config + generation config + tokenizer)
    ref: np.ndarray  # transformers fp32 logits on TOKENS
    logits: np.ndarray | None = None  # jaxfin's, filled by the parity test


@pytest.fixture(scope="module")
def make_variant(tmp_path_factory, hf_tokenizer):
    """name -> Variant, each built once per module."""
    cache: dict[str, Variant] = {}

    def get(name: str) -> Variant:
        if name not in cache:
            path = tmp_path_factory.mktemp(name)
            model = _make_hf(path, *VARIANTS[name])
            for f in hf_tokenizer.iterdir():
                shutil.copy(f, path / f.name)
            with torch.no_grad():
                cache[name] = Variant(name, path, model(torch.tensor(TOKENS)).logits.numpy())
        return cache[name]

    return get


@pytest.fixture(params=list(VARIANTS))
def variant(request, make_variant) -> Variant:
    return make_variant(request.param)


def _jaxfin_logits(v: Variant) -> np.ndarray:
    if v.logits is None:
        v.logits = np.asarray(jaxfin.load_model(v.path).logits(TOKENS))
    return v.logits


def _tensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import safe_open

    out = {}
    for f in sorted(path.glob("*.safetensors")):
        with safe_open(f, framework="numpy") as h:
            out |= {k: h.get_tensor(k) for k in h.keys()}  # noqa: SIM118 - a safe_open handle, not a dict
    return out


def _config_dict(path: Path) -> dict:
    d = transformers.AutoConfig.from_pretrained(path).to_dict()
    return {k: v for k, v in d.items() if k not in ("_name_or_path", "transformers_version")}


def _gen_dict(path: Path) -> dict:
    d = transformers.GenerationConfig.from_pretrained(path).to_dict()
    return {k: v for k, v in d.items() if k != "transformers_version"}


def test_logits_match_transformers(variant):
    out = _jaxfin_logits(variant)
    assert out.shape == variant.ref.shape
    assert_close_to_scale(out, variant.ref, HF_TOL, err_msg=variant.name)


def test_round_trip_is_bitwise_and_loads_in_transformers(variant, tmp_path):
    path = variant.path
    convert_main(path, tmp_path / "jaxfin")
    assert (tmp_path / "jaxfin" / "jaxfin_model.json").is_file()
    convert_main(tmp_path / "jaxfin", tmp_path / "hf")
    src, out = _tensors(path), _tensors(tmp_path / "hf")
    assert sorted(src) == sorted(out)
    for k in src:
        assert src[k].dtype == out[k].dtype and np.array_equal(src[k], out[k]), k
    assert _config_dict(tmp_path / "hf") == _config_dict(path)
    assert _gen_dict(tmp_path / "hf") == _gen_dict(path)
    # bitwise-equal tensors and config: the same transformers program twice, so bitwise-equal logits
    np.testing.assert_array_equal(_hf_logits(tmp_path / "hf"), variant.ref)
    tok_src = transformers.AutoTokenizer.from_pretrained(path)
    tok_out = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert [tok_out(s).input_ids for s in SENTENCES] == [tok_src(s).input_ids for s in SENTENCES]


def test_params_mapping_is_exact(variant):
    """HF tensors -> pytree -> HF tensors in memory, and the documented pytree layout."""
    model = load_hf(variant.path)
    cfg = model.config
    out = params_to_hf(model.params, cfg)
    src = _tensors(variant.path)
    assert sorted(out) == sorted(src) and all(np.array_equal(out[k], src[k]) for k in src)
    q = np.asarray(model.params["layers"]["self_attn"]["q_proj"]["kernel"])
    assert q.shape == (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.head_size)
    w = src["model.layers.1.self_attn.q_proj.weight"]  # [Hq*Dh, D]; head h is rows h*Dh:(h+1)*Dh
    assert np.array_equal(q[1, :, 1, :], w[cfg.head_size : 2 * cfg.head_size].T)
    back = params_from_hf(out, cfg)
    assert all(np.array_equal(out[k], v) for k, v in params_to_hf(back, cfg).items())


def test_sharded_source_and_export(make_variant, tmp_path):
    v = make_variant("llama3_gqa")
    assert (v.path / "model.safetensors.index.json").is_file()  # the source itself is sharded
    model = jaxfin.load_model(v.path)
    save_hf(model, tmp_path, max_shard_size="30KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    files = set(index["weight_map"].values())
    assert len(files) > 1 and all((tmp_path / f).is_file() for f in files)
    assert not (tmp_path / "model.safetensors").exists()
    sizes = {k: t.nbytes for k, t in _tensors(tmp_path).items()}
    assert index["metadata"]["total_size"] == sum(sizes.values())
    assert sorted(index["weight_map"]) == sorted(sizes)
    # Llama 3's eos list: the first id drives jaxfin, the whole list survives the export
    assert model.config.eos_token_id == 2
    assert json.loads((tmp_path / "config.json").read_text())["eos_token_id"] == [2, 5]
    save_hf(model, tmp_path)  # re-export into the same dir: one file, no stale shards
    assert sorted(p.name for p in tmp_path.glob("model*")) == ["model.safetensors"]


def test_llama3_rope_scaling_changes_frequencies_at_test_lengths(make_variant):
    """Guards the parity test: the llama3 branch must move the RoPE angles a lot within 24 positions."""
    from jaxfin.model.llama import rope_frequencies

    cfg = jaxfin.load_model(make_variant("llama31_rope").path).config
    assert cfg.rope_scaling.type == "llama3" and cfg.rope_scaling.original_max_position_embeddings == 16
    plain = dataclasses.replace(cfg, rope_scaling=dataclasses.replace(cfg.rope_scaling, type="default"))
    scaled, unscaled = np.asarray(rope_frequencies(cfg)), np.asarray(rope_frequencies(plain))
    assert np.all(scaled < unscaled) and np.abs(scaled - unscaled).max() * (TOKENS.shape[1] - 1) > 1.0


def test_older_config_layout_loads_identically(make_variant, tmp_path):
    path = make_variant("llama31_rope").path
    hf = json.loads((path / "config.json").read_text())
    rope = hf.pop("rope_parameters")
    hf["rope_theta"] = rope.pop("rope_theta")
    rope["type"] = rope.pop("rope_type")  # the oldest spelling
    hf["rope_scaling"] = rope
    hf["torch_dtype"] = hf.pop("dtype")
    (tmp_path / "config.json").write_text(json.dumps(hf))
    shutil.copy(path / "model.safetensors", tmp_path / "model.safetensors")
    new, old = jaxfin.load_model(path), jaxfin.load_model(tmp_path)
    assert old.config == new.config  # same config + same params = same function
    assert old.config.rope_theta == 500000.0 and old.config.rope_scaling.factor == 8.0
    chex.assert_trees_all_equal(old.params, new.params)


def test_scanned_and_unscanned_agree(make_variant):
    from jaxfin.model import forward

    v = make_variant("llama3_gqa")
    looped = jaxfin.load_model(v.path, scan_layers=False)
    assert not looped.config.scan_layers
    logits = jax.jit(lambda p, t: forward(p, looped.config, t))(looped.params, TOKENS)  # jit: eager is slow
    assert_close_to_scale(logits, _jaxfin_logits(v), HF_TOL)
    scanned = jaxfin.load_model(v.path)
    a, b = params_to_hf(scanned.params, scanned.config), params_to_hf(looped.params, looped.config)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_bf16_round_trip_is_bitwise(tmp_path):
    _make_hf(tmp_path / "src", *VARIANTS["llama32_tied"], dtype=torch.bfloat16)
    convert_main(tmp_path / "src", tmp_path / "jaxfin")
    assert load_jaxfin(tmp_path / "jaxfin").config.param_dtype == "bfloat16"
    convert_main(tmp_path / "jaxfin", tmp_path / "hf")
    src, out = _tensors(tmp_path / "src"), _tensors(tmp_path / "hf")
    assert sorted(src) == sorted(out)
    for k in src:
        assert src[k].dtype == out[k].dtype == ml_dtypes.bfloat16 and np.array_equal(src[k], out[k]), k
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["dtype"] == "bfloat16"
    model = jaxfin.load_model(tmp_path / "src")  # the default load upcasts exactly
    emb = np.asarray(model.params["embed_tokens"]["embedding"])
    assert emb.dtype == np.float32 and np.array_equal(emb, src["model.embed_tokens.weight"].astype(np.float32))


def test_save_via_model_api_and_jaxfin_dir(make_variant, tmp_path):
    v = make_variant("qwen2_bias")
    model = jaxfin.load_model(v.path)
    jaxfin.save_model(model, tmp_path / "j")
    again = jaxfin.load_model(tmp_path / "j")
    assert again.config == model.config and again.tokenizer_dir == str((tmp_path / "j").absolute())
    chex.assert_trees_all_equal(again.params, model.params)
    jaxfin.save_model(again, tmp_path / "h", format="hf")
    np.testing.assert_array_equal(_hf_logits(tmp_path / "h"), v.ref)  # the source's weights: bitwise its logits
    hf = json.loads((tmp_path / "h" / "config.json").read_text())
    assert hf["architectures"] == ["Qwen2ForCausalLM"] and hf["use_sliding_window"] is False


def test_training_run_dir_converts(make_variant, tmp_path):
    from jaxfin.config import CheckpointConfig
    from jaxfin.store.checkpoint import Checkpointer

    v = make_variant("llama2_mha")
    model = jaxfin.load_model(v.path)
    run = tmp_path / "run"
    save_jaxfin(model, run)
    shutil.rmtree(run / "params")  # a run dir has checkpoints/ instead
    ckpt = Checkpointer(run, CheckpointConfig(async_save=False))
    ckpt.save(7, {"params": model.params, "step": np.int32(7)}, {"data": 0})
    ckpt.close()
    convert_main(run, tmp_path / "hf")
    src, out = _tensors(v.path), _tensors(tmp_path / "hf")
    assert sorted(src) == sorted(out) and all(np.array_equal(src[k], out[k]) for k in src)
    np.testing.assert_array_equal(_hf_logits(tmp_path / "hf"), v.ref)  # bitwise tensors: bitwise logits


# ------------------------------------------------------------------------------------------ tokenizers


@pytest.mark.parametrize("kind", ["bpe", "unigram", "demo"])
def test_sentencepiece_export_encodes_like_sentencepiece(kind, tmp_path):
    if kind == "demo":
        src = DEMO_SPM
    else:
        src = _train_spm(tmp_path, kind)
    sp = spm.SentencePieceProcessor(model_file=str(src))
    cfg = ModelConfig(vocab_size=sp.get_piece_size(), bos_token_id=2, eos_token_id=3, pad_token_id=0)
    out = tmp_path / "out"
    out.mkdir()
    export_tokenizer(src, out, cfg)
    tok = transformers.AutoTokenizer.from_pretrained(out)
    assert (tok.pad_token_id, tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2, 3)
    for s in SENTENCES:
        ids = sp.encode(s)
        assert tok(s, add_special_tokens=False).input_ids == ids, s
        assert tok(s).input_ids == [2, *ids]  # BOS added like Llama's tokenizer
        if sp.unk_id() not in ids:
            assert tok.decode(ids) == sp.decode(ids)


def test_jaxfin_dir_with_sentencepiece_exports_hf_tokenizer(tmp_path):
    src = _train_spm(tmp_path, "unigram")
    cfg = ModelConfig(
        vocab_size=48,
        hidden_size=32,
        intermediate_size=48,
        num_layers=1,
        num_heads=2,
        num_kv_heads=2,
        bos_token_id=2,
        eos_token_id=3,
        pad_token_id=0,
    )
    rng = np.random.default_rng(0)  # numpy init: jax's eager init_params costs seconds here
    shapes = jaxfin.model.param_shapes(cfg)
    params = jax.tree.map(
        lambda s: rng.normal(0, 0.1, s).astype(np.float32), shapes, is_leaf=lambda x: isinstance(x, tuple)
    )
    model = jaxfin.Model(cfg, params, str(src))
    save_jaxfin(model, tmp_path / "j")
    assert (tmp_path / "j" / "tokenizer.model").is_file()
    convert_main(tmp_path / "j", tmp_path / "h")
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "h")
    sp = spm.SentencePieceProcessor(model_file=str(src))
    assert tok("the bank raised rates", add_special_tokens=False).input_ids == sp.encode("the bank raised rates")
    gen = json.loads((tmp_path / "h" / "generation_config.json").read_text())
    assert (gen["bos_token_id"], gen["eos_token_id"], gen["pad_token_id"]) == (2, 3, 0)


# ------------------------------------------------------------------------------------------ refusals


def _llama_config(**changes) -> dict:
    hf = transformers.LlamaConfig(**SHAPE, num_attention_heads=4, num_key_value_heads=2).to_dict()
    hf["model_type"] = "llama"
    return {**hf, **changes}


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"model_type": "gemma"}, "model_type 'gemma' is not supported"),
        ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}}, "rope type 'yarn'"),
        ({"rope_parameters": None, "rope_scaling": {"type": "linear", "factor": 2.0}}, "rope type 'linear'"),
        (
            {"rope_parameters": None, "rope_scaling": {"type": "dynamic", "factor": 2.0}},
            "rope type 'dynamic'",
        ),
        ({"attention_bias": True}, "o_proj"),
        ({"mlp_bias": True}, "mlp_bias"),
        ({"hidden_act": "gelu"}, "hidden_act 'gelu'"),
        ({"model_type": "mistral", "sliding_window": 16}, "sliding-window"),
        ({"num_attention_heads": None}, "missing 'num_attention_heads'"),
    ],
)
def test_unsupported_configs_are_refused(changes, match):
    with pytest.raises(ConfigError, match=match) as e:
        config_from_hf(_llama_config(**changes), "/models/x/config.json")
    assert "/models/x/config.json" in str(e.value)


def test_mistral_short_sliding_window_refused_on_load(tmp_path):
    hf = transformers.MistralConfig(**SHAPE, num_attention_heads=4, num_key_value_heads=2, sliding_window=16).to_dict()
    (tmp_path / "config.json").write_text(json.dumps(hf))
    with pytest.raises(ConfigError, match="sliding-window"):
        jaxfin.load_model(tmp_path)


def test_qwen2_sliding_window_only_when_enabled():
    base = transformers.Qwen2Config(**SHAPE, num_attention_heads=4, num_key_value_heads=2, sliding_window=16).to_dict()
    assert base["sliding_window"] is None  # transformers drops it while use_sliding_window is false
    assert config_from_hf({**base, "sliding_window": 16}, "q").sliding_window == 0
    assert config_from_hf(base, "q").attention_bias
    with pytest.raises(ConfigError, match="sliding-window"):
        config_from_hf({**base, "sliding_window": 16, "use_sliding_window": True}, "q")


def test_pickle_only_dir_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(_llama_config()))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(FileNotFoundError, match=r"pytorch_model\.bin.*safetensors"):
        jaxfin.load_model(tmp_path)


def test_unknown_and_missing_tensors_are_named(make_variant, tmp_path):
    from safetensors.numpy import save_file

    path = make_variant("llama2_mha").path
    shutil.copy(path / "config.json", tmp_path / "config.json")
    tensors = _tensors(path)
    save_file(
        {**tensors, "model.layers.0.self_attn.o_proj.bias": np.zeros(64, np.float32)},
        tmp_path / "model.safetensors",
    )
    with pytest.raises(ValueError, match=r"unexpected tensor 'model\.layers\.0\.self_attn\.o_proj\.bias'"):
        jaxfin.load_model(tmp_path)
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(
        ValueError, match=r"model\.safetensors: missing tensor 'model\.layers\.1\.mlp\.up_proj\.weight'"
    ):
        jaxfin.load_model(tmp_path)


def test_not_a_model_dir(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(FileNotFoundError, match="jaxfin_model.json"):
        jaxfin.load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(_llama_config()))
    with pytest.raises(ConfigError, match="unknown runtime option"):  # architecture comes from the checkpoint
        jaxfin.load_model(tmp_path, vocab_size=3)
