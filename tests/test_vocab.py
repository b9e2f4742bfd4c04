"""`jaxfin vocab expand`: the expanded model and tokenizer load in transformers, old-token logits are unchanged, new
rows are the means the design asks for (computed here from the original torch weights), CJK tokens lower tokens
per character on real Chinese text, mining adds only new pieces, and the CLI works end to end."""

import json
import re
import unicodedata
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from conftest import REPO, shared_data
from tolerances import assert_close_to_scale, rounding_tol

from jaxfin.cli import main
from jaxfin.vocab import expand_vocab, read_corpus

SPIECE = "▁"


def _tiny_llama(vocab_size: int, tie: bool, **ids):
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, tie_word_embeddings=tie, **ids,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(cfg).eval()


def _english() -> list[str]:
    return [json.loads(line)["text"] for line in (REPO / "demo_data/finance_train.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def bpe_model(tmp_path_factory):
    """Untied tiny Llama with a byte-level BPE tokenizer trained here on the demo English text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    d = tmp_path_factory.mktemp("bpe_model")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_english()[:300], trainer)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    fast.save_pretrained(d)
    _tiny_llama(len(fast), tie=False, bos_token_id=0, eos_token_id=1).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory):
    """Tied tiny Llama with the demo SentencePiece tokenizer (byte fallback) exported to HF."""
    from jaxfin.config.schema import ModelConfig
    from jaxfin.hf.tokenizer import export_tokenizer

    d = tmp_path_factory.mktemp("spm_model")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_tokenizer(REPO / "demo_data/tokenizer.model", d, ModelConfig(bos_token_id=2, eos_token_id=3))
    tok = transformers.AutoTokenizer.from_pretrained(d)
    _tiny_llama(len(tok), tie=True, bos_token_id=2, eos_token_id=3, pad_token_id=0).save_pretrained(d)
    return d


def _load(d):
    return transformers.AutoModelForCausalLM.from_pretrained(d).eval(), transformers.AutoTokenizer.from_pretrained(d)


def _logits(model, ids) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


# Old-token logits of the expanded model vs the original: the same torch program on the same hidden states, except
# the LM head's GEMM has more rows (another tiling may reorder its hidden_size-term dot products).
OLD_LOGITS_TOL = rounding_tol(np.float32, 64)  # hidden_size of _tiny_llama: ~6e-6 of max |logit|


def _mean64(rows: np.ndarray) -> np.ndarray:
    """The oracle for a mean row: in float64, as expand does, so the two differ only by its one float32 rounding."""
    return rows.astype(np.float64).mean(0)


ONE_ROUNDING = float(np.finfo(np.float32).eps)  # relative: float64 -> float32 rounds by <= eps/2


@pytest.fixture(scope="module")
def zh_text():
    return read_corpus(shared_data() / "zh_corpus" / "cn_finance_laws_zh_hans.jsonl")


def test_list_expansion_loads_in_transformers_keeps_old_logits_and_mean_rows(bpe_model, tmp_path):
    old_model, old_tok = _load(bpe_model)
    vocab = old_tok.get_vocab()
    existing = next(t for t in sorted(vocab) if t.isalpha() and t.isascii() and len(t) >= 4)
    new = ["financial", "revenue", "中国", "quarterly earnings", "EBITDA"]
    assert not any(t in vocab for t in new) and all(len(old_tok.encode(t)) > 1 for t in new)
    report = expand_vocab(bpe_model, tmp_path / "out", tokens=[*new, existing, "revenue"], log=lambda s: None)
    assert (report["added"], report["skipped_existing"], report["skipped_duplicates"]) == (5, 1, 1)

    model, tok = _load(tmp_path / "out")  # (1) loads in transformers; vocab grew by the added tokens
    v_old = len(old_tok)
    assert len(tok) == v_old + 5 == model.config.vocab_size == model.get_input_embeddings().weight.shape[0]
    assert model.lm_head.weight.shape[0] == v_old + 5 and not model.config.tie_word_embeddings
    for t in new:
        assert tok.tokenize(t) == [t]

    text = "Net revenue of the bank rose 12% in the quarter, driven by financial services."
    ids = old_tok.encode(text)
    assert max(ids) < v_old and tok.encode(text) != ids  # the new tokenizer uses new tokens here
    assert_close_to_scale(_logits(model, ids)[:, :v_old], _logits(old_model, ids), OLD_LOGITS_TOL)  # (2)

    # (3) each new row = mean of the original rows of the old tokenizer's pieces of that string
    emb_old = old_model.get_input_embeddings().weight.detach().numpy()
    head_old = old_model.lm_head.weight.detach().numpy()
    emb, head = model.get_input_embeddings().weight.detach().numpy(), model.lm_head.weight.detach().numpy()
    for t in new:
        pieces, row = old_tok.encode(t), tok.convert_tokens_to_ids(t)
        np.testing.assert_allclose(emb[row], _mean64(emb_old[pieces]), rtol=ONE_ROUNDING)
        np.testing.assert_allclose(head[row], _mean64(head_old[pieces]), rtol=ONE_ROUNDING)
    np.testing.assert_array_equal(emb[:v_old], emb_old)
    np.testing.assert_array_equal(head[:v_old], head_old)


def test_mean_noise_rows_are_seeded_noise_around_the_mean(bpe_model, tmp_path):
    new = ["financial", "revenue", "中国", "quarterly earnings", "EBITDA", "dividend yield"]

    def run(name, seed):
        expand_vocab(bpe_model, tmp_path / name, tokens=new, init="mean_noise", seed=seed, log=lambda s: None)
        m, t = _load(tmp_path / name)
        rows = [t.convert_tokens_to_ids(x) for x in new]
        return m.get_input_embeddings().weight.detach().numpy()[rows], m.lm_head.weight.detach().numpy()[rows]

    emb_a, head_a = run("a", 1)
    emb_b, head_b = run("b", 1)
    emb_c, _ = run("c", 2)
    np.testing.assert_array_equal(emb_a, emb_b)  # seeded: the same seed gives the same rows
    np.testing.assert_array_equal(head_a, head_b)
    assert not np.allclose(emb_a, emb_c)
    old_model, _ = _load(bpe_model)
    for got, old in ((emb_a, old_model.get_input_embeddings().weight), (head_a, old_model.lm_head.weight)):
        old = old.detach().numpy().astype(np.float64)
        z = (got - old.mean(0)) / (0.02 * old.std(0))  # the noise in units of its std: about N(0, 1)
        assert np.abs(z).max() < 6 and 0.8 < z.std() < 1.2 and abs(z.mean()) < 0.2
        assert np.abs(got - old.mean(0)).max() < 0.2 * old.std(0).min()  # close to the mean of all rows
    assert not np.allclose(emb_a[0], emb_a[1])


def test_cjk_characters_lower_tokens_per_char_on_tied_model(spm_model, zh_text, tmp_path):
    han = Counter(c for t in zh_text for c in t if re.fullmatch(r"[\u4e00-\u9fff]", c))
    top = [c for c, _ in han.most_common(500)]
    (tmp_path / "han.txt").write_text("\n".join(top) + "\n", encoding="utf-8")
    corpus = shared_data() / "zh_corpus" / "cn_finance_laws_zh_hans.jsonl"
    out = tmp_path / "out"
    rc = main(["vocab", "expand", str(spm_model), str(out), "--tokens", str(tmp_path / "han.txt"),
               "--report-corpus", str(corpus)])  # fmt: skip
    assert rc == 0
    report = json.loads((out / "vocab_expand.json").read_text())
    old_model, old_tok = _load(spm_model)
    model, tok = _load(out)
    assert report["added"] == len(tok) - len(old_tok) == 500 - report["skipped_existing"]
    assert report["added"] >= 450  # the demo tokenizer is English: few Han characters are single tokens

    def per_char(t):  # tokens per character, computed here with transformers
        return sum(len(t.encode(x, add_special_tokens=False)) for x in zh_text) / sum(len(x) for x in zh_text)

    before, after = per_char(old_tok), per_char(tok)
    # the report rounds to 6 decimals
    assert report["tokens_per_char"] == pytest.approx({"before": before, "after": after}, abs=1e-6)
    assert after < 0.6 * before  # (5) byte fallback (3 tokens a character) gives way to one token
    assert tok.tokenize("银行") == ["银", "行"]  # added tokens match inside running text, no "▁" inserted
    for line in _english()[:100]:  # English text still tokenizes as before
        assert tok.encode(line) == old_tok.encode(line)

    # (8) tied: one matrix, grown once; its new rows are the mean of the character's byte-fallback rows
    assert model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    emb_old = old_model.get_input_embeddings().weight.detach().numpy()
    emb = model.get_input_embeddings().weight.detach().numpy()
    for c in ["银", "行", top[0], top[-1]]:
        if c in old_tok.get_vocab():
            continue
        pieces = old_tok.convert_tokens_to_ids([f"<0x{b:02X}>" for b in c.encode()])
        np.testing.assert_allclose(emb[tok.convert_tokens_to_ids(c)], _mean64(emb_old[pieces]), rtol=ONE_ROUNDING)
    ids = old_tok.encode("The bank's capital ratio rose in 2023.")
    assert_close_to_scale(_logits(model, ids)[:, : len(old_tok)], _logits(old_model, ids), OLD_LOGITS_TOL)


def test_mine_cli_adds_n_new_pieces(spm_model, zh_text, tmp_path):
    corpus = tmp_path / "zh.txt"  # the first laws, as one text a line (mining speed)
    corpus.write_text("\n".join(zh_text[:8]) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    args = ["--mine", str(corpus), "--num", "60", "--pad-to-multiple", "64"]
    assert main(["vocab", "expand", str(spm_model), str(out), *args]) == 0
    report = json.loads((out / "vocab_expand.json").read_text())
    old_model, old_tok = _load(spm_model)
    model, tok = _load(out)
    n = len(old_tok) + 60
    assert model.config.vocab_size == report["vocab_size"]["after"] == -(-n // 64) * 64 > n  # padded
    emb_old = old_model.get_input_embeddings().weight.detach().numpy()
    pad_rows = model.get_input_embeddings().weight.detach().numpy()[n:]
    np.testing.assert_allclose(pad_rows, np.broadcast_to(_mean64(emb_old), pad_rows.shape), rtol=ONE_ROUNDING)
    mined = report["added_tokens"]
    assert report["added"] == len(mined) == 60 == len(tok) - len(old_tok)  # (6)
    vocab, text = old_tok.get_vocab(), corpus.read_text(encoding="utf-8")
    for piece, count in mined:
        assert piece not in vocab and SPIECE + piece not in vocab and len(old_tok.tokenize(piece)) > 1
        assert piece in text and count > 0
    assert [c for _, c in mined] == sorted((c for _, c in mined), reverse=True)
    assert report["tokens_per_char"]["after"] < report["tokens_per_char"]["before"]


def test_cli_user_errors(spm_model, tmp_path, capsys):
    missing = tmp_path / "no_such_tokens.txt"
    assert main(["vocab", "expand", str(spm_model), str(tmp_path / "o"), "--tokens", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err
    (tmp_path / "tok.txt").write_text("中\n")
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("")
    assert main(["vocab", "expand", str(spm_model), str(full), "--tokens", str(tmp_path / "tok.txt")]) == 2
    assert str(full) in capsys.readouterr().err
    assert main(["vocab", "expand", str(spm_model), str(tmp_path / "o2"), "--mine", str(tmp_path / "tok.txt")]) == 2
    assert "--num" in capsys.readouterr().err
    assert not Path(tmp_path / "o2").exists()


# The oracle for "a CJK character" (the project's ranges: kana, CJK ideographs incl. extension A and the
# compatibility block, hangul syllables), from Unicode names rather than code-point ranges.
CJK_NAMES = ("CJK UNIFIED IDEOGRAPH", "CJK COMPATIBILITY IDEOGRAPH", "HIRAGANA", "KATAKANA", "HANGUL SYLLABLE")


def _is_cjk(c: str) -> bool:
    return unicodedata.name(c, "").startswith(CJK_NAMES)


def test_mine_chars_ranks_by_count_then_code_point(spm_model):
    from jaxfin.vocab import mine_chars

    tok = transformers.AutoTokenizer.from_pretrained(spm_model)
    assert "a" in tok.get_vocab()  # an old single token, but not CJK: never counted
    texts = ["甲乙甲乙丙 abc，。", "カナかな한국 a"]  # 甲 U+7532 and 乙 U+4E59 tie at 2; ，。 are not CJK characters
    got, already = mine_chars(texts, tok, 100, log=lambda s: None)
    assert got == [("乙", 2), ("甲", 2), ("か", 1), ("な", 1), ("カ", 1), ("ナ", 1), ("丙", 1), ("국", 1), ("한", 1)]
    assert [c for c, _ in got] == sorted((c for c, _ in got), key=lambda c: (-dict(got)[c], ord(c)))
    assert already == 0
    assert mine_chars(texts, tok, 3, log=lambda s: None)[0] == got[:3]


def test_mine_chars_cli_adds_the_top_new_cjk_characters(spm_model, zh_text, tmp_path):
    texts = [*zh_text[:6], "カタカナのテスト、한국어 문장 and English 123."]
    corpus = tmp_path / "zh.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    counts = Counter(c for t in texts for c in t if _is_cjk(c))
    ranked = sorted(counts, key=lambda c: (-counts[c], ord(c)))
    old = tmp_path / "old"  # a tokenizer that already has two of the frequent characters as single tokens
    expand_vocab(spm_model, old, tokens=[ranked[0], ranked[4]], log=lambda s: None)
    old_model, old_tok = _load(old)
    vocab = old_tok.get_vocab()
    want = [c for c in ranked if c not in vocab][:40]  # the independent count, filtered by the old vocabulary

    out = tmp_path / "out"
    assert main(["vocab", "expand", str(old), str(out), "--mine-chars", str(corpus), "--num", "40"]) == 0
    report = json.loads((out / "vocab_expand.json").read_text())
    assert report["added_tokens"] == [[c, counts[c]] for c in want]
    assert report["added"] == 40 and report["chars_already_tokens"] == 2 == sum(c in vocab for c in counts)
    assert report["source"] == {"chars_mined_from": [str(corpus)], "num": 40}
    model, tok = _load(out)
    assert len(tok) == len(old_tok) + 40 == model.config.vocab_size
    for c in want:  # each new character is one token, alone and inside running text
        assert len(old_tok.encode(c, add_special_tokens=False)) > 1
        assert tok.encode(c, add_special_tokens=False) == [tok.convert_tokens_to_ids(c)]
    line = next(t for t in zh_text if want[0] in t and want[1] in t).splitlines()[-1]
    assert all(len(tok.encode(c, add_special_tokens=False)) == 1 for c in want if c in line)

    def per_char(t):  # tokens per character, computed here with transformers
        return sum(len(t.encode(x, add_special_tokens=False)) for x in texts) / sum(len(x) for x in texts)

    before, after = per_char(old_tok), per_char(tok)
    assert report["tokens_per_char"] == pytest.approx({"before": before, "after": after}, abs=1e-6)
    assert after < before and report["tokens_per_char_reduction"] == pytest.approx(1 - after / before, abs=1e-5)


def test_mine_chars_cli_user_errors(spm_model, tmp_path, capsys):
    corpus = tmp_path / "zh.txt"
    corpus.write_text("银行法\n")
    out = str(tmp_path / "o")
    with pytest.raises(SystemExit) as e:  # one token source only
        main(["vocab", "expand", str(spm_model), out, "--mine", str(corpus), "--mine-chars", str(corpus)])
    assert e.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    assert main(["vocab", "expand", str(spm_model), out, "--mine-chars", str(corpus)]) == 2
    assert "--num" in capsys.readouterr().err
    missing = tmp_path / "none.jsonl"
    assert main(["vocab", "expand", str(spm_model), out, "--mine-chars", str(corpus), str(missing), "--num", "2"]) == 2
    assert str(missing) in capsys.readouterr().err
    assert not Path(out).exists()
