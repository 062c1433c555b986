"""Language probes (curricula/language_probes.py) on tiny seeded models: each number is checked
against a hand computation or a known case (nothing grafted, LoRA B at zero, a perturbed adapter)."""
from __future__ import annotations

import math

import pytest
import torch
from graft.agent.example import Example
from graft.curricula import language_probes as lp

PROMPTS = ["Tell me about the sea.", "Name a colour.", "What is a cat?", "Say something nice.",
           "Count to three."]


@pytest.fixture(scope="module")
def configs():
    from graft.curricula.config import group_config

    return group_config(None, "backbone", "tiny_llama"), group_config(None, "lora", "default")


@pytest.fixture
def fresh(configs):
    """A tiny Llama MM-LLM with nothing grafted (seeded: the same weights every call)."""
    from graft.agent.build import build_mmllm

    def make(routing: str = "stacked"):
        torch.manual_seed(0)
        return build_mmllm({"backbone": configs[0], "lora": configs[1], "routing": routing})

    return make


def perturb(mm, name: str, scale: float = 0.05) -> None:
    """Move adapter `name` off its zero-initialised B (seeded)."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in mm.bank.model.named_parameters():
            if "lora_B" in n and f".{name}." in n:
                p.add_(torch.randn(p.shape, generator=gen) * scale)


def grafted(fresh, routing: str = "stacked"):
    from graft.agent.build import graft_task

    mm = fresh(routing)
    graft_task(mm, "skills")
    return mm


# ---- held-out passages ---------------------------------------------------------------------------
def test_passages_are_deterministic_disjoint_halves_of_bounded_prose():
    val, test = lp.heldout_passages("val", count=None), lp.heldout_passages("test", count=None)
    assert len(val) >= 64 and len(test) >= 64 and not set(val) & set(test)
    assert lp.heldout_passages("val") == val[:32] == lp.heldout_passages("val", count=32)
    short = lp.heldout_passages("test", max_chars=200, count=None, min_chars=80)
    for p in val + test + short:
        assert "  " not in p and "\n" not in p and "::=" not in p
    assert all(160 <= len(p) <= 400 for p in val + test) and all(80 <= len(p) <= 200 for p in short)
    with pytest.raises(ValueError):
        lp.heldout_passages("train")


# ---- perplexity ----------------------------------------------------------------------------------
def nll_by_hand(model, ids: list[int]) -> tuple[float, int]:
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]
    logp = torch.log_softmax(logits.double(), -1)
    return float(-logp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].sum()), len(ids) - 1


def test_perplexity_is_exp_of_the_mean_token_nll(fresh):
    mm = fresh()
    one, two = lp.heldout_passages("val")[:2]
    ids = mm._token_ids(one)[:48]
    nll, n = nll_by_hand(mm.backbone, ids)
    assert lp.perplexity(mm, [one], max_tokens=48) == pytest.approx(math.exp(nll / n), rel=1e-4)
    # a padded batch of unequal rows: the mean is over every real token of both passages
    short = two[:60]
    nll2, n2 = nll_by_hand(mm.backbone, mm._token_ids(short)[:48])
    assert n2 < n
    pooled = math.exp((nll + nll2) / (n + n2))
    assert lp.perplexity(mm, [short, one], max_tokens=48) == pytest.approx(pooled, rel=1e-4)


def test_perplexity_reads_the_text_only_adapters_and_restores_modes(fresh):
    mm = grafted(fresh)
    passage = lp.heldout_passages("test")[0]
    base = lp.perplexity(mm, [passage], max_tokens=40)
    assert base == pytest.approx(lp.perplexity(fresh(), [passage], max_tokens=40), rel=1e-6)  # B = 0
    perturb(mm, "skills")
    mm.set_trainable("skills", "it")
    mm.train()
    ids = mm._token_ids(passage)[:40]
    with torch.no_grad(), mm._routed([Example("")]) as model:
        nll, n = nll_by_hand(model.eval(), ids)
    mm.train()
    assert lp.perplexity(mm, [passage], max_tokens=40) == pytest.approx(math.exp(nll / n), rel=1e-4) != base
    assert mm.training and all(p.requires_grad for p in mm.bank.lora_parameters("skills"))


# ---- knowledge -----------------------------------------------------------------------------------
def test_knowledge_items_are_well_formed_deterministic_and_split():
    val, test = lp.knowledge_items("val"), lp.knowledge_items("test")
    assert len(test) >= 200 and len(val) + len(test) >= 280
    assert lp.knowledge_items("test") == test
    assert not {it["prompt"] for it in val} & {it["prompt"] for it in test}
    prompts = [it["prompt"] for it in val + test]
    assert len(set(prompts)) == len(prompts)
    for it in val + test:
        cands = it["candidates"]
        assert 2 <= len(cands) <= 5 and len(set(cands)) == len(cands) and it["answer"] in cands
        assert not any(a != b and a.lower().startswith(b.lower()) for a in cands for b in cands), it
        assert it["family"] and it["prompt"].strip()
    assert len({it["family"] for it in test}) >= 8
    assert 0.2 < lp.knowledge_chance(test) < 0.5


def test_no_probe_item_or_prompt_comes_from_the_text_mix_or_the_other_sets():
    from graft.envs.text_tasks import generate_text_tasks

    mix = [t for split in ("train", "test") for t in generate_text_tasks(3000, split, seed=0)]
    mix_prompts = {t["prompt"] for t in mix}
    mix_pairs = {(t["prompt"], t["response"].lower()) for t in mix}
    items = lp.knowledge_items("val") + lp.knowledge_items("test")
    knowledge = {it["prompt"] for it in items}
    assert not knowledge & mix_prompts
    assert not {(it["prompt"], it["answer"].lower()) for it in items} & mix_pairs
    distill, div = lp.distill_prompts(), lp.divergence_prompts()
    assert len(set(distill)) == len(distill) >= 256 and len(set(div)) == len(div) >= 32
    assert not set(distill) & set(div) and not (set(distill) | set(div)) & (knowledge | mix_prompts)


def test_knowledge_chance_is_the_mean_of_one_over_the_candidates():
    items = [{"candidates": ["a", "b"]}, {"candidates": ["a", "b", "c", "d"]}]
    assert lp.knowledge_chance(items) == pytest.approx((1 / 2 + 1 / 4) / 2)


def test_knowledge_accuracy_picks_the_best_normalised_candidate(fresh):
    mm = grafted(fresh)
    perturb(mm, "skills")
    items = [it for it in lp.knowledge_items("val") if len(it["candidates"]) == 4][:24]
    scores = [mm.score([Example(it["prompt"])], it["candidates"], normalize=True)[0] for it in items]
    best = [dict(it, answer=it["candidates"][int(s.argmax())]) for it, s in zip(items, scores)]
    worst = [dict(it, answer=it["candidates"][int(s.argmin())]) for it, s in zip(items, scores)]
    assert lp.knowledge_accuracy(mm, best) == 1.0 and lp.knowledge_accuracy(mm, worst) == 0.0
    # the answers of the real items: same verdict as one `score` call per item
    right = sum(it["candidates"][int(s.argmax())] == it["answer"] for it, s in zip(items, scores))
    assert lp.knowledge_accuracy(mm, items) == right / len(items)


# ---- divergence from the original LLM ------------------------------------------------------------
def test_divergence_is_zero_until_an_adapter_moves(fresh):
    mm = fresh()
    assert lp.divergence(mm, PROMPTS) == 0.0  # nothing grafted
    mm = grafted(fresh)
    mm.set_trainable("skills", "it")
    assert abs(lp.divergence(mm, PROMPTS)) <= 1e-6  # LoRA B starts at zero
    perturb(mm, "skills")
    moved = lp.divergence(mm, PROMPTS)
    assert moved > 1e-3 and lp.divergence(mm, PROMPTS, max_new_positions=1) > 0
    assert lp.divergence(mm, PROMPTS, base_vocab=300) != pytest.approx(moved)
    assert all(p.requires_grad for p in mm.bank.lora_parameters("skills"))  # routing put back
    assert lp.base_vocab_size(mm) == len(mm.tokenizer) == mm.backbone.config.vocab_size


def test_divergence_sees_only_what_a_text_only_prompt_sees(tiny_mm):
    gated = tiny_mm("routing=gated")  # grid and rgb grafted: a text-only prompt runs neither adapter
    stacked = tiny_mm()
    for mm in (gated, stacked):
        perturb(mm, "rgb")
    gated.set_trainable("rgb", "it")
    active, grads = gated.bank.active, [p.requires_grad for p in gated.parameters()]
    assert lp.divergence(gated, PROMPTS) == 0.0 and lp.divergence(stacked, PROMPTS) > 1e-3
    lp.perplexity(gated, PROMPTS)
    assert gated.bank.active == active == ("grid", "rgb")  # the probes put the routing back
    assert [p.requires_grad for p in gated.parameters()] == grads and any(grads)


def test_with_adapters_on_the_probes_see_what_a_prompt_with_observations_sees(tiny_mm):
    gated = tiny_mm("routing=gated")
    perturb(gated, "rgb")
    off = lp.perplexity(gated, PROMPTS)
    with gated.adapters_on(["rgb"]):
        on = lp.perplexity(gated, PROMPTS)
        assert lp.divergence(gated, PROMPTS) > 1e-3
        gated.route([])
        assert gated.bank.active == ("rgb",)
    assert on != pytest.approx(off)
    assert lp.perplexity(gated, PROMPTS) == off and lp.divergence(gated, PROMPTS) == 0.0  # off again after


# ---- self-distilled replay -----------------------------------------------------------------------
def test_self_distilled_records_are_the_original_models_greedy_answers(fresh):
    prompts = lp.distill_prompts()[:6]
    original = fresh().generate([Example(p) for p in prompts], max_new_tokens=8)
    mm = grafted(fresh)
    perturb(mm, "skills", scale=0.5)
    assert mm.generate([Example(p) for p in prompts], max_new_tokens=8) != original  # grafting changed it
    records = lp.self_distilled_records(mm, prompts, max_new_tokens=8)
    assert [(r["prompt"], r["response"]) for r in records] == [(p, a) for p, a in zip(prompts, original) if a]
    assert records and all(r["kind"] == "text" and r["modalities"] == [] and r["family"] == "self_distilled"
                           and r["match"] == "normalized" for r in records)


def test_sampled_self_distillation_draws_from_the_original_model_seeded_and_leaves_the_rng_alone(fresh):
    """sample=True: answers drawn from the original model's distribution (adapters off), the same for
    the same seed, other than greedy ones, with the global torch RNG where it was."""
    prompts = lp.distill_prompts()[:8]
    greedy = fresh().generate([Example(p) for p in prompts], max_new_tokens=8)
    mm = grafted(fresh)
    perturb(mm, "skills", scale=0.5)
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    first = lp.self_distilled_records(mm, prompts, max_new_tokens=8, sample=True, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    again = lp.self_distilled_records(mm, prompts, max_new_tokens=8, sample=True, seed=1)
    other = lp.self_distilled_records(mm, prompts, max_new_tokens=8, sample=True, seed=2)
    answers = lambda records: [(r["prompt"], r["response"]) for r in records]  # noqa: E731
    assert answers(first) == answers(again) and answers(first) != answers(other)
    assert answers(first) != [(p, a) for p, a in zip(prompts, greedy) if a]
    # drawn with the adapters off: a perturbed adapter does not change what is sampled
    clean = lp.self_distilled_records(fresh(), prompts, max_new_tokens=8, sample=True, seed=1)
    assert answers(clean) == answers(first)


def test_language_probes_reports_every_probe(fresh, capsys):
    out = lp.language_probes(grafted(fresh), split="val")
    assert set(out) == {"perplexity", "knowledge", "knowledge_chance", "divergence"}
    assert out["perplexity"] > 1 and 0 <= out["knowledge"] <= 1 and abs(out["divergence"]) <= 1e-6
    assert out["knowledge_chance"] == pytest.approx(lp.knowledge_chance(lp.knowledge_items("val")))
    assert "language probes [val]" in capsys.readouterr().out
