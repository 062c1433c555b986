"""The control-step fast path (agent/fast_path.py) gives the slow path's scores and actions."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from graft.agent.fast_path import FastScorer, Trie
from graft.agent.mmllm import Example
from graft.agent.policy import Agent

ACTIONS = ["left", "right", "forward", "pick up", "pick up the key", "drop", "toggle", "done"]
MISSIONS = ["go to the red ball", "open the door", "pick up the purple key next to the green box on your left"]


@pytest.fixture(params=["tiny_llama", "tiny_qwen2", "tiny_gpt2"])
def mm(request, tiny_mm, seed_lora):
    mm = tiny_mm(f"backbone={request.param}").eval()  # grid + rgb: two adapters, stacked
    seed_lora(mm)
    return mm


def examples(mm, rng, mods=("grid", "rgb")) -> list[Example]:
    tags = "\n".join(f"<{m}>" for m in mods)
    return [Example(f"Mission: {m}\nWhat is the next action?\n{tags}", {n: mm.modalities[n].sample(rng) for n in mods})
            for m in MISSIONS]


def test_trie_shares_prefixes_and_keeps_paths():
    trie = Trie([[5, 6], [5, 7], [8], [5, 6, 9]])
    assert len(trie) == 5  # 5, 6, 7, 8, 9
    assert [trie.token[n] for n in trie.paths[3]] == [5, 6, 9]
    assert trie.paths[0] == trie.paths[3][:2] and trie.ancestors(trie.paths[3][2]) == trie.paths[3][::-1]


def test_fast_score_equals_repeated_prompts(mm, rng):
    batch = examples(mm, rng)  # batch 3, prompts of different lengths
    slow = mm.score_repeated(batch, ACTIONS)
    fast = mm.score(batch, ACTIONS)
    assert fast.shape == (3, len(ACTIONS))
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-4)
    assert (fast.argmax(-1) == slow.argmax(-1)).all()
    torch.testing.assert_close(mm.score(batch, ACTIONS, normalize=True), mm.score_repeated(batch, ACTIONS, normalize=True),
                               rtol=1e-4, atol=1e-4)


def test_without_head_cache_and_for_mixed_batches(mm, rng):
    mixed = examples(mm, rng, ("grid",))[:2] + [Example("Name a colour.", {})] + examples(mm, rng)[:1]
    slow = mm.score_repeated(mixed, ACTIONS)
    torch.testing.assert_close(FastScorer(mm, cache_head=False).score(mixed, ACTIONS), slow, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(mm.score(mixed, ACTIONS), slow, rtol=1e-4, atol=1e-4)


def test_static_text_is_cached_from_its_second_sight_and_gives_the_same_scores(mm, rng, seed_lora):
    scorer = FastScorer(mm)
    first = examples(mm, rng)  # three missions: the static text of each is new
    slow = mm.score_repeated(first, ACTIONS)
    torch.testing.assert_close(scorer.score(first, ACTIONS), slow, rtol=1e-4, atol=1e-4)
    head = len(scorer.head_ids())
    assert {len(ids) for _, ids in scorer._prefixes} == {head}  # only the template head so far
    again = [Example(ex.prompt, {k: mm.modalities[k].sample(rng) for k in ex.obs}) for ex in first[:2]]
    new = Example("Mission: go to the green key\nWhat is the next action?\n<grid>", {"grid": mm.modalities["grid"].sample(rng)})
    mixed = again + [Example("Name a colour.", {}), new]  # cached, cached, head only, new
    torch.testing.assert_close(scorer.score(mixed, ACTIONS), mm.score_repeated(mixed, ACTIONS), rtol=1e-4, atol=1e-4)
    cached = sorted(len(ids) for _, ids in scorer._prefixes)
    statics = sorted(len(scorer.static_ids(ex.prompt)) for ex in again)
    assert cached == sorted([head] + statics) and min(statics) > head  # mission + question are cached
    seed_lora(mm, seed=1)  # new weights: the cached keys are stale and must not be served
    torch.testing.assert_close(scorer.score(again, ACTIONS), mm.score_repeated(again, ACTIONS), rtol=1e-4, atol=1e-4)


def test_merged_adapters_give_the_same_logits_and_scores(mm, rng):
    batch = examples(mm, rng)
    mm.route(["grid", "rgb"])
    merged = mm.bank.merged(["grid", "rgb"]).eval()
    embeds = mm.pad(mm.embed_prompts(batch))
    embeds.pop("labels")
    with torch.no_grad(), mm.bank.context():
        live = mm.bank.model(**embeds).logits
    with torch.no_grad():
        folded = merged(**embeds).logits
    torch.testing.assert_close(folded, live, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(mm.scorer(merge=True).score(batch, ACTIONS), mm.score_repeated(batch, ACTIONS),
                               rtol=1e-4, atol=1e-4)


def test_merged_copy_and_head_cache_follow_adapter_updates(mm, rng, seed_lora):
    batch = examples(mm, rng)
    scorer = mm.scorer(merge=True)
    before = scorer.score(batch, ACTIONS)
    seed_lora(mm, seed=1)  # in-place update, as an optimiser step does
    after = scorer.score(batch, ACTIONS)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, mm.score_repeated(batch, ACTIONS), rtol=1e-4, atol=1e-4)


def test_gated_routing_one_adapter_per_batch(tiny_mm, rng, seed_lora):
    mm = tiny_mm("routing=gated").eval()
    seed_lora(mm)
    for mods in (("grid",), ("rgb",), ("grid", "rgb")):
        batch = examples(mm, rng, mods)
        torch.testing.assert_close(mm.scorer(merge=True).score(batch, ACTIONS), mm.score_repeated(batch, ACTIONS),
                                   rtol=1e-4, atol=1e-4)


def test_deployed_agent_acts_like_the_live_agent(tiny_mm, rng, seed_lora):
    mm = tiny_mm().eval()
    seed_lora(mm)
    space = gym.spaces.Discrete(len(ACTIONS))
    obs = {"grid": np.stack([mm.modalities["grid"].sample(rng) for _ in range(4)]),
           "rgb": np.stack([mm.modalities["rgb"].sample(rng) for _ in range(4)]), "mission": MISSIONS + ["go"]}
    live = Agent(mm, space, ACTIONS)(obs)
    deployed = Agent(mm, space, ACTIONS, deploy=True)(obs)
    expected = mm.score_repeated(Agent(mm, space, ACTIONS).examples(obs), ACTIONS).argmax(-1).numpy()
    assert live.tolist() == deployed.tolist() == expected.tolist()


@pytest.mark.parametrize("backbone", ["tiny_llama", "tiny_gpt2"])
def test_packed_and_label_only_logits_give_the_same_loss_and_gradients(tiny_mm, rng, backbone, seed_lora):
    mm = tiny_mm(f"backbone={backbone}").eval()  # eval: no dropout, so the passes are comparable
    seed_lora(mm)
    params = mm.set_trainable("grid", "it")
    batch = [Example("Mission: go to the red ball\nWhat is the next action?\n<grid>",
                     {"grid": mm.modalities["grid"].sample(rng)}, "left"),
             Example("What is two plus two?", {}, "four"),
             Example("<grid>\n<rgb>\nwhat do you see?", {"grid": mm.modalities["grid"].sample(rng),
                                                        "rgb": mm.modalities["rgb"].sample(rng)}, "a red ball and a door")]
    results = []
    for pack, logits_at in ((False, "all"), (True, "all"), (False, "labels"), (True, "labels"), ("auto", "labels")):
        out = mm(batch, pack=pack, logits_at=logits_at)
        grads = torch.autograd.grad(out.loss, params)
        results.append((out.loss.detach(), grads))
    for loss, grads in results[1:]:
        torch.testing.assert_close(loss, results[0][0], rtol=1e-5, atol=1e-5)
        for g, ref in zip(grads, results[0][1]):
            torch.testing.assert_close(g, ref, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="logits_at"):
        mm(batch, logits_at="some")
    # the attributes are forward()'s defaults: padded rows with every position's logits, unless changed
    assert (mm.pack, mm.logits_at) == (False, "all")
    padded = mm(batch).logits.shape
    mm.pack, mm.logits_at = True, "labels"
    out = mm(batch)
    torch.testing.assert_close(out.loss, results[0][0], rtol=1e-5, atol=1e-5)
    assert out.logits.shape[0] == 1 and out.logits.shape[1] < padded[0] * padded[1]  # one row, labels only


def test_auto_packing_weighs_padding_saved_against_attention_added():
    from types import SimpleNamespace

    from graft.agent.packing import worth_packing

    lengths = [95, 90, 88, 80, 40, 35, 30, 30]  # grid prompts and text-only ones, as onboarding mixes them
    smollm2 = SimpleNamespace(hidden_size=576, intermediate_size=1536)
    tiny = SimpleNamespace(hidden_size=64, intermediate_size=128)
    assert worth_packing(lengths, smollm2)  # wide layers: the skipped pad positions weigh more
    assert not worth_packing(lengths, tiny)  # narrow layers: the longer attention row weighs more
    assert not worth_packing([50] * 8, smollm2)  # nothing to skip
