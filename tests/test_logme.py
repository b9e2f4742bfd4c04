"""LogME layer selection (issue 21, point 2): `logme` against a direct maximisation of the closed-form evidence
(scipy, no fixed point), the layer ranking on synthetic features with a known best layer, the per-layer hidden
states of the layer scan against the decoder and a hand-written layer loop, mean pooling per segment, the
`@logme:K` shortcut in a short training run (only the chosen layers move; logme.json is read back on resume), its
errors, and `jaxfin select-layers`."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from flax.traverse_util import flatten_dict
from scipy.optimize import minimize
from scipy.stats import multivariate_normal

import jaxfin
from jaxfin.cli import main
from jaxfin.config import ConfigError, load_config
from jaxfin.config.schema import ModelConfig
from jaxfin.data.tokenizer import load_tokenizer
from jaxfin.model import init_params, param_shapes
from jaxfin.model.llama import decoder, decoder_layer, layer_outputs, rms_norm, rope_frequencies, rope_tables
from jaxfin.train import train
from jaxfin.train.logme import layer_features, logme, rank_features, rank_layers, resolve_trainable, segment_means
from jaxfin.train.trainable import selection
from tests.conftest import REPO, tiny_hf_llama

TOKENIZER = REPO / "demo_data/tokenizer.model"
L3 = 3  # layers of the tiny model the CLI and training tests rank


# ---------------------------------------------------------------------------------------------- the oracle


def direct_evidence(f, y, a, b) -> float:
    """L(a, b) = N/2 log b + D/2 log a - N/2 log 2pi - b/2 |F m - y|^2 - a/2 m'm - 1/2 log|A|, A = a I + b F'F
    (D x D), m = b A^-1 F'y."""
    n, d = f.shape
    A = a * np.eye(d) + b * f.T @ f
    m = b * np.linalg.solve(A, f.T @ y)
    r = f @ m - y
    logdet = np.linalg.slogdet(A)[1]
    return (
        n / 2 * np.log(b) + d / 2 * np.log(a) - n / 2 * np.log(2 * np.pi) - b / 2 * r @ r - a / 2 * m @ m - logdet / 2
    )


def marginal_evidence(f, y, a, b) -> float:
    """The same evidence as the density of y under its marginal N(0, F F'/a + I/b) (N x N)."""
    return multivariate_normal(np.zeros(len(y)), f @ f.T / a + np.eye(len(y)) / b).logpdf(y)


def direct_logme(features, labels) -> float:
    """LogME by maximising the evidence with Nelder-Mead over (log a, log b) from two starts (no fixed point, no
    SVD); mean over the classes of the maximum, over N. With N <= D the maximum can lie at b -> infinity (a
    noise-free fit), where the D x D form loses its precision: there the marginal form is maximised."""
    f = np.asarray(features, np.float64)
    form = direct_evidence if f.shape[0] > f.shape[1] else marginal_evidence
    best = []
    for c in np.unique(labels):
        y = (labels == c).astype(np.float64)
        opts = dict(xatol=1e-10, fatol=1e-13, maxiter=5000)
        runs = [minimize(lambda th, y=y: -form(f, y, *np.exp(th)), x0, method="Nelder-Mead", options=opts)
                for x0 in ([0.0, 0.0], [3.0, 3.0])]  # fmt: skip
        best.append(-min(r.fun for r in runs))
    return float(np.mean(best)) / f.shape[0]


@pytest.mark.parametrize(
    "n, d, classes, signal",
    [(80, 12, 3, 1.0), (40, 64, 4, 1.0), (200, 8, 2, 0.5), (60, 10, 3, 0.0)],  # D > N in the second
)
def test_logme_equals_the_direct_maximum_of_the_evidence(n, d, classes, signal):
    rng = np.random.default_rng(n + d)
    labels = rng.integers(0, classes, n)
    feats = signal * np.eye(classes)[labels] @ rng.normal(size=(classes, d)) + rng.normal(size=(n, d)) + 0.3
    y = (labels == 0).astype(np.float64)
    for a, b in ((0.7, 3.0), (50.0, 0.2)):  # the oracle's two forms are one function
        assert direct_evidence(feats, y, a, b) == pytest.approx(marginal_evidence(feats, y, a, b), rel=1e-9)
    got, want = logme(feats, labels), direct_logme(feats, labels)
    assert got == pytest.approx(want, rel=1e-6)


