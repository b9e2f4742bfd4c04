"""KV-cache generation (jaxfin/eval/generate.py), `jaxfin generate`, and the generative finance tasks
(jaxfin/eval/gen_tasks.py): cache vs full forward, greedy vs transformers, sampling filters, metric math."""

import json

import numpy as np
import pytest
from conftest import REPO, tiny_hf_llama
from tolerances import assert_close_to_scale, rounding_tol

TOKENIZER = REPO / "demo_data/tokenizer.model"
KEY = np.array([0, 0], np.uint32)  # a raw PRNG key (greedy ignores it)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(HF dir, transformers model, jaxfin Model, tokenizer): a tiny random Llama with GQA 4/2."""
    import torch

    import jaxfin
    from jaxfin.data.tokenizer import load_tokenizer

    hf = tiny_hf_llama()
    with torch.no_grad():  # larger weights than the 0.02 init: peaked, varied next-token distributions
        for p in hf.parameters():
            if p.ndim > 1:
                p.mul_(8.0)
    d = tmp_path_factory.mktemp("hf")
    hf.save_pretrained(d)
    return d, hf, jaxfin.load_model(d, compute_dtype="float32"), load_tokenizer(TOKENIZER)


PROMPTS = [[2, 17, 400, 33], [2, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 18, 19, 20, 21, 22], [2, 900]]


def test_kv_cache_logits_equal_full_forward(tiny):
    """Every generated position's logits (prefill's last and each decode step's) equal a full forward pass over
    the unpadded prompt + generated tokens, for a left-padded batch of different lengths (GQA)."""
    from jaxfin.eval.generate import bucket, decode_fn, left_pad
    from jaxfin.model import forward

    _, _, model, _ = tiny
    n = 10
    fn = decode_fn(model.config, n, True, keep_logits=True)
    knobs = (np.float32(1.0), np.int32(0), np.float32(1.0))
    tokens, pad = left_pad(PROMPTS, bucket(max(map(len, PROMPTS))), 4)
    no_eos = np.array([-1], np.int32)  # every row runs n steps
    out, lengths, logits = map(np.asarray, fn(model.params, tokens, pad, KEY, no_eos, *knobs))
    assert (lengths[:3] == n).all() and lengths[3] == 1  # the filler row generates nothing
    # two float32 programs (cache vs full forward): depth 4L reductions of <= F terms, relative to max |logit|; the
    # argmax check is safe as the smallest top-1/top-2 logit gap here (6e-3) is ~40x that bound (~1.6e-4)
    c = model.config
    tol = rounding_tol(np.float32, c.intermediate_size, depth=4 * c.num_layers)  # ~5e-5
    for r, prompt in enumerate(PROMPTS):
        seq = np.array([prompt + out[r].tolist()], np.int32)
        full = np.asarray(forward(model.params, model.config, seq))[0]
        want = full[len(prompt) - 1 : len(prompt) - 1 + n]
        assert_close_to_scale(logits[r], want, tol)
        assert (out[r] == want.argmax(-1)).all()
    stop = 388  # a token some rows generate: those rows stop right after it, the others run on
    out2, lengths2, _ = map(np.asarray, fn(model.params, tokens, pad, KEY, np.array([stop], np.int32), *knobs))
    for r in range(len(PROMPTS)):
        hits = np.flatnonzero(out[r] == stop)
        expect = hits[0] + 1 if len(hits) else n
        assert lengths2[r] == expect and (out2[r, :expect] == out[r, :expect]).all()
        assert (out2[r, expect:] == stop).all()
    assert sorted(set(lengths2[:3].tolist())) != [n]  # the stop token did end some row early


def test_greedy_equals_transformers_and_is_deterministic(tiny):
    """Greedy generation is token-exact with transformers' generate(do_sample=False), prompt by prompt, for a
    batch with padding; two runs (and a different batch size) give the same tokens."""
    import torch

    from jaxfin.eval.generate import GenerationConfig, generate_full

    _, hf, model, tok = tiny
    cfg = GenerationConfig(max_new_tokens=10)
    gens = generate_full(model, tok, PROMPTS, cfg, batch_size=4)
    # token-exact across two float32 programs: the smallest top-1/top-2 logit gap on these steps is 6e-3, far above
    # the ~2e-6 the two frameworks' logits differ by
    for prompt, g in zip(PROMPTS, gens):
        with torch.no_grad():
            ref = hf.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=10, eos_token_id=3,
                              pad_token_id=0, attention_mask=torch.ones(1, len(prompt), dtype=torch.long))  # fmt: skip
        assert g.tokens == ref[0, len(prompt) :].tolist()
        assert g.finish_reason == ("eos" if g.tokens[-1] == 3 else "length")
    again = generate_full(model, tok, PROMPTS[::-1], cfg, batch_size=4)  # other rows, other padding
    assert [g.tokens for g in again[::-1]] == [g.tokens for g in gens]


