"""`jaxfin.store.load_adapter`: a PEFT adapter folder (written by jaxfin.hf.peft.save_peft_adapter) or a LoRA
checkpoint dir put back onto its base gives exactly the adapters that were saved, and a mismatched base is refused."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from flax import traverse_util

import jaxfin
from jaxfin.config import ConfigError
from jaxfin.config.schema import LoraConfig, ModelConfig
from jaxfin.hf.peft import base_model, save_peft_adapter
from jaxfin.model import Model, init_params
from jaxfin.model.lora import add_adapters, split_adapters
from jaxfin.store import load_adapter

CFG = ModelConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                  max_position_embeddings=64, compute_dtype="float32",
                  lora=LoraConfig(rank=4, alpha=8.0, targets=["q_proj", "o_proj", "down_proj"]))  # fmt: skip


def _lora_model() -> Model:
    params = add_adapters(init_params(dataclasses.replace(CFG, lora=LoraConfig()), jax.random.key(0)), CFG,
                          jax.random.key(1))  # fmt: skip
    flat = traverse_util.flatten_dict(params, sep="/")
    for i, k in enumerate(sorted(k for k in flat if k.endswith("lora_b"))):  # B = 0 would hide a transposition
        flat[k] = jax.random.normal(jax.random.key(10 + i), flat[k].shape)
    return Model(CFG, traverse_util.unflatten_dict(flat, sep="/"))


@pytest.mark.parametrize("kind", ["peft", "jaxfin"])
def test_adapter_comes_back_onto_its_base(tmp_path, kind):
    model = _lora_model()
    base = base_model(model)
    if kind == "peft":
        save_peft_adapter(model, out_dir=tmp_path / "ad")
    else:
        jaxfin.save_model(model, tmp_path / "ad")
    got = load_adapter(base, tmp_path / "ad")
    lora = got.config.lora
    assert (lora.rank, lora.alpha, sorted(lora.targets)) == (4, 8.0, sorted(CFG.lora.targets))
    want, got_flat = (traverse_util.flatten_dict(m.params, sep="/") for m in (model, got))
    assert set(want) == set(got_flat)
    for k in want:
        np.testing.assert_array_equal(np.asarray(got_flat[k]), np.asarray(want[k]), err_msg=k)
    assert split_adapters(got.params)[1]  # the adapters are there (not merged away)


def test_adapter_for_another_base_is_refused(tmp_path):
    save_peft_adapter(_lora_model(), out_dir=tmp_path / "ad")
    other = dataclasses.replace(CFG, hidden_size=32, lora=LoraConfig())
    with pytest.raises(ConfigError, match="ad"):
        load_adapter(Model(other, init_params(other, jax.random.key(0))), tmp_path / "ad")
    with pytest.raises(ConfigError, match="not a LoRA adapter"):
        jaxfin.save_model(base_model(_lora_model()), tmp_path / "plain")
        load_adapter(base_model(_lora_model()), tmp_path / "plain")
