"""Config loading: YAML + dotted overrides -> typed dataclasses, clear errors, cross-field validation, CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from jaxfin.config import Config, ConfigError, load_config, valid_keys

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"


def _write(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# ---------------------------------------------------------------- defaults and typed values


def test_defaults_load_and_equal_dataclass_defaults():
    cfg = load_config()
    assert cfg == Config()
    # a few documented defaults, with their types
    assert cfg.train.steps == 1000 and type(cfg.train.steps) is int
    assert cfg.optimizer.lr == pytest.approx(3e-4) and type(cfg.optimizer.lr) is float
    assert cfg.model.scan_layers is True
    assert cfg.data.sources == []


def test_yaml_file_plus_overrides_are_typed(tmp_path):
    path = _write(
        tmp_path,
        "output_dir: runs/x\n"
        "train: {steps: 5, batch_size: 4}\n"
        "optimizer: {lr: 3e-4, weight_decay: 0}\n"  # YAML 1.1 reads 3e-4 as a *string*
        "data: {sources: only.jsonl, seq_len: 64}\n",
    )
    base = load_config(path)
    assert base.train.steps == 5 and type(base.train.steps) is int
    assert type(base.optimizer.lr) is float and base.optimizer.lr == pytest.approx(3e-4)
    assert type(base.optimizer.weight_decay) is float and base.optimizer.weight_decay == 0.0
    # a scalar where a list is expected becomes a 1-list; a plain path is a source {path: ...}
    assert [(s.path, s.name, s.kind) for s in base.data.sources] == [("only.jsonl", "", "text")]

    cfg = load_config(
        path,
        [
            "train.steps=7",
            "optimizer.lr=1e-3",
            "data.sources=[a.jsonl,{name: b, path: b.parquet, weight: 3, domain: false}]",
            "model.rope_scaling.type=llama3",
            "model.rope_scaling.factor=16",
            "optimizer.b1=1",
        ],
    )
    assert cfg.train.steps == 7 and type(cfg.train.steps) is int
    assert cfg.optimizer.lr == pytest.approx(1e-3) and type(cfg.optimizer.lr) is float
    assert cfg.optimizer.b1 == 1.0 and type(cfg.optimizer.b1) is float  # int given to a float key -> float
    assert [(s.path, s.weight, s.domain) for s in cfg.data.sources] == [
        ("a.jsonl", 1.0, True),
        ("b.parquet", 3.0, False),
    ]
    assert cfg.model.rope_scaling.type == "llama3"
    assert cfg.model.rope_scaling.factor == 16.0 and type(cfg.model.rope_scaling.factor) is float
    # values from the file that were not overridden survive; untouched defaults too
    assert cfg.train.batch_size == 4
    assert cfg.data.seq_len == 64
    assert cfg.output_dir == "runs/x"
    assert cfg.model.rope_scaling.low_freq_factor == 1.0
    assert cfg.train.seed == 0


def test_integral_float_for_int_key_and_bool_override():
    cfg = load_config(None, ["train.steps=7.0", "model.scan_layers=false", "train.seed=3"])
    assert cfg.train.steps == 7 and type(cfg.train.steps) is int
    assert cfg.model.scan_layers is False
    assert cfg.train.seed == 3


def test_contract_keys_exist():
    keys = set(valid_keys())
    for k in ("output_dir", "train.steps", "train.seed", "checkpoint.every"):
        assert k in keys
    cfg = load_config(None, ["output_dir=runs/abc", "train.seed=11", "checkpoint.every=9"])
    assert (cfg.output_dir, cfg.train.seed, cfg.checkpoint.every) == ("runs/abc", 11, 9)


def test_tiny_yaml_loads():
    cfg = load_config(TINY)
    raw = yaml.safe_load(TINY.read_text())
    assert cfg.model.hidden_size == raw["model"]["hidden_size"]
    assert cfg.model.num_kv_heads == raw["model"]["num_kv_heads"]
    assert cfg.data.seq_len == raw["data"]["seq_len"]
    assert cfg.train.steps == raw["train"]["steps"]
    assert cfg.optimizer.lr == pytest.approx(float(raw["optimizer"]["lr"]))
    assert cfg.train.batch_size % cfg.train.micro_batches == 0


# ---------------------------------------------------------------- unknown keys


@pytest.mark.parametrize(
    "text, bad, near",
    [
        ("trian: {steps: 3}\n", "trian", "train"),
        ("train: {stpes: 3}\n", "train.stpes", "train.steps"),
        ("optimizer: {lrr: 0.1}\n", "optimizer.lrr", "optimizer.lr"),
        ("model: {rope_scaling: {typ: llama3}}\n", "model.rope_scaling.typ", "model.rope_scaling.type"),
    ],
)
def test_unknown_yaml_key_names_file_and_nearest_key(tmp_path, text, bad, near):
    path = _write(tmp_path, text, name="my_run.yaml")
    with pytest.raises(ConfigError) as ei:
        load_config(path)
    msg = str(ei.value)
    assert "my_run.yaml" in msg
    assert f"'{bad}'" in msg
    assert f"'{near}'" in msg


@pytest.mark.parametrize(
    "override, near",
    [("optimizer.lrr=1", "optimizer.lr"), ("train.stepz=3", "train.steps"), ("checkpoint.evry=5", "checkpoint.every")],
)
def test_unknown_override_key_names_nearest_key(override, near):
    with pytest.raises(ConfigError) as ei:
        load_config(None, [override])
    msg = str(ei.value)
    assert f"'{override.split('=')[0]}'" in msg
    assert f"'{near}'" in msg


def test_empty_override_for_a_list_key_is_empty():
    assert load_config(None, ["data.dev="]).data.dev == []
    assert load_config(None, ["data.dev=[]"]).data.dev == []


def test_override_without_equals_is_refused():
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.steps"])


def test_config_error_is_a_value_error():
    # the CLI turns ValueErrors into `error: ...` lines; ConfigError must be one of them
    assert issubclass(ConfigError, ValueError)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


# ---------------------------------------------------------------- mistyped values


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.steps=abc", "train.steps"),
        ("train.steps=1.5", "train.steps"),
        ("model.scan_layers=maybe", "model.scan_layers"),
        ("optimizer.lr=fast", "optimizer.lr"),
        ("train.batch_size=true", "train.batch_size"),
    ],
)
def test_mistyped_override_value_names_key(override, key):
    with pytest.raises(ConfigError) as ei:
        load_config(None, [override])
    assert f"'{key}'" in str(ei.value)


def test_mistyped_yaml_value_names_key_and_file(tmp_path):
    path = _write(tmp_path, "train: {steps: lots}\n", name="typo.yaml")
    with pytest.raises(ConfigError) as ei:
        load_config(path)
    assert "'train.steps'" in str(ei.value) and "typo.yaml" in str(ei.value)


def test_section_given_as_scalar_is_a_config_error(tmp_path):
    path = _write(tmp_path, "train: 3\n")
    with pytest.raises(ConfigError, match="train"):
        load_config(path)


# ---------------------------------------------------------------- cross-field validation


def test_batch_size_must_divide_by_micro_batches():
    with pytest.raises(ConfigError) as ei:
        load_config(None, ["train.batch_size=6", "train.micro_batches=4"])
    assert "train.batch_size" in str(ei.value) and "train.micro_batches" in str(ei.value)
    cfg = load_config(None, ["train.batch_size=8", "train.micro_batches=4"])
    assert cfg.train.micro_batches == 4


def test_num_heads_must_be_multiple_of_kv_heads():
    with pytest.raises(ConfigError) as ei:
        load_config(None, ["model.num_heads=6", "model.num_kv_heads=4", "model.hidden_size=48"])
    assert "num_kv_heads" in str(ei.value)
    cfg = load_config(None, ["model.num_heads=6", "model.num_kv_heads=3", "model.hidden_size=48"])
    assert cfg.model.num_kv_heads == 3


def test_sliding_window_shorter_than_context_is_refused():
    with pytest.raises(ConfigError, match="sliding-window"):
        load_config(None, ["model.sliding_window=1024", "model.max_position_embeddings=4096"])
    # a window at least as long as the context is the same as no window: accepted
    cfg = load_config(None, ["model.sliding_window=4096", "model.max_position_embeddings=4096"])
    assert cfg.model.sliding_window == 4096


def test_unknown_rope_type_is_refused():
    with pytest.raises(ConfigError) as ei:
        load_config(None, ["model.rope_scaling.type=yarn"])
    assert "model.rope_scaling.type" in str(ei.value) and "yarn" in str(ei.value)


def test_unknown_attention_backend_is_refused():
    with pytest.raises(ConfigError, match="model.attention_backend"):
        load_config(None, ["model.attention_backend=flash-nonexistent"])


# ---------------------------------------------------------------- CLI


def _env():
    env = dict(os.environ)
    env.pop("JAXFIN_TRACEBACK", None)
    env.setdefault("JAX_PLATFORMS", "cpu")
    return env


def test_launch_print_config_applies_overrides():
    r = subprocess.run(
        [sys.executable, "-m", "jaxfin.launch", "configs/tiny.yaml", "train.steps=3", "--print-config"],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    printed = yaml.safe_load(r.stdout)
    assert printed["train"]["steps"] == 3
    # everything else is the file's value, and the printed YAML loads back to the same config
    raw = yaml.safe_load(TINY.read_text())
    assert printed["model"]["hidden_size"] == raw["model"]["hidden_size"]
    assert printed["output_dir"] == raw["output_dir"]


def test_launch_bad_key_exits_2_with_message_not_traceback():
    r = subprocess.run(
        [sys.executable, "-m", "jaxfin.launch", "configs/tiny.yaml", "train.stepz=3"],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    assert "error:" in r.stderr
    assert "train.steps" in r.stderr
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout


def test_jaxfin_console_script_help():
    exe = Path(sys.executable).parent / "jaxfin"
    assert exe.exists(), "the `jaxfin` console script is not installed next to this python"
    r = subprocess.run([str(exe), "--help"], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0
    assert "train" in r.stdout and "convert" in r.stdout


def test_launch_help_in_process(capsys):
    from jaxfin import launch

    with pytest.raises(SystemExit) as ei:
        launch.main(["--help"])
    assert ei.value.code == 0
    out = capsys.readouterr().out
    assert "--print-config" in out and "--coordinator" in out


def test_cli_train_bad_value_returns_2_in_process(capsys, monkeypatch):
    from jaxfin import cli

    monkeypatch.delenv("JAXFIN_TRACEBACK", raising=False)
    assert cli.main(["train", str(TINY), "train.steps=abc"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "'train.steps'" in err


def test_integer_keys_accept_exponent_notation():
    assert load_config(None, ["train.steps=1e3"]).train.steps == 1000
    with pytest.raises(ConfigError, match="train.steps"):
        load_config(None, ["train.steps=1.5e0"])


def test_a_dotted_key_in_a_yaml_file_is_told_to_nest(tmp_path):
    (tmp_path / "c.yaml").write_text("model.lora: {rank: 4}\n")
    with pytest.raises(ConfigError, match=r"'model.lora' is a dotted key; in a YAML file nest it \(model: \{lora"):
        load_config(tmp_path / "c.yaml")


def test_unknown_key_inside_a_source_names_the_nearest_source_key():
    with pytest.raises(ConfigError, match=r"data.sources\[0\].wieght.*did you mean 'data.sources\[0\].weight'"):
        load_config(None, ["data.sources=[{path: a.jsonl, wieght: 2}]"])
    with pytest.raises(ConfigError, match="data.sources\\[0\\].kind"):
        load_config(None, ["data.sources=[{path: a.jsonl, kind: prose}]"])
    with pytest.raises(ConfigError, match="data.mix_by"):
        load_config(None, ["data.mix_by=docs"])


def test_overrides_may_follow_options(capsys):
    """`CONFIG --print-config k=v` (and `bench train CONFIG --json k=v`): overrides after an option still apply."""
    from jaxfin import cli, launch

    assert launch.main([str(TINY), "train.steps=3", "--print-config", "model.num_layers=2"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["train"]["steps"] == 3 and printed["model"]["num_layers"] == 2
    args = cli.parse_args(
        cli.build_parser(), ["bench", "train", str(TINY), "--json", "model.remat=none", "--steps", "2"]
    )
    assert args.overrides == ["model.remat=none"] and args.json and args.steps == 2


FORGETTING = REPO / "configs/eval/forgetting.yaml"
AGENTS = REPO / "configs/agents/finance_brain.yaml"


@pytest.mark.parametrize(
    "head, config, key, value, printed_at",
    [
        (["train"], TINY, "train.steps", 5, ("train", "steps")),
        (["eval"], FORGETTING, "max_docs", 7, ("max_docs",)),
        (["agents"], AGENTS, "batch_size", 3, ("batch_size",)),
    ],
)
def test_overrides_anywhere_after_the_subcommand(capsys, head, config, key, value, printed_at):
    """`SUB --print-config CONFIG k=v` and `SUB CONFIG --print-config k=v` both apply k=v; a misspelt key after an
    option is refused, naming the nearest valid key."""
    from jaxfin import cli

    for argv in ([*head, "--print-config", str(config), f"{key}={value}"],
                 [*head, str(config), "--print-config", f"{key}={value}"]):  # fmt: skip
        assert cli.main(argv) == 0
        node = yaml.safe_load(capsys.readouterr().out)
        for k in printed_at:
            node = node[k]
        assert node == value, argv
    typo = key[:-2] + key[-1] + key[-2]  # two letters swapped
    assert cli.main([*head, str(config), "--print-config", f"{typo}=1"]) == 2
    assert f"unknown config key '{typo}'; did you mean '{key}'" in capsys.readouterr().err


def test_bench_train_overrides_after_options(capsys):
    from jaxfin import cli

    args = cli.parse_args(cli.build_parser(), ["bench", "train", "--json", str(TINY), "--steps", "2", "train.steps=5"])
    assert args.overrides == ["train.steps=5"] and args.json and args.steps == 2
    assert cli.main(["bench", "train", str(TINY), "--json", "train.stpes=5"]) == 2
    assert "unknown config key 'train.stpes'; did you mean 'train.steps'" in capsys.readouterr().err


def test_leftover_arguments_that_are_not_overrides_are_still_errors(capsys):
    from jaxfin import cli

    with pytest.raises(SystemExit) as ei:
        cli.parse_args(cli.build_parser(), ["train", str(TINY), "--print-config", "--no-such-flag"])
    assert ei.value.code == 2 and "unrecognized arguments: --no-such-flag" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a stray word, not key=value
        cli.parse_args(cli.build_parser(), ["train", str(TINY), "--print-config", "oops"])
    with pytest.raises(SystemExit):  # a subcommand without overrides takes none
        cli.parse_args(cli.build_parser(), ["convert", "a", "b", "x=1"])


def test_float64_model_dtype_needs_x64():
    import jax

    with jax.enable_x64(False), pytest.raises(ConfigError, match="JAX_ENABLE_X64"):
        load_config(None, ["model.param_dtype=float64"])
    with jax.enable_x64(True):
        assert load_config(None, ["model.compute_dtype=float64"]).model.compute_dtype == "float64"