def test_sampling_top_k_one_is_greedy_and_seeded(tiny):
    from jaxfin.eval.generate import GenerationConfig, generate_full

    _, _, model, tok = tiny
    greedy = generate_full(model, tok, PROMPTS, GenerationConfig(max_new_tokens=10), batch_size=4)
    top1 = generate_full(
        model, tok, PROMPTS, GenerationConfig(max_new_tokens=10, temperature=1.3, top_k=1, seed=5), batch_size=4
    )
    assert [g.tokens for g in top1] == [g.tokens for g in greedy]
    hot = GenerationConfig(max_new_tokens=10, temperature=2.0, seed=1)
    a, b = (generate_full(model, tok, PROMPTS, hot, batch_size=4) for _ in range(2))
    assert [g.tokens for g in a] == [g.tokens for g in b]  # same seed, same draws
    other = generate_full(
        model, tok, PROMPTS, GenerationConfig(max_new_tokens=10, temperature=2.0, seed=2), batch_size=4
    )
    assert [g.tokens for g in other] != [g.tokens for g in a]


def test_top_p_and_top_k_filters_on_a_hand_made_distribution():
    """probs (0.5, 0.05, 0.25, 0.2): top_p 0.7 keeps {0, 2} (0.5 + 0.25 reaches 0.7), top_p 0.75 still {0, 2}
    (0.75 >= 0.75), top_p 0.76 adds 3; top_p 0.3 keeps the best alone; top_k 2 keeps {0, 2}."""
    import jax
    import jax.numpy as jnp

    from jaxfin.eval.generate import NEG, filter_logits, sample

    logits = jnp.log(jnp.array([0.5, 0.05, 0.25, 0.2]))
    kept = lambda **kw: set(np.flatnonzero(np.asarray(filter_logits(logits, **kw)) > NEG / 2).tolist())  # noqa: E731
    assert kept(top_p=0.7) == {0, 2}
    assert kept(top_p=0.75 - 1e-6) == {0, 2}  # float32 log, softmax of 4, cumsum: ~8 roundings (~4e-7) off 0.75
    assert kept(top_p=0.76) == {0, 2, 3}
    assert kept(top_p=0.3) == {0}
    assert kept(top_k=2) == {0, 2}
    assert kept(top_k=3, top_p=0.7) == {0, 2}
    batch = jnp.stack([logits, logits[::-1]])  # batched rows filter independently
    f = np.asarray(filter_logits(batch, top_p=0.7)) > NEG / 2
    assert f[0].tolist() == [True, False, True, False] and f[1].tolist() == [False, True, False, True]
    draws = sample(jnp.broadcast_to(logits, (4000, 4)), jax.random.PRNGKey(0), 1.0, 0, 0.7)
    freq = np.bincount(np.asarray(draws), minlength=4) / 4000  # renormalised: 0.5/0.75, 0.25/0.75
    np.testing.assert_allclose(freq, [2 / 3, 0, 1 / 3, 0], atol=0.03)  # 4 binomial sd (sqrt(2/9/4000) = 0.0075)


