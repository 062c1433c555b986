"""Output modalities on the MM-LLM: signal tokens, learned embeddings, hidden states, grafting, checkpoints."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from graft.agent.build import graft_output, load_mmllm, save_mmllm
from graft.agent.mmllm import Example
from graft.agent.training import trainable_report

K, N, C = 3, 5, 24


def output_cfg(compose, projector="mlp"):
    return compose("onboard", [f"output_projector@generators.image.output.projector={projector}"]).generators.image.output


@pytest.fixture
def mm(tiny_mm, compose):
    mm = tiny_mm()  # grid + rgb grafted
    cfg = dict(output_cfg(compose), signal_tokens=K)
    torch.manual_seed(1)
    graft_output(mm, "goal", cfg, cond_tokens=N, cond_dim=C)
    return mm


def examples(mm, seed=0):
    rng = np.random.default_rng(seed)
    out = [Example("<grid>\nMission: go to the red ball", {"grid": mm.modalities["grid"].sample(rng)})]
    if "rgb" in mm.modalities:
        out.append(Example("<rgb>\n<grid>\nImagine the goal.", {n: mm.modalities[n].sample(rng) for n in ("rgb", "grid")}))
    return out


def test_signal_tokens_are_added_and_read_from_the_learned_table(mm, rng):
    head = mm.outputs["goal"]
    assert head.token_strings() == ["<goal_0>", "<goal_1>", "<goal_2>"]
    assert mm.signal_ids["goal"] == mm.tokenizer.convert_tokens_to_ids(head.token_strings())
    assert min(mm.signal_ids["goal"]) >= mm.backbone.get_input_embeddings().num_embeddings  # no frozen row
    ex = Example(f"<grid> then {head.signal_text} done", {"grid": mm.modalities["grid"].sample(rng)})
    (seq,) = mm.embed_prompts([ex])
    ids = mm.prompt_ids(ex.prompt)
    start = ids.index(mm.signal_ids["goal"][0]) + 16 - 1  # the grid placeholder before it became 16 tokens
    assert torch.equal(seq[start:start + K], head.signal)


def test_signal_hidden_is_the_last_layer_at_the_signal_positions(mm):
    batch = examples(mm)
    hidden = mm.signal_hidden(batch, "goal")
    assert hidden.shape == (2, K, mm.embed_dim)
    # the same tokens written into the prompt by hand land at the same place: same states
    written = [Example(ex.prompt, ex.obs) for ex in batch]
    seqs = [torch.cat([s, mm.outputs["goal"].signal]) for s in mm.embed_prompts(written)]
    padded = mm.pad(seqs)
    padded.pop("labels")
    with torch.no_grad():
        states = mm.bank.model(**padded, output_hidden_states=True).hidden_states[-1]
    for b, s in enumerate(seqs):
        assert torch.allclose(hidden[b], states[b, s.shape[0] - K:s.shape[0]], atol=1e-5)


def test_signal_tokens_out_of_order_are_an_error(mm):
    with pytest.raises(ValueError, match=r"signal tokens <goal_0><goal_1><goal_2> once and in order"):
        mm.signal_hidden([Example("<goal_1><goal_0><goal_2> hi", {})], "goal")
    with pytest.raises(KeyError, match="not a grafted output"):
        mm.signal_hidden([Example("hi", {})], "grid")


@pytest.mark.parametrize("projector", ["linear", "mlp", "transformer"])
def test_output_features_have_the_generator_shape(tiny_mm, compose, projector):
    mm = tiny_mm(modalities=("grid",))
    graft_output(mm, "goal", dict(output_cfg(compose, projector), signal_tokens=K), cond_tokens=N, cond_dim=C)
    assert mm.output_features(examples(mm)[:1], "goal").shape == (1, N, C)


def test_set_trainable_covers_the_output_head_and_its_own_lora(mm):
    mm.set_trainable("goal", "pt")
    pt = {n for n, p in mm.named_parameters() if p.requires_grad}
    assert pt == {n for n, _ in mm.named_parameters() if n.startswith("outputs.goal.")}
    assert "outputs.goal.signal" in pt and any(n.startswith("outputs.goal.projector.") for n in pt)
    mm.set_trainable("goal", "it")
    it = {n for n, p in mm.named_parameters() if p.requires_grad}
    assert it - pt and all(("lora_" in n and ".goal." in n) for n in it - pt)
    assert trainable_report(mm)["goal"]["projector"] == sum(p.numel() for p in mm.outputs["goal"].parameters())


def test_gated_routing_turns_the_output_adapter_on_only_when_producing_it(tiny_mm, compose):
    mm = tiny_mm("routing=gated", modalities=("grid",))
    graft_output(mm, "goal", dict(output_cfg(compose), signal_tokens=K), cond_tokens=N, cond_dim=C)
    batch = examples(mm)[:1]
    mm.signal_hidden(batch, "goal")
    assert mm.bank.active == ("grid", "goal")
    mm([Example(batch[0].prompt, batch[0].obs, "ok")])  # a text forward: the output is not produced
    assert mm.bank.active == ("grid",)


def test_checkpoint_round_trips_the_output_head_and_adapter(mm, tmp_path):
    with torch.no_grad():
        for p in list(mm.outputs["goal"].parameters()) + mm.bank.lora_parameters("goal"):
            p.add_(torch.randn_like(p) * 0.1)
    batch = examples(mm)
    want = mm.output_features(batch, "goal")
    save_mmllm(mm, tmp_path / "ckpt")
    loaded = load_mmllm(tmp_path / "ckpt")
    assert list(loaded.outputs) == ["goal"] and loaded.signal_ids == mm.signal_ids
    assert loaded.graft_configs["goal"]["output"]["cond_tokens"] == N
    assert torch.allclose(loaded.output_features(batch, "goal"), want, atol=1e-5)
    with torch.no_grad():  # the input side still round-trips too
        assert torch.allclose(loaded([Example("<grid> x", batch[0].obs, "y")]).logits,
                              mm([Example("<grid> x", batch[0].obs, "y")]).logits, atol=1e-5)


def test_an_output_cannot_reuse_an_input_name(tiny_mm, compose):
    mm = tiny_mm(modalities=("grid",))
    with pytest.raises(ValueError, match="already grafted"):
        graft_output(mm, "grid", dict(output_cfg(compose), signal_tokens=K), cond_tokens=N, cond_dim=C)


def test_chunk_policy_executes_a_chunk_then_replans(tiny_mm, compose, rng):
    import gymnasium as gym
    from graft.agent.chunk_policy import ChunkPolicy
    from graft.agent.generators import build_generator

    mm = tiny_mm(modalities=("grid",))
    cfg = compose("onboard").generators.action
    gen = build_generator(cfg)
    graft_output(mm, "act", cfg.output, gen.cond_tokens, gen.cond_dim)
    space = gym.spaces.Box(-0.5, 0.5, (2,), np.float32)
    policy = ChunkPolicy(mm, "act", gen, space, ["grid"], execute=3, sample_steps=2)
    obs = {"grid": np.stack([mm.modalities["grid"].sample(rng) for _ in range(2)]), "mission": ["go", "stop"]}
    policy.reset()
    actions = [policy(obs) for _ in range(4)]
    assert policy.plans == 2 and policy.planned_chunks == 4  # steps 0 and 3 plan for both envs
    assert all(a.shape == (2, 2) and a.dtype == np.float32 and np.abs(a).max() <= 0.5 for a in actions)
    policy.reset([1])  # env 1's episode ended: only it plans now
    policy(obs)
    assert policy.plans == 3 and policy.planned_chunks == 5
    with pytest.raises(ValueError, match=r"execute must be in \[1, horizon=16\]"):
        ChunkPolicy(mm, "act", gen, space, ["grid"], execute=17)
