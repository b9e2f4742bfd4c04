"""`jaxfin scaling sweep` / `collect`: an end-to-end grid of tiny CPU pilot runs on real text from the shared data,
collected into a RUNS.csv that the scaling fitter accepts."""

import csv
import json
import math

import pytest
import yaml
from conftest import REPO, shared_data

from jaxfin.cli import build_parser

SIZES = {  # name -> model shape (hidden, layers, heads, kv heads, intermediate)
    "h16": dict(hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=48),
    "h32": dict(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=86),
}
VOCAB, SEQ, BATCH = 1024, 32, 4
TOKENS = (2560, 7680)  # 20 and 60 steps of 4 x 32 tokens
RATIOS = (0.3, 0.7)


def _cli(argv: list[str]) -> int:
    """`jaxfin scaling ...` through the real command parser (exceptions propagate, for pytest.raises)."""
    args = build_parser().parse_args(["scaling", *argv])
    return args.func(args)


def _hand_count(hidden, num_layers, num_heads, num_kv_heads, intermediate_size) -> tuple[int, int]:
    """(non-embedding, total) parameters of an untied Llama, written out by hand."""
    d, f, dh = hidden, intermediate_size, hidden // num_heads
    attn = d * num_heads * dh * 2 + d * num_kv_heads * dh * 2  # q, o; k, v
    mlp = 3 * d * f  # gate, up, down
    per_layer = attn + mlp + 2 * d  # + input / post-attention RMSNorm scales
    body = num_layers * per_layer + d  # + final norm
    return body, body + 2 * VOCAB * d  # + token embedding and LM head


def _slice_jsonl(src, dst, first: int, count: int, max_chars: int | None = None) -> None:
    out = []
    with open(src) as f:
        for i, line in enumerate(f):
            if i >= first + count:
                break
            if i >= first:
                rec = json.loads(line)
                out.append(json.dumps({"text": rec["text"][:max_chars] if max_chars else rec["text"]}))
    dst.write_text("\n".join(out) + "\n")


@pytest.fixture(scope="module")
def base_yaml(tmp_path_factory):
    d = tmp_path_factory.mktemp("scaling")
    data = shared_data()
    fin = data / "finance_corpus_en/beige_book_2014_2020.jsonl"
    gen = data / "general_corpus_en/gutenberg_train.jsonl"
    _slice_jsonl(fin, d / "fin_train.jsonl", 0, 60)
    _slice_jsonl(fin, d / "fin_dev.jsonl", 60, 10)
    _slice_jsonl(gen, d / "gen_train.jsonl", 0, 2, max_chars=50_000)
    _slice_jsonl(gen, d / "gen_dev.jsonl", 2, 1, max_chars=10_000)
    cfg = {
        "tokenizer": str(REPO / "demo_data/tokenizer.model"),
        "model": {"vocab_size": VOCAB, "bos_token_id": 2, "eos_token_id": 3, "pad_token_id": 0,
                  "max_position_embeddings": 64, "compute_dtype": "float32",
                  "hidden_size": 8, "intermediate_size": 8, "num_layers": 1, "num_heads": 1, "num_kv_heads": 1},
        "data": {
            "sources": [
                {"name": "fin", "path": str(d / "fin_train.jsonl"), "domain": True},
                {"name": "gen", "path": str(d / "gen_train.jsonl"), "domain": False},
            ],
            "dev": [
                {"name": "fin_dev", "path": str(d / "fin_dev.jsonl"), "domain": True},
                {"name": "gen_dev", "path": str(d / "gen_dev.jsonl"), "domain": False},
            ],
            "seq_len": SEQ,
            "cache_dir": str(d / "cache"),
        },
        "optimizer": {"lr": 3e-3, "warmup_steps": 4, "schedule": "cosine"},
        "train": {"steps": 1, "batch_size": BATCH, "log_every": 10, "dev_every": 0, "dev_batches": 2},
        "checkpoint": {"every": 0, "keep": 1, "async_save": False},
    }  # fmt: skip
    path = d / "base.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _size_args():
    out = []
    for name, s in SIZES.items():
        out += ["--size", f"{name}:" + ",".join(f"{k}={v}" for k, v in s.items())]
    return out