def test_prefill_runs_through_the_attention_backend(monkeypatch):
    """The prefill attends through jaxfin.kernels.attention with model.attention_backend: the Pallas kernel
    (interpreted on CPU) gives the xla backend's logits and tokens, left padding (segment 0) and GQA included; and
    the backend is really called with the padding as segment 0."""
    import dataclasses
    import importlib

    from jaxfin.eval import generate as G

    A = importlib.import_module("jaxfin.kernels.attention")  # the module (the package exports the function)

    import jax

    from jaxfin.config.schema import ModelConfig
    from jaxfin.model import init_params

    # the Pallas kernel needs a power-of-two head dim >= 16: 64 / 4 heads, 2 kv heads
    base = ModelConfig(vocab_size=1024, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
                       num_kv_heads=2, max_position_embeddings=128, compute_dtype="float32")  # fmt: skip
    params = init_params(base, jax.random.PRNGKey(0))
    tokens, pad = G.left_pad(PROMPTS, G.bucket(max(map(len, PROMPTS))), 4)
    args = (tokens, pad, KEY, np.array([-1], np.int32), np.float32(1.0), np.int32(0), np.float32(1.0))
    seen = []
    real = A.resolve_backend
    monkeypatch.setattr(A, "resolve_backend", lambda q, k, b="auto": seen.append(b) or real(q, k, b))
    runs = {}
    for backend in ("xla", "pallas"):
        cfg = dataclasses.replace(base, attention_backend=backend)
        runs[backend] = [np.asarray(x) for x in G.decode_fn(cfg, 4, True, keep_logits=True)(params, *args)]
    assert seen == ["xla", "pallas"]  # one prefill trace each
    np.testing.assert_allclose(runs["pallas"][2][:3], runs["xla"][2][:3], atol=1e-4, rtol=1e-4)
    np.testing.assert_array_equal(runs["pallas"][0][:3], runs["xla"][0][:3])