def test_logme_refuses_one_class_and_bad_shapes():
    with pytest.raises(ValueError, match="at least 2"):
        logme(np.ones((5, 3)), np.zeros(5, int))
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        logme(np.ones((5, 3)), np.zeros(4, int))


def test_rank_features_puts_the_decodable_layer_first():
    """Labels are a linear function of layer 2's features (plus noise); the other layers are noise."""
    rng = np.random.default_rng(0)
    n, d, c = 150, 16, 3
    labels = rng.integers(0, c, n)
    feats = rng.normal(size=(5, n, d))
    feats[2] = 3 * np.eye(c)[labels] @ rng.normal(size=(c, d)) + 0.5 * rng.normal(size=(n, d))
    ranking = rank_features(feats, labels)
    assert [r["layer"] for r in ranking][0] == 2
    assert sorted(r["layer"] for r in ranking) == list(range(5))
    assert ranking[0]["logme"] > ranking[1]["logme"] + 0.1
    assert ranking[0]["logme"] == pytest.approx(logme(feats[2], labels))


# ---------------------------------------------------------------------------------------------- hidden states

CFG = ModelConfig(vocab_size=97, hidden_size=32, intermediate_size=48, num_layers=3, num_heads=4, num_kv_heads=2,
                  compute_dtype="float32", max_position_embeddings=64)  # fmt: skip


def test_layer_outputs_match_the_decoder_and_a_layer_by_layer_loop():
    params = init_params(CFG, jax.random.key(0))
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(0, 97, (2, 12)))
    seg = jnp.asarray([[1] * 5 + [2] * 4 + [0] * 3, [1] * 12])
    pos = jnp.asarray([list(range(5)) + list(range(4)) + [0] * 3, list(range(12))])
    got = layer_outputs(params, CFG, tokens, seg, pos)
    assert got.shape == (3, 2, 12, 32)
    # the last one is what the decoder normalises
    final, _ = decoder(params, CFG, tokens, seg, pos)
    np.testing.assert_allclose(rms_norm(got[-1], params["norm"]["scale"], CFG.rms_norm_eps), final, atol=1e-6)
    # each one is the previous one through decoder_layer (a plain Python loop, no scan)
    h = params["embed_tokens"]["embedding"][tokens]
    rope = rope_tables(pos, rope_frequencies(CFG))
    for i in range(3):
        h, _ = decoder_layer(CFG, jax.tree.map(lambda w, i=i: w[i], params["layers"]), h, seg, rope)
        np.testing.assert_allclose(got[i], h, atol=1e-5, err_msg=f"layer {i}")
    # the Python-loop path (scan_layers false) emits the same
    unrolled = layer_outputs(params, dataclasses.replace(CFG, scan_layers=False), tokens, seg, pos)
    np.testing.assert_allclose(unrolled, got, atol=1e-6)


def test_segment_means_ignore_padding_and_the_other_segments():
    h = jnp.asarray(np.random.default_rng(1).normal(size=(2, 7, 4)), jnp.float32)
    seg = jnp.asarray([[1, 1, 2, 2, 2, 0, 0], [1, 1, 1, 1, 1, 1, 1]])
    got = np.asarray(segment_means(h, seg, 3))
    x = np.asarray(h)
    np.testing.assert_allclose(got[0, 0], x[0, :2].mean(0), rtol=1e-6)
    np.testing.assert_allclose(got[0, 1], x[0, 2:5].mean(0), rtol=1e-6)
    np.testing.assert_allclose(got[1, 0], x[1].mean(0), rtol=1e-6)
    assert not got[0, 2].any() and not got[1, 1:].any()  # segments a row does not have


