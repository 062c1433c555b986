"""Per-modality LoRA adapters: grafting freezes the past, peft format on disk, merging, checkpoints."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from graft.agent.adapters import AdapterBank
from graft.agent.backbone import load_backbone
from graft.agent.build import load_mmllm, save_mmllm
from graft.agent.mmllm import Example
from omegaconf import OmegaConf
from peft import PeftModel


def randomise_lora(mm, name, std=0.3):
    with torch.no_grad():
        for p in mm.bank.lora_parameters(name):
            p.normal_(std=std)


def examples(mm, seed=0):
    rng = np.random.default_rng(seed)
    return [
        Example("<grid> what colour is the ball? <rgb>", {n: mm.modalities[n].sample(rng) for n in ("grid", "rgb")}, "red"),
        Example("<grid> how many keys?", {"grid": mm.modalities["grid"].sample(rng)}, "two"),
    ]


def test_adapters_are_named_after_modalities_and_grafting_freezes_the_past(tiny_mm):
    mm = tiny_mm()
    assert mm.bank.names == ["grid", "rgb"]
    assert not any(p.requires_grad for p in mm.parameters())  # nothing trains until asked
    mm.set_trainable("rgb", "it")
    trainable = {n for n, p in mm.named_parameters() if p.requires_grad}
    assert trainable and all(".rgb." in n or n.startswith("projectors.rgb.") for n in trainable)
    assert any(n.startswith("projectors.rgb.") for n in trainable)
    mm.route(["grid"])  # a peft set_adapter call re-enables grads of active adapters; the bank re-freezes them
    assert not any(p.requires_grad for n, p in mm.named_parameters() if ".grid." in n)


def test_grafting_the_same_name_twice_is_an_error(tiny_mm):
    mm = tiny_mm(modalities=("grid",))
    with pytest.raises(ValueError, match="already grafted"):
        mm.bank.add("grid")
    with pytest.raises(ValueError, match="already grafted"):
        mm.graft("grid")


def test_a_shared_adapter_serves_several_grafts_and_survives_a_checkpoint(compose, tmp_path):
    from graft.agent.backbone import load_backbone
    from graft.agent.build import graft_modality, graft_task
    from graft.agent.mmllm import MMLLM

    cfg = compose("chat", ["+modality@modalities.rgb=rgb"])
    llm, tok = load_backbone(OmegaConf.to_container(cfg.backbone))
    mm = MMLLM(llm, tok, OmegaConf.to_container(cfg.lora))
    mm.build_config = {"backbone": OmegaConf.to_container(cfg.backbone), "lora": dict(cfg.lora), "routing": "stacked"}
    graft_task(mm, "text", adapter="shared")
    for name in ("grid", "rgb"):
        graft_modality(mm, name, cfg.modalities[name], cfg.projector, adapter="shared")
    assert mm.bank.names == ["shared"] and mm.adapter_of == {"text": "shared", "grid": "shared", "rgb": "shared"}
    mm.set_trainable("rgb", "it")
    assert {n.split(".")[0] for n, p in mm.named_parameters() if p.requires_grad and "lora_" not in n} == {"projectors"}
    assert any(".shared." in n for n, p in mm.named_parameters() if p.requires_grad)
    randomise_lora(mm, "shared")
    save_mmllm(mm, tmp_path / "ckpt")
    loaded = load_mmllm(tmp_path / "ckpt")
    assert loaded.adapter_of == mm.adapter_of
    with torch.no_grad():
        assert torch.allclose(mm(examples(mm)).logits, loaded(examples(mm)).logits, atol=1e-5)


def test_adapters_save_in_peft_format_and_load_with_peft(tiny_mm, compose, tmp_path):
    mm = tiny_mm()
    randomise_lora(mm, "grid")
    mm.bank.save(tmp_path)
    assert (tmp_path / "grid" / "adapter_config.json").exists() and (tmp_path / "rgb" / "adapter_model.safetensors").exists()
    fresh, _ = load_backbone(OmegaConf.to_container(compose("chat").backbone))  # same seed, same base
    ids = torch.tensor([[5, 17, 42, 99]])
    with torch.no_grad():
        mm.route(["grid"])
        want = mm.bank.model(input_ids=ids).logits
        loaded = PeftModel.from_pretrained(fresh, str(tmp_path / "grid"), adapter_name="grid")
        got = loaded(input_ids=ids).logits
    assert torch.allclose(want, got, atol=1e-5)


def test_building_grafting_and_loading_adapters_warn_no_deprecation(compose, tmp_path):
    """peft's PeftModel reads transformers' deprecated `is_gradient_checkpointing`: every command
    printed its FutureWarning until AdapterBank silenced that one read (agent/adapters.py)."""
    cfg = OmegaConf.to_container(compose("chat").backbone)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        bank = AdapterBank(load_backbone(cfg)[0], {"r": 4})
        bank.add("grid")
        bank.add("rgb")
        bank.save(tmp_path)
        loaded = AdapterBank(load_backbone(cfg)[0], {"r": 4})
        loaded.load("rgb", tmp_path / "rgb")
    assert bank.names == ["grid", "rgb"] and loaded.names == ["rgb"] and isinstance(loaded.model, PeftModel)


def test_merged_and_unmerged_outputs_agree(tiny_mm):
    mm = tiny_mm()
    randomise_lora(mm, "grid")
    randomise_lora(mm, "rgb")
    ids = torch.tensor([[3, 8, 13, 21, 34]])
    with torch.no_grad():
        mm.route(["grid", "rgb"])
        unmerged = mm.bank.model(input_ids=ids).logits
        merged_model = mm.bank.merged(["grid", "rgb"])
        merged = merged_model(input_ids=ids).logits
        after = mm.bank.model(input_ids=ids).logits
        with mm.bank.model.disable_adapter():
            plain = mm.bank.model(input_ids=ids).logits
    assert not isinstance(merged_model, PeftModel)
    assert torch.allclose(unmerged, merged, atol=1e-4)
    assert not torch.allclose(unmerged, plain, atol=1e-3)  # the adapters do change the output
    # merging works on a copy: the live model keeps its unmerged adapters and shares no weights with it
    assert isinstance(mm.bank.model, PeftModel) and torch.equal(after, unmerged)
    live = {p.data_ptr() for p in mm.bank.model.parameters()}
    assert not any(p.data_ptr() in live for p in merged_model.parameters())


def test_checkpoint_round_trip_gives_identical_outputs(tiny_mm, tmp_path):
    mm = tiny_mm("projector=resampler")
    randomise_lora(mm, "rgb")
    for p in mm.projectors["grid"].parameters():
        torch.nn.init.normal_(p.data, std=0.1)
    save_mmllm(mm, tmp_path / "ckpt")
    loaded = load_mmllm(tmp_path / "ckpt")
    assert loaded.bank.names == mm.bank.names
    batch = examples(mm)
    with torch.no_grad():
        assert torch.allclose(mm(batch).logits, loaded(batch).logits, atol=1e-5)
    assert not list((tmp_path).glob(".ckpt.*")), "temporary folder left behind"


def test_loading_a_folder_that_is_not_a_checkpoint_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a graft checkpoint"):
        load_mmllm(tmp_path)