def test_stop_strings_and_lora_merge(tiny):
    """A stop string cuts the text before it; a model with zero-initialised LoRA adapters generates as its base."""
    import dataclasses

    import jax

    from jaxfin.eval.generate import GenerationConfig, generate_full
    from jaxfin.model import Model
    from jaxfin.model.lora import add_adapters

    _, _, model, tok = tiny
    base = generate_full(model, tok, ["Revenue rose"], GenerationConfig(max_new_tokens=10), batch_size=4)[0]
    assert base.text and base.finish_reason in ("eos", "length")
    stop = base.text[len(base.text) // 2 : len(base.text) // 2 + 2]
    cut = generate_full(
        model, tok, ["Revenue rose"], GenerationConfig(max_new_tokens=10, stop=["@@", stop]), batch_size=4
    )[0]
    assert cut.text == base.text[: base.text.find(stop)] and cut.finish_reason == "stop"
    n = next(n for n in range(1, 11) if stop in tok.decode(base.tokens[:n]))  # the token completing the stop
    assert cut.tokens == base.tokens[:n]
    lcfg = dataclasses.replace(model.config, lora=dataclasses.replace(model.config.lora, rank=4))
    lora = Model(lcfg, add_adapters(model.params, lcfg, jax.random.PRNGKey(1)))
    assert (
        generate_full(lora, tok, ["Revenue rose"], GenerationConfig(max_new_tokens=10), batch_size=4)[0].tokens
        == base.tokens
    )


def test_stop_strings_end_rows_inside_the_loop(tiny, monkeypatch):
    """Stop strings are looked for every STOP_CHECK_EVERY tokens while decoding: a row whose text holds one
    generates nothing more from the next piece on, and the batch ends once every row has stopped, long before
    max_new_tokens; the texts equal an unstopped run's, cut before the stop string."""
    from jaxfin.eval import generate as G

    _, _, model, tok = tiny
    prompts = ["Revenue rose", "Profit fell", "The bank said"]
    full = G.generate_full(model, tok, prompts, G.GenerationConfig(max_new_tokens=48), batch_size=4)
    assert all(g.finish_reason == "length" for g in full)  # the tiny model runs on: a stop string must end it
    stops = [g.text[4:6] for g in full]  # one per row, early in its text
    cfg = G.GenerationConfig(max_new_tokens=48, stop=stops)
    calls = []
    real = G._decode_with_stops
    monkeypatch.setattr(G, "_decode_with_stops", lambda *a: calls.append(r := real(*a)) or r)
    cut = G.generate_full(model, tok, prompts, cfg, batch_size=4)
    for g, c in zip(full, cut):
        first = min(i for i in (g.text.find(s) for s in stops) if i >= 0)
        assert c.finish_reason == "stop" and c.text == g.text[:first]
    out, lengths, stopped = calls[0]
    assert sorted(stopped) == [0, 1, 2]
    assert lengths[:3].max() <= max(stopped.values()) + G.STOP_CHECK_EVERY < 48  # the loop ended early
    fill = G.stop_token_ids(model, tok)[0]  # what a row that is done writes
    for r in stopped:
        assert (out[r, lengths[r] :] == fill).all()  # nothing generated after the row stopped


CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def test_chat_templates(tiny, tmp_path):
    """A prompt rendered with the tokenizer's own template equals transformers' apply_chat_template(...,
    add_generation_prompt=True) ids, and so does the built-in chatml; the end-of-turn token stops a generation;
    a string prompt is one user turn; generation on the rendered ids = generation on the messages."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from jaxfin.data.tokenizer import load_tokenizer
    from jaxfin.eval.generate import GenerationConfig, generate_full, render_prompt, stop_token_ids

    _, _, model, _ = tiny
    lines = (REPO / "demo_data/finance_train.jsonl").read_text().splitlines()[:200]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1000, special_tokens=["<s>", "</s>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    bpe.train_from_iterator([json.loads(x)["text"] for x in lines], trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>")
    hf.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    hf.chat_template = CHATML
    hf.save_pretrained(tmp_path / "tok")
    tok = load_tokenizer(tmp_path / "tok")
    chat = [{"role": "system", "content": "You are a credit analyst."}, {"role": "user", "content": "Rate BBB-?"}]
    want = list(hf.apply_chat_template(chat, add_generation_prompt=True, return_dict=True)["input_ids"])
    assert render_prompt(chat, tok, "tokenizer") == want
    assert render_prompt(chat, tok, "chatml") == want
    one = hf.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True, return_dict=True)
    assert render_prompt("Hi", tok, "tokenizer") == list(one["input_ids"])
    im_end = hf.convert_tokens_to_ids("<|im_end|>")
    assert im_end in stop_token_ids(model, tok, "chatml") and im_end in stop_token_ids(model, tok, "tokenizer")
    cfg = GenerationConfig(max_new_tokens=10)
    a = generate_full(model, tok, [chat], cfg, batch_size=4, chat_template="tokenizer")[0]
    b = generate_full(model, tok, [want], cfg, batch_size=4, chat_template="tokenizer")[0]
    assert a.prompt_tokens == want and a.tokens == b.tokens
    with pytest.raises(ValueError, match="chat template"):
        render_prompt(chat, tok, None)


def test_generate_cli(tiny, tmp_path, capsys):
    """`jaxfin generate MODEL --prompts FILE --out FILE.jsonl`: one record per prompt, greedy = the API."""
    from jaxfin.cli import main
    from jaxfin.eval.generate import GenerationConfig, generate

    d, _, model, tok = tiny
    (d / "tokenizer.model").write_bytes(TOKENIZER.read_bytes())  # the model folder's own tokenizer
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "Net income"}) + "\n" + json.dumps({"prompt": "The bank"}) + "\n")
    out = tmp_path / "out.jsonl"
    rc = main(["generate", str(d), "--prompts", str(prompts), "--max-new-tokens", "10", "--out", str(out),
               "--batch-size", "4", "--tokenizer", str(TOKENIZER)])  # fmt: skip
    assert rc == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == ["Net income", "The bank"]
    assert [r["text"] for r in rows] == generate(
        model, tok, ["Net income", "The bank"], GenerationConfig(10), batch_size=4
    )
    txt = tmp_path / "p.txt"
    txt.write_text("Net income\n\nThe bank\n")
    assert main(["generate", str(d), "--prompts", str(txt), "--max-new-tokens", "10", "--batch-size", "4",
                 "--stop", "@@", "\\n", "--top-k", "1", "--temperature", "0.5"]) == 0  # fmt: skip
    printed = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["tokens"] for r in printed] == [r["tokens"] for r in rows]  # top-k 1 = greedy; the folder's tokenizer
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\n{"nope": 1}\n')
    assert main(["generate", str(d), "--prompts", str(bad), "--tokenizer", str(TOKENIZER)]) == 2


# ---------------------------------------------------------------------------------------------------------------
# Generative tasks: metric math on hand-computed cases, then a tiny end-to-end run of each task


def test_tatqa_numbers_and_normalisation():
    from jaxfin.eval.gen_tasks import is_number, normalize_answer, to_number

    assert to_number("(134)") == -134 and to_number("12%") == 0.12 and to_number("1.5 million") == 1500000
    assert to_number("$1,496.5") == 1496.5 and to_number("no number") is None
    assert is_number("$1,496.5") and is_number("3 million") and not is_number("3 apples") and not is_number("abc")
    assert normalize_answer("The Company's  fixed-price") == "companys fixedprice"
    assert normalize_answer("1,496.50") == "1496.5"


@pytest.mark.parametrize(
    "pred, scale, gold, want",
    [
        # arithmetic -12.6 million: both sides become -12600000.0000; a missing scale is wrong (F1 = EM here)
        (["-12.6"], "million", {"answer": -12.6, "answer_type": "arithmetic", "scale": "million"}, (1.0, 1.0)),
        (["-12.6"], "", {"answer": -12.6, "answer_type": "arithmetic", "scale": "million"}, (0.0, 0.0)),
        (["-12600000"], "", {"answer": -12.6, "answer_type": "arithmetic", "scale": "million"}, (1.0, 1.0)),
        # percent: -22.22 percent = -0.2222; so does an unscaled ratio -0.2222
        (["-22.22"], "percent", {"answer": -22.22, "answer_type": "arithmetic", "scale": "percent"}, (1.0, 1.0)),
        (["-0.2222"], "", {"answer": -22.22, "answer_type": "arithmetic", "scale": "percent"}, (1.0, 1.0)),
        (["-22.22"], "", {"answer": -22.22, "answer_type": "arithmetic", "scale": "percent"}, (0.0, 0.0)),
        # a span that is a number: $1,496.5 million = 1496500000.0000
        (["1496.5"], "million", {"answer": ["$1,496.5"], "answer_type": "span", "scale": "million"}, (1.0, 1.0)),
        (["3"], "", {"answer": 3, "answer_type": "count", "scale": ""}, (1.0, 1.0)),
        # multi-span: gold bag {costplus, type, fixedprice, timeandmaterial}, predicted {costplus, type, fixedprice}:
        # P 1, R 3/4, F1 = 2 * 0.75 / 1.75 = 0.857 -> 0.86
        (["fixed-price type", "cost-plus type"], "",
         {"answer": ["fixed-price type", "cost-plus type", "time-and-material type"], "answer_type": "multi-span",
          "scale": ""}, (0.0, 0.86)),
        (["cost-plus type", "time-and-material type", "fixed-price type"], "",
         {"answer": ["fixed-price type", "cost-plus type", "time-and-material type"], "answer_type": "multi-span",
          "scale": ""}, (1.0, 1.0)),
        # text span: gold bag {our, allowable, incurred, costs, plus, profit} (article dropped), predicted
        # {allowable, costs}: P 1, R 1/3, F1 = 0.5
        (["allowable costs"], "", {"answer": ["our allowable incurred costs plus a profit"], "answer_type": "span",
                                   "scale": ""}, (0.0, 0.5)),
        (["company"], "", {"answer": ["the Company"], "answer_type": "span", "scale": ""}, (1.0, 1.0)),
        ([], "", {"answer": ["2019"], "answer_type": "span", "scale": ""}, (0.0, 0.0)),
    ],
)  # fmt: skip
def test_tatqa_em_f1_hand_computed(pred, scale, gold, want):
    from jaxfin.eval.gen_tasks import tatqa_em_f1

    assert tatqa_em_f1(pred, scale, gold) == want


def test_tatqa_answer_parsing():
    from jaxfin.eval.gen_tasks import parse_tatqa_answer

    assert parse_tatqa_answer(" Answer: 1,496.5 million\nQuestion: x") == (["1,496.5"], "million")
    assert parse_tatqa_answer("22.22%") == (["22.22"], "percent")
    assert parse_tatqa_answer("-12.6 Thousands.") == (["-12.6"], "thousand")
    assert parse_tatqa_answer("fixed-price type; cost-plus type") == (["fixed-price type", "cost-plus type"], "")
    assert parse_tatqa_answer("\n\n") == ([], "")


def test_ner_entities_parsing_and_micro_f1():
    from jaxfin.eval.gen_tasks import conll_entities, ner_f1, parse_entities

    toks = ["Silicium", "de", "Provence", "SAS", "and", "Evergreen", "Solar", "Inc", ".", "HERBERT", "SMITH"]
    tags = ["I-ORG"] * 4 + ["O"] + ["I-ORG"] * 3 + ["O", "I-PER", "I-PER"]
    gold1 = conll_entities(toks, tags)
    assert gold1 == [("organization", "Silicium de Provence SAS"), ("organization", "Evergreen Solar Inc"),
                     ("person", "HERBERT SMITH")]  # fmt: skip
    assert conll_entities(["A", "B"], ["B-LOC", "B-LOC"]) == [("location", "A"), ("location", "B")]
    pred1 = parse_entities("organization: Evergreen Solar Inc.\n- Person: Herbert  Smith\nfoo: bar\nnone\nlocation:")
    assert pred1 == [("organization", "evergreen solar inc"), ("person", "herbert smith")]
    # sentence 1: 2 of 2 predicted are right, 3 gold; sentence 2: 1 gold (loc), 1 wrong prediction (org), and a
    # duplicate gold entity predicted once. TP 2 + 1 = 3, predicted 2 + 2 = 4, gold 3 + 3 = 6:
    # P 3/4, R 1/2, F1 = 2 * 3/8 / (5/4) = 0.6
    gold2 = [("location", "New York"), ("person", "Jo"), ("person", "Jo")]
    pred2 = [("organization", "New York"), ("person", "jo")]
    m = ner_f1([pred1, pred2], [gold1, gold2])
    assert (m["tp"], m["predicted"], m["gold"]) == (3, 4, 6)
    assert m["precision"] == pytest.approx(0.75) and m["recall"] == pytest.approx(0.5)
    assert m["ner_f1"] == pytest.approx(0.6)
    assert ner_f1([[]], [[("person", "x")]])["ner_f1"] == 0.0


@pytest.mark.parametrize("name", ["ner", "tatqa"])
def test_generative_task_end_to_end(tiny, name):
    """The shipped task YAML on the shared data, 5 examples, a tiny random model: the pipeline runs through the
    task dispatcher and returns one well-formed record per example (the scores of a random model are ~0)."""
    from conftest import shared_data

    from jaxfin.eval.gen_tasks import read_conll, read_tatqa
    from jaxfin.eval.tasks import run_task

    data = shared_data()
    _, _, model, tok = tiny
    res = run_task(model, tok, REPO / f"configs/eval/tasks/{name}.yaml", batch_size=4, limit=5)
    assert res["task"] == name and res["n"] == 5 and len(res["examples"]) == 5
    ex = res["examples"]
    assert all(isinstance(e["generation"], str) and e["prompt_tokens"] <= model.config.max_position_embeddings
               for e in ex)  # fmt: skip
    if name == "ner":
        gold = read_conll(data / "finance_ner_alvarado/FIN3_test.conll.txt")[:5]
        assert [e["id"] for e in ex] == [g["id"] for g in gold]
        assert sum(len(e["gold"]) for e in ex) == res["metrics"]["gold"] > 0
        assert 0.0 <= res["metrics"]["ner_f1"] <= 1.0
    else:
        gold = read_tatqa(data / "tatqa/tatqa_dataset_dev.json")[:5]
        assert [e["id"] for e in ex] == [g["id"] for g in gold]
        assert [e["gold"] for e in ex] == [g["answer"] for g in gold]
        assert all(e["truncated"] for e in ex) and res["metrics"]["truncated"] == 5  # tables > 256 tokens
        assert res["metrics"]["exact_match"] == np.mean([e["em"] for e in ex])
        assert 0.0 <= res["metrics"]["f1"] <= 1.0


def test_tatqa_gold_answers_written_in_the_prompt_format_score_one():
    """Every dev answer, written as the prompt asks (spans joined by '; ', then the scale word) and parsed back,
    scores EM 1, except two whose own text is ambiguous in that format ('$(9.8) million' with no gold scale, which
    the official number reader takes as -9.8, and the span 'in thousands')."""
    from conftest import shared_data

    from jaxfin.eval.gen_tasks import parse_tatqa_answer, read_tatqa, tatqa_answer, tatqa_em_f1

    exs = read_tatqa(shared_data() / "tatqa/tatqa_dataset_dev.json")
    assert len(exs) == 1668
    missed = [ex["answer"] for ex in exs if tatqa_em_f1(*parse_tatqa_answer(tatqa_answer(ex)), ex)[0] != 1.0]
    assert missed == [["$(9.8) million"], ["in thousands"]]