# ---------------------------------------------------------------------------------------------- a tiny model + task


@pytest.fixture(scope="module")
def hf3(tmp_path_factory):
    """A tiny random HF Llama of 3 layers (the demo tokenizer's vocabulary)."""
    path = tmp_path_factory.mktemp("hf3")
    tiny_hf_llama(num_hidden_layers=L3, max_position_embeddings=128).save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture(scope="module")
def task_yaml(tmp_path_factory):
    """A two-class multiple-choice task on 24 short synthetic sentences."""
    d = tmp_path_factory.mktemp("task")
    long = "Profits jumped this year as lending margins widened, fee income rose and credit losses stayed low"
    up = ["Shares rose sharply after strong earnings", "Revenue grew and the stock gained", long]  # rows of 64: 2+ each
    down = ["Shares fell after weak guidance", "The bank cut its outlook and the stock dropped", "Losses widened"]
    rows = [{"text": f"{t} ({i})", "label": lab} for i in range(4) for lab, ts in (("up", up), ("down", down))
            for t in ts]  # fmt: skip
    (d / "synth.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = {"name": "synth", "data_dir": str(d), "data": {"path": "synth.jsonl"}, "prompt": "Text: {text}\nAnswer:",
            "choices": ["down", "up"], "answer": "label"}  # fmt: skip
    (d / "synth.yaml").write_text(yaml.safe_dump(task))
    return d / "synth.yaml", rows


def test_layer_features_pool_each_example_alone(hf3, task_yaml):
    """Packed several to a row, each example's feature equals its own layer outputs' mean, computed one example
    per forward without padding; the labels are the gold indices."""
    path, rows = task_yaml
    model, tok = jaxfin.load_model(hf3), load_tokenizer(TOKENIZER)
    feats, labels = layer_features(model, path, tokenizer=tok, limit=None, batch_size=2)
    assert feats.shape == (L3, len(rows), 32)
    assert labels.tolist() == [["down", "up"].index(r["label"]) for r in rows]
    for i in (0, 1, 4, 7, len(rows) - 1):
        ids = [tok.bos_id, *tok.encode(f"Text: {rows[i]['text']}\nAnswer:")]
        alone = layer_outputs(model.params, model.config, jnp.asarray([ids]))  # [L, 1, S, D]
        np.testing.assert_allclose(feats[:, i], np.asarray(alone)[:, 0].mean(1), rtol=1e-4, atol=1e-5)


def test_select_layers_cli_prints_the_ranking(hf3, task_yaml):
    path, _ = task_yaml
    args = ["select-layers", str(hf3), "--task", str(path), "--top", "2", "--tokenizer", str(TOKENIZER)]
    want = rank_layers(jaxfin.load_model(hf3), path, tokenizer=load_tokenizer(TOKENIZER))
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(args) == 0
    text = buf.getvalue()
    table = [line.split() for line in text.splitlines() if line.split() and line.split()[0].isdigit()]
    assert [int(r[1]) for r in table] == [r["layer"] for r in want]
    assert [float(r[2]) for r in table] == pytest.approx([r["logme"] for r in want], abs=1e-4)
    top = sorted(r["layer"] for r in want[:2])
    assert f'train.trainable: ["layers[{top[0]},{top[1]}]"]' in text

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main([*args, "--json"]) == 0
    out = json.loads(buf.getvalue())
    assert (out["n"], out["classes"], out["top"]) == (24, 2, top)
    assert main([*args[:-2], "--top", "4", "--tokenizer", str(TOKENIZER)]) == 2  # K > layers: one-line error


# ---------------------------------------------------------------------------------------------- @logme:K in training

COMMON = ["train.steps=4", "train.dev_every=0", "data.dev=", "checkpoint.every=2", "checkpoint.async_save=false",
          "optimizer.warmup_steps=0", "optimizer.lr=1e-2", "model.remat=none"]  # fmt: skip


