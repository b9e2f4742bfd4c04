"""`jaxfin eval` on raw text: loss and bits per byte against transformers (an independent oracle), windows for long
documents, two tokenizers, the forgetting report (deltas, markdown, PNG) and config errors."""

import json
import math
import shutil

import numpy as np
import pytest
import sentencepiece as spm
import torch
import transformers
import yaml
from conftest import REPO, shared_data
from tolerances import rounding_tol

import jaxfin
from jaxfin.cli import main
from jaxfin.data.tokenizer import load_tokenizer
from jaxfin.eval.config import load_eval_config
from jaxfin.eval.text import encode_documents, packed_batches, read_texts, text_metrics

DEMO_SPM = REPO / "demo_data" / "tokenizer.model"
N_DOCS = 4


def _finance_file():
    return shared_data() / "finance_corpus_en" / "reuters21578_macro_acq.jsonl"


def _general_file():
    """Short general-domain documents (grade-school maths questions), read through a field mapping."""
    return shared_data() / "instructions" / "gsm8k_test.jsonl"


def _first_texts(path, n, field="text"):
    """The oracle's own reading: the `field` of the first n JSON lines."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                out.append(json.loads(line)[field])
            if len(out) == n:
                break
    return out


def _make_hf(path, vocab, bos, eos, spm_file, seed=0, noise=0.05):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024, bos_token_id=bos, eos_token_id=eos, pad_token_id=0,
        tie_word_embeddings=False,
    )  # fmt: skip
    model = transformers.AutoModelForCausalLM.from_config(config).to(torch.float32).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(noise * torch.randn_like(p))
    model.save_pretrained(path, safe_serialization=True)
    shutil.copy(spm_file, path / "tokenizer.model")
    return model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two tiny HF Llamas on the demo SentencePiece tokenizer (vocab 1024, bos 2, eos 3): a base and a perturbed
    copy; and a third with its own, different tokenizer (vocab 384)."""
    tmp = tmp_path_factory.mktemp("eval_models")
    out = {}
    out["base"] = (tmp / "base", _make_hf(tmp / "base", 1024, 2, 3, DEMO_SPM, seed=0), DEMO_SPM)
    out["tuned"] = (tmp / "tuned", _make_hf(tmp / "tuned", 1024, 2, 3, DEMO_SPM, seed=1, noise=0.08), DEMO_SPM)
    texts = _first_texts(_finance_file(), 200)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_prefix=str(tmp / "small"), vocab_size=384, model_type="bpe",
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2, num_threads=1,
    )  # fmt: skip
    small = tmp / "small.model"
    out["small"] = (tmp / "smallvocab", _make_hf(tmp / "smallvocab", 384, 1, 2, small, seed=2), small)
    return out


def _oracle(hf_model, spm_file, texts, seq_len):
    """Total NLL (nats) and target count with transformers, per document, windows written out: tokens
    [BOS] + text; windows of seq_len overlapping by one token; every token after the first is a target once."""
    sp = spm.SentencePieceProcessor(model_file=str(spm_file))
    nll, count = 0.0, 0
    for text in texts:
        ids = [sp.bos_id(), *sp.encode(text)]
        start = 0
        while start < len(ids) - 1:
            w = ids[start : start + seq_len]
            with torch.no_grad():
                logits = hf_model(torch.tensor([w])).logits[0].double()
            logp = torch.log_softmax(logits[:-1], -1)
            nll -= float(logp[torch.arange(len(w) - 1), torch.tensor(w[1:])].sum())
            count += len(w) - 1
            start += len(w) - 1
    return nll, count


def _loss_rtol(count):
    """Relative error of jaxfin's loss against the oracle's: dominated by jaxfin's float32 sum of `count` NLLs of one
    sign (lam sqrt(n) u of it; the oracle sums in float64, so one side only). Each target's own forward rounding
    (<= ~3e-4 of max(max|logit|, 1)) averages out over the ~1300 targets (~1e-6); measured in all: 1e-7. No looser: a
    cross-document leak in the packed rows moves the loss by 2e-5 relative at seq_len 1024."""
    return float(rounding_tol(np.float32, count)) / 2  # ~1.3e-5


@pytest.mark.parametrize("name,seq_len", [("base", 1024), ("base", 48), ("small", 1024)])
def test_loss_and_bits_per_byte_match_transformers(models, name, seq_len):
    path, hf_model, spm_file = models[name]
    texts = _first_texts(_finance_file(), N_DOCS)
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    nll, count = _oracle(hf_model, spm_file, texts, seq_len)
    longest = max(len(spm.SentencePieceProcessor(model_file=str(spm_file)).encode(t)) + 1 for t in texts)
    assert seq_len >= longest if seq_len > 100 else longest > 2 * seq_len  # one window each / really split

    model = jaxfin.load_model(path, compute_dtype="float32")
    ts = type("TS", (), dict(name="fin", path=str(_finance_file()), format="auto", fields={}))
    got_texts = read_texts(ts, N_DOCS)
    assert got_texts == texts
    tok = load_tokenizer(path)
    rows = [b["segment_ids"] for b, _ in packed_batches(encode_documents(texts, tok), min(seq_len, 544), 4)]
    assert max(int(r.max()) for r in rows) >= 2  # documents share rows: segment ids keep them apart
    r = text_metrics(model, tok, got_texts, seq_len=seq_len, batch_size=4)
    assert r["tokens"] == count and r["bytes"] == n_bytes and r["documents"] == N_DOCS
    rtol = _loss_rtol(count)
    np.testing.assert_allclose(r["loss"], nll / count, rtol=rtol)
    np.testing.assert_allclose(r["ppl"], math.exp(nll / count), rtol=rtol * r["loss"])  # exp: loss's absolute error
    np.testing.assert_allclose(r["bits_per_byte"], nll / math.log(2) / n_bytes, rtol=rtol)


