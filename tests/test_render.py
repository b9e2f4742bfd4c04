"""Per-kind rendering into (tokens, loss_mask): chat templates with assistant-only targets, preference pairs.

Oracle for chat: transformers' own `apply_chat_template(..., return_assistant_tokens_mask=True)` on a ChatML
template with `{% generation %}` markers: the same tokens and the same assistant mask, computed by jinja."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import shared_data

from jaxfin.config.schema import FilterConfig, SourceConfig
from jaxfin.data import DataError
from jaxfin.data.cache import TokenCache
from jaxfin.data.prepare import prepare_source
from jaxfin.data.render import render, sequences
from jaxfin.data.sources import Document
from jaxfin.data.tokenizer import load_tokenizer

CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' }}"
    "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{% else %}{{ m['content'] + '<|im_end|>' }}{% endif %}{{ '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIALS = ["<s>", "</s>", "<|im_start|>", "<|im_end|>"]
CHAT = [
    {"role": "system", "content": "You are a careful credit analyst."},
    {"role": "user", "content": "What does a BBB- rating mean?"},
    {"role": "assistant", "content": "It is the lowest investment-grade rating."},
    {"role": "user", "content": "And BB+?"},
    {"role": "assistant", "content": "The highest speculative-grade rating, one notch below BBB-."},
]


@pytest.fixture(scope="module")
def hf_tok(tmp_path_factory):
    """A small byte-level BPE trained on real finance text, with ChatML special tokens and template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    lines = (shared_data() / "finance_corpus_en" / "beige_book_2014_2020.jsonl").read_text().splitlines()[:100]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2000, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator([json.loads(x)["text"] for x in lines], trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    hf.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    hf.chat_template = CHATML
    out = tmp_path_factory.mktemp("tok")
    hf.save_pretrained(out)
    return load_tokenizer(out)


def _oracle(tok, messages):
    enc = tok.hf.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    return list(enc["input_ids"]), list(enc["assistant_masks"])


@pytest.mark.parametrize("template", ["tokenizer", "chatml"])
def test_chat_tokens_and_assistant_mask_match_transformers(hf_tok, template):
    [(tokens, mask)] = render("chat", {"messages": CHAT}, hf_tok, template)
    ids, assistant = _oracle(hf_tok, CHAT)
    assert tokens == ids
    assert mask == assistant
    # and what is trained is exactly the assistant turns with their end-of-turn token
    trained = hf_tok.hf.decode([t for t, m in zip(tokens, mask) if m])
    assert trained == "".join(m["content"] + "<|im_end|>" for m in CHAT if m["role"] == "assistant")


def test_llama3_template_needs_its_special_tokens(hf_tok):
    doc = Document("s", "x:1", "chat", {"messages": CHAT})
    with pytest.raises(DataError, match="<\\|begin_of_text\\|>"):
        list(sequences([doc], "chat", hf_tok, "llama3"))


def test_pairs_are_two_sequences_with_completion_targets(hf_tok):
    data = {"prompt": "Should the bank raise rates?", "chosen": " Yes, inflation is high.", "rejected": " No."}
    (chosen, cmask), (rejected, rmask) = render("pairs", data, hf_tok)
    prompt = [hf_tok.bos_id, *hf_tok.encode(data["prompt"])]
    for ids, mask, completion in ((chosen, cmask, data["chosen"]), (rejected, rmask, data["rejected"])):
        assert ids[: len(prompt)] == prompt and set(mask[: len(prompt)]) == {0}
        target = [t for t, m in zip(ids, mask) if m]
        assert target == [*hf_tok.encode(completion), hf_tok.eos_id]


def test_completion_is_bos_prompt_completion_eos_with_completion_targets(hf_tok):
    """The prompt is context, the completion and EOS are targets, each tokenized on its own: the prompt part is
    exactly what `generate` feeds (BOS + prompt), so the trained answer is what generation continues with."""
    from jaxfin.eval.generate import render_prompt

    data = {"prompt": "Sentiment of 'Profit fell 20%':", "completion": " negative"}
    [(ids, mask)] = render("completion", data, hf_tok)
    prompt = render_prompt(data["prompt"], hf_tok, None)
    assert ids[: len(prompt)] == prompt and set(mask[: len(prompt)]) == {0}
    assert ids[len(prompt) :] == [*hf_tok.encode(data["completion"]), hf_tok.eos_id] and set(mask[len(prompt) :]) == {1}


def test_text_is_bos_text_eos_with_no_mask(hf_tok):
    docs = [Document("s", f"x:{i}", "text", {"text": t}) for i, t in enumerate(["Rates rose.", "Spreads tightened."])]
    out = list(sequences(docs, "text", hf_tok))
    assert out == [([hf_tok.bos_id, *hf_tok.encode(d.data["text"]), hf_tok.eos_id], None) for d in docs]


def test_prepare_chat_source_from_real_instructions(hf_tok, tmp_path):
    """gsm8k instruction/output records -> chat sequences in the cache with the assistant mask stored."""
    lines = (shared_data() / "instructions" / "gsm8k_test.jsonl").read_text().splitlines()[:40]
    path = tmp_path / "gsm8k.jsonl"
    path.write_text("\n".join(lines) + "\n")
    src = SourceConfig(name="gsm8k", path=str(path), kind="chat", chat_template="chatml")
    rep = prepare_source(src, hf_tok, tmp_path / "cache", FilterConfig())
    cache = TokenCache(rep["cache"])
    assert len(cache) == rep["kept"] == 40 and cache.mask is not None
    for i, line in enumerate(lines[:5]):
        rec = json.loads(line)
        mask = np.asarray(cache.loss_mask(i))
        trained = hf_tok.hf.decode(cache.doc(i)[mask == 1].tolist())
        assert trained == rec["output"] + "<|im_end|>"  # only the answer (and its end-of-turn) is trained
    # packed rows carry the stored mask: only answers are targets in training batches (joint CPT+IT)
    from jaxfin.data.loader import SourceRows

    rows = SourceRows("gsm8k", cache, 256, seed=0, method="best_fit", window=100)
    plan = rows._plan(0)[0]
    row = rows.row(0)
    for s, (d, a, b) in enumerate(plan, 1):
        assert np.array_equal(row["loss_mask"][row["segment_ids"] == s], np.asarray(cache.loss_mask(d))[a:b])
    assert 0 < row["loss_mask"].sum() < (row["segment_ids"] != 0).sum()