def _train(config, overrides) -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        train(load_config(config, overrides))
    return buf.getvalue()


def _flat(params) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in flatten_dict(jax.device_get(params), sep="/").items()}


def test_logme_trains_the_chosen_layers_and_a_resume_reads_the_ranking(
    small_config, hf3, task_yaml, tmp_path, monkeypatch
):
    path, _ = task_yaml
    run = tmp_path / "run"
    over = [f"init_from={hf3}", "train.trainable=['@logme:2']", f"logme.task={path}", "logme.limit=0", *COMMON]
    printed = _train(small_config, [f"output_dir={run}", *over])
    saved = json.loads((run / "logme.json").read_text())
    want = rank_layers(jaxfin.load_model(hf3), path, limit=None, tokenizer=load_tokenizer(TOKENIZER))
    assert [r["layer"] for r in saved["ranking"]] == [r["layer"] for r in want]
    chosen = sorted(r["layer"] for r in want[:2])
    assert f"training layers[{chosen[0]},{chosen[1]}]" in printed
    init, got = _flat(jaxfin.load_model(hf3).params), _flat(jaxfin.load_model(run).params)
    for k in init:
        if not k.startswith("layers/"):
            assert np.array_equal(got[k], init[k]), f"{k} changed"
            continue
        for i in range(L3):
            moved = not np.array_equal(got[k][i], init[k][i])
            assert moved == (i in chosen), f"{k} layer {i}: moved={moved}, chosen={chosen}"

    # killed after checkpoint 2: the resume reads logme.json (ranking again would fail) and ends the same
    killed = tmp_path / "killed"
    shutil.copytree(run, killed)
    shutil.rmtree(killed / "checkpoints" / "4")

    def no_ranking(*a, **k):
        raise AssertionError("ranked again on resume")

    monkeypatch.setattr("jaxfin.train.logme.rank_layers", no_ranking)
    printed = _train(small_config, [f"output_dir={killed}", *over])
    assert f"resumed from {killed / 'checkpoints' / '2'}" in printed
    assert f"training layers[{chosen[0]},{chosen[1]}]" in printed and "read from" in printed
    for k, v in _flat(jaxfin.load_model(killed).params).items():
        np.testing.assert_array_equal(v, got[k], err_msg=k)


def test_logme_shortcut_errors_and_fresh_init(small_config, task_yaml, tmp_path):
    path, _ = task_yaml
    tok = load_tokenizer(TOKENIZER)
    cfg = load_config(small_config, ["train.trainable=['@logme:1']", "model.num_layers=3"])
    with pytest.raises(ConfigError, match="set logme.task"):
        resolve_trainable(cfg, None, tok, tmp_path)
    with pytest.raises(ConfigError, match="between 1 and the number of layers"):
        resolve_trainable(load_config(small_config, ["train.trainable=['@logme:3']"]), None, tok, tmp_path)
    # elsewhere (jaxfin compile, jaxfin bench) the selection refuses it and says what to do
    with pytest.raises(ConfigError, match="select-layers"):
        selection(param_shapes(cfg.model), ["@logme:1"], cfg.model)

    # no init_from: ranked on the train.seed init, which the run then starts from
    cfg = dataclasses.replace(cfg, logme=dataclasses.replace(cfg.logme, task=str(path)))
    resolved, params = resolve_trainable(cfg, None, tok, tmp_path)
    want = init_params(cfg.model, jax.random.key(cfg.train.seed))
    jax.tree.map(np.testing.assert_array_equal, params, want)
    best = rank_layers(jaxfin.Model(cfg.model, want), path, limit=cfg.logme.limit, tokenizer=tok)[0]["layer"]
    assert resolved.train.trainable == [f"layers[{best}]"]
    assert json.loads((tmp_path / "logme.json").read_text())["task"] == str(path)