def test_bits_per_byte_across_tokenizers(models):
    """Two tokenizers split the same text into different numbers of tokens; bytes (and so the denominator of bits
    per byte) are the same, and each model's bits per byte is its own transformers NLL over those bytes."""
    texts = _first_texts(_finance_file(), N_DOCS)
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    got = {}
    for name in ("base", "small"):
        path, hf_model, spm_file = models[name]
        r = text_metrics(jaxfin.load_model(path, compute_dtype="float32"), load_tokenizer(path), texts, seq_len=256)
        nll, count = _oracle(hf_model, spm_file, texts, 256)
        assert r["bytes"] == n_bytes and r["tokens"] == count
        np.testing.assert_allclose(r["bits_per_byte"], nll / math.log(2) / n_bytes, rtol=_loss_rtol(count))
        # loss x tokens / bytes converts between the two units (float64 arithmetic on one float64 NLL total)
        np.testing.assert_allclose(r["bits_per_byte"], r["loss"] * r["tokens"] / math.log(2) / n_bytes, rtol=1e-9)
        got[name] = r
    assert got["base"]["tokens"] != got["small"]["tokens"]


def _write_config(tmp_path, models, **extra):
    cfg = {
        "models": [{"name": "base", "path": str(models["base"][0])}, str(models["tuned"][0])],
        "text": [
            {"name": "reuters", "path": str(_finance_file()), "domain": True},
            {"name": "gsm8k", "path": str(_general_file()), "domain": False, "fields": {"text": "instruction"}},
        ],
        "seq_len": 128,
        "batch_size": 4,
        "max_docs": 3,
        "output_dir": str(tmp_path / "out"),
        "compute_dtype": "float32",
        **extra,
    }
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_cli_forgetting_report(models, tmp_path, capsys):
    cfg = _write_config(tmp_path, models)
    assert main(["eval", str(cfg), "max_docs=2"]) == 0
    printed = capsys.readouterr().out
    out = tmp_path / "out"
    report = json.loads((out / "eval.json").read_text())
    assert [m["name"] for m in report["models"]] == ["base", "tuned"]
    text = report["text"]
    for m in ("base", "tuned"):  # ppl: float64 exp of the reported loss
        for s in ("reuters", "gsm8k"):
            r = text[m][s]
            assert r["documents"] == 2 and r["ppl"] == pytest.approx(math.exp(r["loss"]))
    # the general set's numbers equal a direct evaluation of the same documents
    texts = _first_texts(_general_file(), 2, "instruction")
    nll, count = _oracle(models["tuned"][1], DEMO_SPM, texts, 128)
    np.testing.assert_allclose(text["tuned"]["gsm8k"]["loss"], nll / count, rtol=_loss_rtol(count))
    fg = report["forgetting"]  # deltas and means below: float64 arithmetic on the report's own values
    assert fg["base"] == "base"
    for s in ("reuters", "gsm8k"):
        d = fg["per_set"]["tuned"][s]
        assert d["d_bits_per_byte"] == pytest.approx(
            text["tuned"][s]["bits_per_byte"] - text["base"][s]["bits_per_byte"]
        )
        assert d["d_loss"] == pytest.approx(text["tuned"][s]["loss"] - text["base"][s]["loss"])
    groups = fg["groups"]["tuned"]
    assert groups["domain"]["mean_d_bits_per_byte"] == pytest.approx(
        fg["per_set"]["tuned"]["reuters"]["d_bits_per_byte"]
    )
    assert groups["general"]["mean_d_loss"] == pytest.approx(fg["per_set"]["tuned"]["gsm8k"]["d_loss"])
    md = (out / "eval.md").read_text()
    assert "## Forgetting" in md and md.strip() in printed
    assert f"{fg['per_set']['tuned']['gsm8k']['d_bits_per_byte']:+.4f}" in md
    png = (out / "forgetting.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000


def test_config_errors(models, tmp_path, capsys):
    cfg = _write_config(tmp_path, models, max_doc=3)
    assert main(["eval", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "max_doc" in err and "max_docs" in err
    cfg = _write_config(tmp_path, models)
    assert main(["eval", str(cfg), "batchsize=3"]) == 2
    assert "batchsize" in capsys.readouterr().err
    bad = yaml.safe_load(cfg.read_text())
    bad["models"][0]["paht"] = "x"
    cfg.write_text(yaml.safe_dump(bad))
    assert main(["eval", str(cfg)]) == 2
    assert "models[0].paht" in capsys.readouterr().err
    assert main(["eval", str(_write_config(tmp_path, models)), f"models=[{models['base'][0]},{tmp_path}/nope]"]) == 2
    assert "model 'nope': no model directory" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before any work
    c = load_eval_config(_write_config(tmp_path, models), ["max_docs=7", "seq_len=64"])
    assert (c.max_docs, c.seq_len, c.models[1].name) == (7, 64, "tuned")


def test_loss_fn_compiled_once_per_model_config():
    """Every model / text set of one architecture reuses one jitted loss (a fresh Model must not recompile)."""
    import dataclasses

    from jaxfin.config.schema import ModelConfig
    from jaxfin.eval.text import _loss_fn

    cfg = ModelConfig()
    assert _loss_fn(cfg) is _loss_fn(dataclasses.replace(cfg))
    assert _loss_fn(cfg) is not _loss_fn(dataclasses.replace(cfg, num_layers=cfg.num_layers + 1))