@pytest.mark.slow  # ~20 s with a warm XLA cache, ~55 s cold (2 cores)
def test_sweep_run_collect_end_to_end(base_yaml, tmp_path, capsys):
    sweep = tmp_path / "sweep"
    argv = ["sweep", str(base_yaml), "--out", str(sweep), *_size_args(), "--tokens", ",".join(map(str, TOKENS)),
            "--ratio", ",".join(map(str, RATIOS)), "--run", "train.dev_every=1000"]  # fmt: skip
    assert _cli(argv) == 0
    grid = json.loads((sweep / "sweep.json").read_text())
    assert len(grid["runs"]) == len(SIZES) * len(TOKENS) * len(RATIOS)
    run = grid["runs"][0]
    assert run["name"] == f"h16-D{TOKENS[0]}-r{RATIOS[0]}"
    assert run["command"] == f"python -m jaxfin.launch {sweep / run['name'] / 'config.yaml'}"
    cfg = yaml.safe_load((sweep / run["name"] / "config.yaml").read_text())
    assert cfg["train"]["steps"] == math.ceil(TOKENS[0] / (BATCH * SEQ))
    assert cfg["output_dir"] == str(sweep / run["name"])
    assert cfg["data"]["stages"][0]["weights"] == pytest.approx({"fin": RATIOS[0], "gen": 1 - RATIOS[0]})

    capsys.readouterr()
    assert _cli(argv) == 0  # a rerun resumes: every run is finished, none trains again
    assert capsys.readouterr().out.count("already finished, skipped") == len(grid["runs"])

    out_csv = tmp_path / "RUNS.csv"
    assert _cli(["collect", str(sweep), "--out", str(out_csv)]) == 0
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == len(grid["runs"])
    cols = list(rows[0])
    assert cols[:6] == ["run", "params", "params_total", "tokens", "loss", "steps"]
    assert {"ratio", "data_intensity", "domain_loss", "general_loss", "dev_loss/fin_dev", "dev_loss/gen_dev"} <= set(
        cols
    )
    by_key = {}
    for r in rows:
        size, d_text, r_text = r["run"].split("-")
        n, n_total = _hand_count(**{"hidden": SIZES[size]["hidden_size"],
                                    **{k: v for k, v in SIZES[size].items() if k != "hidden_size"}})  # fmt: skip
        assert (int(r["params"]), int(r["params_total"])) == (n, n_total)
        d = int(d_text[1:])
        steps = math.ceil(d / (BATCH * SEQ))
        assert int(r["steps"]) == steps
        # non-padding tokens: at most every position of every row, and packing fills most of them
        assert 0.8 * steps * BATCH * SEQ < int(r["tokens"]) <= steps * BATCH * SEQ
        assert float(r["ratio"]) == pytest.approx(float(r_text[1:]))
        for k in ("loss", "domain_loss", "general_loss"):
            assert 0 < float(r[k]) < math.log(VOCAB) + 1
        assert float(r["domain_loss"]) == pytest.approx(float(r["dev_loss/fin_dev"]))
        assert float(r["general_loss"]) == pytest.approx(float(r["dev_loss/gen_dev"]))
        assert abs(float(r["data_intensity"]) - float(r["ratio"])) < 0.1  # realised vs requested domain share
        by_key[size, d, r_text] = float(r["loss"])
    # more tokens -> lower dev loss on average, for each size and ratio
    for size in SIZES:
        short = [v for (s, d, _), v in by_key.items() if s == size and d == TOKENS[0]]
        long = [v for (s, d, _), v in by_key.items() if s == size and d == TOKENS[1]]
        assert sum(long) / len(long) <= sum(short) / len(short)
    # a higher domain share -> lower domain loss relative to general loss, on average
    gap = {r_text: [] for r_text in (f"r{x}" for x in RATIOS)}
    for r in rows:
        gap[r["run"].split("-")[2]].append(float(r["domain_loss"]) - float(r["general_loss"]))
    lo, hi = (sum(v) / len(v) for v in gap.values())
    assert hi < lo

    capsys.readouterr()  # one run folder, CSV on stdout: the same row
    assert _cli(["collect", str(sweep / rows[-1]["run"])]) == 0
    assert list(csv.DictReader(capsys.readouterr().out.splitlines())) == rows[-1:]

    _check_fitter_accepts(out_csv, rows)


def _check_fitter_accepts(out_csv, rows):
    """The fitter reads the CSV as it is and fits the Chinchilla law to it (a coarser start grid, for time)."""
    from jaxfin.scaling import chinchilla

    cols = chinchilla.read_runs(out_csv, ("params", "tokens", "loss"), ("ratio", "domain_loss", "general_loss"))
    assert {k: len(v) for k, v in cols.items()} == dict.fromkeys(cols, len(rows))
    grid = {k: v[::2] for k, v in chinchilla.GRID.items()}
    fit = chinchilla.fit_chinchilla(cols["params"], cols["tokens"], cols["loss"], grid=grid)
    pred = fit.predict(cols["params"], cols["tokens"])
    assert abs(pred / cols["loss"] - 1).max() < 0.05


def test_collect_refuses_unfinished_and_bad_sweeps(base_yaml, tmp_path):
    sweep = tmp_path / "sweep"
    sizes = ["--size", "a:hidden_size=16,num_heads=2,num_kv_heads=1,intermediate_size=48"]
    assert _cli(["sweep", str(base_yaml), "--out", str(sweep), *sizes, "--tokens", "1e3"]) == 0
    with pytest.raises(ValueError, match=r"a-D1e3 is unfinished.*--allow-partial"):
        _cli(["collect", str(sweep)])
    with pytest.raises(ValueError, match="no finished runs"):
        _cli(["collect", str(sweep), "--allow-partial"])
    with pytest.raises(FileNotFoundError, match="no such run or sweep folder"):
        _cli(["collect", str(tmp_path / "nope")])
    with pytest.raises(ValueError, match="must look like NAME:"):
        _cli(["sweep", str(base_yaml), "--out", str(sweep), "--size", "hidden_size=16", "--tokens", "1e3"])
    with pytest.raises(ValueError, match="unknown config key 'model.hiden_size'"):
        _cli(["sweep", str(base_yaml), "--out", str(sweep), "--size", "a:hiden_size=16", "--tokens", "1e3"])
    with pytest.raises(ValueError, match=r"--ratio: 1.5 must be in \(0, 1\)"):
        _cli(["sweep", str(base_yaml), "--out", str(sweep), *sizes, "--tokens", "1e3", "--ratio", "1.5"])
    all_domain = ["data.sources=[{name: fin, path: " + str(base_yaml.parent / "fin_train.jsonl") + "}]"]
    with pytest.raises(ValueError, match="both domain sources .* and general ones"):
        _cli(["sweep", str(base_yaml), "--out", str(sweep), *sizes, "--tokens", "1e3", "--ratio", "0.5", *all_domain])
