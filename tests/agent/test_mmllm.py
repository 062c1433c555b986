"""Splicing modality tokens into the LLM input, generation, candidate scoring and input errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from graft.agent.mmllm import IGNORE, Example
from graft.envs.spec import ObservationError


@pytest.fixture
def mm(tiny_mm):
    return tiny_mm()


def obs(mm, rng, *names):
    return {n: mm.modalities[n].sample(rng) for n in names}


def test_placeholder_is_replaced_by_the_modality_tokens(mm, rng):
    ex = Example("<grid> where is the ball?", obs(mm, rng, "grid"), "ahead")
    text_len = len(mm.prompt_ids(ex.prompt))
    (spliced,) = mm.embed_prompts([ex])
    assert spliced.shape == (text_len - 1 + 16, mm.embed_dim)  # grid: 49 cells pooled to 16 tokens (grid.yaml)
    n_grid = mm.projectors["grid"](mm.modalities["grid"](ex.obs["grid"][None]))[0]
    assert n_grid.shape == (16, mm.embed_dim)
    start = mm.prompt_ids(ex.prompt).index(mm.placeholder_ids["grid"])
    assert torch.allclose(spliced[start : start + 16], n_grid)


def test_the_modality_token_budget_reaches_the_projector(tiny_mm, rng):
    full = tiny_mm("modalities.grid.tokens=null")
    (spliced,) = full.embed_prompts([Example("<grid> hi", obs(full, rng, "grid"))])
    assert spliced.shape[0] == len(full.prompt_ids("<grid> hi")) - 1 + 49  # one token per cell
    nine = tiny_mm("modalities.grid.tokens=9")
    assert nine.projectors["grid"](nine.modalities["grid"](obs(nine, rng, "grid")["grid"][None])).shape[1] == 9
    with pytest.raises(ValueError, match="square"):
        tiny_mm("modalities.grid.tokens=10").projectors["grid"](torch.zeros(1, 49, 32))


def test_labels_ignore_prompt_and_modality_positions(mm, rng):
    examples = [Example("<grid> colour?", obs(mm, rng, "grid"), "red"), Example("say yes", {}, "yes")]
    prompts = mm.embed_prompts(examples)
    captured = {}
    handle = mm.backbone.register_forward_pre_hook(lambda m, a, kw: captured.update(kw), with_kwargs=True)
    mm(examples)
    handle.remove()
    labels = captured["labels"]
    for b, (p, ex) in enumerate(zip(prompts, examples)):
        response = mm._token_ids(ex.response + mm.tokenizer.eos_token)
        assert (labels[b, : p.shape[0]] == IGNORE).all()
        assert labels[b, p.shape[0] : p.shape[0] + len(response)].tolist() == response
    assert captured["attention_mask"][1].sum() < captured["attention_mask"][0].sum()  # padded shorter row


def test_batched_left_padded_generation_matches_one_at_a_time(mm, rng):
    examples = [Example("<grid> what is ahead of you right now?", obs(mm, rng, "grid")), Example("hi", {})]
    batched = mm.generate_ids(examples, max_new_tokens=6, min_new_tokens=6)
    single = [mm.generate_ids([ex], max_new_tokens=6, min_new_tokens=6)[0] for ex in examples]
    assert batched.shape == (2, 6)
    assert batched[0].tolist() == single[0].tolist() and batched[1].tolist() == single[1].tolist()


def test_score_matches_the_teacher_forced_loss(mm, rng):
    ex = Example("<grid> which colour?", obs(mm, rng, "grid"))
    candidates = ["red", "green ball", "blue"]
    scores = mm.score([ex, Example("say it", {})], candidates)
    assert scores.shape == (2, 3)
    # a complete answer (the default) ends with the end token, as the training labels do:
    # log p(candidate) == -(mean CE over its tokens) * n_tokens, from an independent forward
    out = mm([Example(ex.prompt, ex.obs, "green ball")])
    n = len(mm.answer_ids("green ball"))
    assert n == len(mm._token_ids("green ball")) + 1
    assert torch.allclose(scores[0, 1], -out.loss * n, atol=1e-4)
    bare = mm.score([ex], ["green ball"], complete=False)[0, 0]
    assert bare > scores[0, 1]  # the same answer without its end token is more likely


def test_prefix_candidates_compete_as_complete_answers(mm):
    """Taught to answer "12", a model scored without the end token still prefers its prefix "1"
    (a prefix's log-prob is never lower); scored as complete answers, "12" wins."""
    torch.manual_seed(0)
    ex = Example("How many?", {})
    params = list(mm.backbone.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=3e-3)
    for _ in range(30):
        loss = mm([Example(ex.prompt, {}, "12")]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    prefix_first = ["1", "12", "3"]
    bare = mm.score([ex], prefix_first, complete=False)[0]
    assert bare[0] >= bare[1] - 1e-5  # without the end token "1" is at least as likely as "12"
    complete = mm.score([ex], prefix_first)[0]
    assert complete.argmax().item() == 1
    torch.testing.assert_close(complete, mm.score_repeated([ex], prefix_first)[0], rtol=1e-4, atol=1e-4)


def test_unknown_modality_key_names_what_the_agent_reads(mm, rng):
    with pytest.raises(ObservationError, match=r"unknown modality \['lidar'\].*'grid'"):
        mm.embed_prompts([Example("<grid> x", {**obs(mm, rng, "grid"), "lidar": np.zeros(3)})])


def test_observation_without_placeholder_is_an_error(mm, rng):
    with pytest.raises(ObservationError, match="exactly one <grid>"):
        mm.embed_prompts([Example("no placeholder here", obs(mm, rng, "grid"))])


def test_placeholder_without_observation_is_an_error(mm):
    with pytest.raises(ObservationError, match=r"uses <rgb> but no 'rgb'.*uint8"):
        mm.embed_prompts([Example("<rgb> what do you see?", {})])


def test_wrong_shape_in_a_batch_names_the_modality(mm, rng):
    good = obs(mm, rng, "grid")
    with pytest.raises(ObservationError, match=r"'grid': shape \(7x7x3\).*got shape \(5, 7, 3\)"):
        mm.embed_prompts([Example("<grid>", good), Example("<grid>", {"grid": good["grid"][:5]})])


def test_gated_routing_uses_only_present_modalities(tiny_mm, rng):
    stacked, gated = tiny_mm(), tiny_mm("routing=gated")
    for m in (stacked, gated):  # make the rgb adapter non-zero so routing matters
        for p in m.bank.lora_parameters("rgb"):
            torch.nn.init.normal_(p, std=0.5)
    ex = [Example("<grid> what?", obs(stacked, rng, "grid"), "ball")]
    assert gated(ex).loss.item() != pytest.approx(stacked(ex).loss.item())
    assert gated.bank.active == ("grid",)
    assert stacked.bank.active == ("grid", "rgb")


def test_the_fingerprint_follows_exactly_the_weights_an_input_reaches(tiny_mm):
    gated, stacked = tiny_mm("routing=gated"), tiny_mm()
    before = {m: (gated.fingerprint([m]), stacked.fingerprint([m])) for m in ("grid", "rgb")}
    text = gated.fingerprint([])
    with torch.no_grad():
        for p in gated.bank.lora_parameters("rgb") + stacked.bank.lora_parameters("rgb"):
            p.add_(0.01)
    assert gated.fingerprint(["grid"]) == before["grid"][0]  # gated: grid inputs never read the rgb adapter
    assert gated.fingerprint([]) == text  # nor do text-only ones
    assert stacked.fingerprint(["grid"]) != before["grid"][1]  # stacked: every input reads it
    assert gated.fingerprint(["rgb"]) != before["rgb"][0]
    with torch.no_grad():
        next(gated.projectors["grid"].parameters()).add_(0.01)
    assert gated.fingerprint(["grid"]) != before["grid"][0]


def test_gated_training_reads_each_row_as_inference_will(tiny_mm, rng):
    from graft.agent.mmllm import RoutedOutput

    mm = tiny_mm("routing=gated")
    with torch.no_grad():  # a trained grid adapter: reading rgb rows with it on would change them
        for p in mm.bank.lora_parameters("grid"):
            p.normal_(std=0.5)
    mm.set_trainable("rgb", "it")
    own = [Example("<rgb> what?", obs(mm, rng, "rgb"), "ball") for _ in range(2)]
    replayed = Example("<grid> what?", obs(mm, rng, "grid"), "key", routes=("rgb",))  # mixed in by replay
    text = Example("What is two plus two?", {}, "four", routes=("rgb",))  # mixed in by the text mix
    out = mm([*own, replayed, text], by_route=True)
    assert isinstance(out, RoutedOutput) and sorted(map(sorted, out.rows)) == [[0, 1, 3], [2]]
    alone = mm([*own, text], by_route=True).loss  # what inference reads for these rows: the rgb adapter alone
    torch.testing.assert_close(out.groups[out.rows.index([0, 1, 3])].loss, alone)
    out.loss.backward()
    assert all(p.grad is not None for p in mm.bank.lora_parameters("rgb"))
    assert all(p.grad is None for p in mm.bank.lora_parameters("grid"))  # frozen, though it was on for one row
    stacked = tiny_mm()
    stacked.set_trainable("rgb", "it")
    assert not isinstance(stacked([*own, replayed], by_route=True), RoutedOutput)  # stacked: one forward, all on
    assert not isinstance(mm([*own, replayed]), RoutedOutput)  # without by_route: the union, as before


def test_the_routed_loss_is_the_batch_mean_token_loss(tiny_mm, rng):
    """With the grid adapter at zero, union and per-route reading give the same numbers: the combined
    loss of the routing groups must then equal the one-forward loss over all label tokens."""
    mm = tiny_mm("routing=gated")
    mm.set_trainable("rgb", "it")
    rows = [Example("<rgb> what?", obs(mm, rng, "rgb"), "a red ball"),
            Example("<grid> where?", obs(mm, rng, "grid"), "left", routes=("rgb",)),
            Example("<rgb> colour?", obs(mm, rng, "rgb"), "green")]
    routed, union = mm(rows, by_route=True), mm(rows)
    assert len(routed.groups) == 2
    torch.testing.assert_close(routed.loss, union.loss)
