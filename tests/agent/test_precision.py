"""`dtype="auto"` (agent/precision.py): the deployment precision is measured, and bfloat16 must earn it."""
from __future__ import annotations

import gc
import weakref

import gymnasium as gym
import numpy as np
import pytest
import torch
from graft.agent import precision
from graft.agent.fast_path import FastScorer
from graft.agent.policy import Agent
from graft.agent.precision import choose_dtype, cpu_capability, probe_examples
from graft.envs.prompts import fill

ACTIONS = ["left", "right", "forward", "pick up", "drop", "toggle", "done"]
MERGED = {(True, torch.float32), (True, torch.bfloat16)}


@pytest.fixture
def agent(tiny_mm, seed_lora):
    mm = tiny_mm().eval()  # grid + rgb
    seed_lora(mm)
    return Agent(mm, gym.spaces.Discrete(len(ACTIONS)), ACTIONS, deploy=True)


def merged_keys(mm) -> set:
    return set(mm.__dict__.get("_scorers", {})) & MERGED


class Clock:
    """A fake timer: scoring advances it by a fixed cost per dtype (ms per call)."""

    def __init__(self, monkeypatch, cost: dict, scores=None):
        self.now, self.cost = 0.0, cost
        original = FastScorer.score

        def score(scorer, examples, candidates, *args, **kwargs):
            self.now += self.cost[scorer.dtype] / 1e3
            if scores is not None:
                return scores(scorer.dtype, examples, len(candidates))
            return original(scorer, examples, candidates, *args, **kwargs)
        monkeypatch.setattr(FastScorer, "score", score)

    def __call__(self) -> float:
        return self.now


# ---- the host -----------------------------------------------------------------------------------------
def test_cpu_capability_reports_torch_and_the_cpu_flags(tmp_path, monkeypatch):
    cap = cpu_capability()
    assert set(cap) == {"torch", "model", "avx2", "avx512f", "avx512_bf16", "amx_bf16"}
    assert cap["torch"] == torch.backends.cpu.get_cpu_capability()
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(line for line in f if line.startswith("flags")).split(":")[1].split()
    except (OSError, StopIteration):
        flags = None
    if flags is not None:
        assert cap["avx2"] == ("avx2" in flags) and cap["avx512_bf16"] == ("avx512_bf16" in flags)
        assert all(isinstance(cap[f], bool) for f in precision.FLAGS)
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu sse avx2 avx512f amx_bf16\n\n"
                    "processor\t: 1\nflags\t\t: fpu\n")
    assert precision._cpuinfo(str(info)) == ({"fpu", "sse", "avx2", "avx512f", "amx_bf16"}, "Test CPU 9000")
    assert precision._cpuinfo(str(tmp_path / "absent")) == (None, None)
    monkeypatch.setattr(precision, "_cpuinfo", lambda: (None, None))  # not Linux: flags unknown
    unknown = cpu_capability()
    assert all(unknown[f] is None for f in precision.FLAGS) and unknown["model"]


# ---- the probes ---------------------------------------------------------------------------------------
def test_probes_are_the_agents_own_prompts_sampled_with_a_fixed_seed(agent):
    probes = probe_examples(agent)
    assert len(probes) == precision.PROBES == 32
    assert probes[0].prompt == fill(agent.prompt, agent.modalities, precision.MISSIONS[0])
    assert {p.prompt for p in probes} == {fill(agent.prompt, agent.modalities, m) for m in precision.MISSIONS}
    assert all(set(p.obs) == {"grid", "rgb"} for p in probes)
    for m in agent.modalities:  # valid observations of each modality, the same ones every time
        agent.mm.modalities[m].validate(np.stack([p.obs[m] for p in probes]), batched=True)
        np.testing.assert_array_equal(probes[3].obs[m], probe_examples(agent)[3].obs[m])
    assert not np.array_equal(probes[0].obs["grid"], probe_examples(agent, seed=1)[0].obs["grid"])
    assert len(probe_examples(agent, n=5)) == 5


def test_probes_from_real_observations(agent, rng):
    rows = [{"grid": agent.mm.modalities["grid"].sample(rng), "rgb": agent.mm.modalities["rgb"].sample(rng),
             "mission": f"go to door {i}"} for i in range(3)]
    probes = probe_examples(agent, rows)
    assert [p.prompt for p in probes] == [fill(agent.prompt, agent.modalities, f"go to door {i}") for i in range(3)]
    np.testing.assert_array_equal(probes[2].obs["rgb"], rows[2]["rgb"])
    batch = {m: np.stack([r[m] for r in rows]) for m in agent.modalities} | {"mission": [r["mission"] for r in rows]}
    assert [p.prompt for p in probe_examples(agent, batch)] == [p.prompt for p in probes]
    from graft.envs.spec import ObservationError

    with pytest.raises(ObservationError):  # validated as the policy validates its input
        probe_examples(agent, {**batch, "grid": batch["grid"][:, :2]})


# ---- the choice ---------------------------------------------------------------------------------------
def test_choose_dtype_measures_both_and_computes_agreement(agent):
    mm, probes = agent.mm, probe_examples(agent)
    choice = choose_dtype(mm, probes, ACTIONS)
    assert set(choice) >= {"dtype", "ms", "agreement", "probes", "reason"}
    assert choice["dtype"] in ("float32", "bfloat16") and choice["probes"] == 32
    assert choice["ms"]["float32"] > 0 and choice["ms"]["bfloat16"] > 0
    # the agreement is the share of probes whose argmax matches: recompute it (as measured: warm, batches of 8)
    actions = {}
    for dtype in (torch.float32, torch.bfloat16):
        scorer = FastScorer(mm, merge=True, dtype=dtype)
        for _ in range(2):  # the second pass serves the missions' static text from the cache, as timed
            actions[dtype] = torch.cat([scorer.score(probes[i:i + 8], ACTIONS).argmax(-1) for i in range(0, 32, 8)])
    expected = (actions[torch.float32] == actions[torch.bfloat16]).float().mean().item()
    assert choice["agreement"] == pytest.approx(expected)
    faster = choice["ms"]["bfloat16"] < choice["ms"]["float32"]
    assert (choice["dtype"] == "bfloat16") == (faster and choice["agreement"] >= 0.99), choice
    assert merged_keys(mm) == {(True, precision.DTYPES[choice["dtype"]])}  # the other copy is gone
    assert choose_dtype(mm, probes, ACTIONS, keep=False)["probes"] == 32 and not merged_keys(mm)


def test_slower_bfloat16_is_not_chosen_and_its_copy_is_freed(agent, monkeypatch):
    mm, probes = agent.mm, probe_examples(agent)
    clock = Clock(monkeypatch, {torch.float32: 5.0, torch.bfloat16: 9.0})  # real scores, fake time
    copies = []
    original = FastScorer._model

    def model(scorer, present):  # watch the merged bf16 copy
        out = original(scorer, present)
        if scorer.dtype == torch.bfloat16:
            copies.append(weakref.ref(out[0]))
        return out
    monkeypatch.setattr(FastScorer, "_model", model)
    choice = choose_dtype(mm, probes, ACTIONS, timer=clock)
    assert choice["dtype"] == "float32" and "not faster" in choice["reason"]
    assert choice["ms"] == pytest.approx({"float32": 4 * 5.0, "bfloat16": 4 * 9.0})  # 4 forwards of 8 per pass
    assert merged_keys(mm) == {(True, torch.float32)}
    gc.collect()
    assert copies and all(ref() is None for ref in copies)  # no bf16 weights stay alive


def fake_scores(flipped: set[int], probes):
    """Scores whose float32 argmax for probe i is i % K; bfloat16 moves it on the probes in `flipped`."""
    index = {id(p): i for i, p in enumerate(probes)}

    def scores(dtype, examples, k):
        out = torch.zeros(len(examples), k)
        for row, ex in enumerate(examples):
            i = index[id(ex)]
            best = (i + 1) % k if dtype == torch.bfloat16 and i in flipped else i % k
            out[row, best] = 1.0
        return out
    return scores


def test_faster_bfloat16_that_disagrees_is_not_chosen(agent, monkeypatch):
    mm, probes = agent.mm, probe_examples(agent)
    fast = {torch.float32: 8.0, torch.bfloat16: 2.0}
    agreed = choose_dtype(mm, probes, ACTIONS, timer=Clock(monkeypatch, fast, fake_scores(set(), probes)))
    assert (agreed["dtype"], agreed["agreement"]) == ("bfloat16", 1.0) and "4.00x faster" in agreed["reason"]
    one_off = choose_dtype(mm, probes, ACTIONS, timer=Clock(monkeypatch, fast, fake_scores({5}, probes)))
    assert one_off["agreement"] == pytest.approx(31 / 32)  # one probe of 32 picks another action
    assert one_off["dtype"] == "float32" and "96.9% of 32 probes" in one_off["reason"]
    assert one_off["ms"]["bfloat16"] < one_off["ms"]["float32"]
    assert merged_keys(mm) <= {(True, torch.float32)}
    loose = choose_dtype(mm, probes, ACTIONS, agreement=0.95,
                         timer=Clock(monkeypatch, fast, fake_scores({5}, probes)))
    assert loose["dtype"] == "bfloat16"  # the threshold is the one given
    many = choose_dtype(mm, probes, ACTIONS, timer=Clock(monkeypatch, fast, fake_scores(set(range(0, 32, 2)), probes)))
    assert (many["dtype"], many["agreement"]) == ("float32", 0.5)


def test_a_dtype_that_cannot_score_is_not_chosen(tiny_mm, monkeypatch):
    mm = tiny_mm().eval()
    agent = Agent(mm, gym.spaces.Discrete(len(ACTIONS)), ACTIONS, deploy=True)
    original = FastScorer.score

    def score(scorer, *args, **kwargs):
        if scorer.dtype == torch.bfloat16:
            raise RuntimeError("no bf16 kernels here")
        return original(scorer, *args, **kwargs)
    monkeypatch.setattr(FastScorer, "score", score)
    choice = choose_dtype(mm, probe_examples(agent, n=4), ACTIONS, repeats=1)
    assert choice["dtype"] == "float32" and choice["ms"]["bfloat16"] is None and choice["agreement"] is None
    assert "no bf16 kernels here" in choice["reason"] and merged_keys(mm) == {(True, torch.float32)}


# ---- load_policy(dtype="auto") ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def babyai():
    from graft.envs.rollout import load_env_config, make_env_factory

    env = make_env_factory(load_env_config("babyai_goto"))()
    yield env
    env.close()


def test_load_policy_auto_measures_acts_and_reports(tiny_mm, babyai, seed_lora):
    from graft.agent.loader import load_policy

    mm = tiny_mm().eval()
    seed_lora(mm)
    policy = load_policy(mm, babyai, dtype="auto", deploy=True)
    assert isinstance(policy, Agent) and policy.discrete
    report = policy.precision
    assert report["dtype"] in ("float32", "bfloat16") and report["reason"].startswith("auto: ")
    assert report["probes"] == 32 and 0.0 <= report["agreement"] <= 1.0
    assert set(report["ms"]) == {"float32", "bfloat16"} and set(report["cpu"]) >= {"torch", "avx512_bf16"}
    assert policy.dtype == precision.DTYPES[report["dtype"]]
    assert merged_keys(mm) == {(True, policy.dtype)}  # the chosen copy is ready, the other gone
    obs, _ = babyai.reset(seed=0)
    action = int(policy.infer(obs)["actions"])
    assert babyai.action_space.contains(action)
    assert merged_keys(mm) == {(True, policy.dtype)}  # acting used the measured copy
    expected = mm.scorer(merge=True, dtype=policy.dtype).score(
        policy.examples({m: obs[m][None] for m in policy.modalities} | {"mission": [obs["mission"]]}),
        policy.action_names).argmax(-1).item()
    assert action == expected


def test_load_policy_auto_keeps_float32_when_bfloat16_is_slower(tiny_mm, babyai, monkeypatch):
    import time

    from graft.agent.loader import load_policy

    mm = tiny_mm().eval()
    original = FastScorer.score

    def score(scorer, *args, **kwargs):
        if scorer.dtype == torch.bfloat16:
            time.sleep(0.02)  # an AVX2-only host
        return original(scorer, *args, **kwargs)
    monkeypatch.setattr(FastScorer, "score", score)
    obs = [babyai.reset(seed=s)[0] for s in range(4)]
    policy = load_policy(mm, babyai, dtype="auto", deploy=True, probe=obs)  # real observations as probes
    assert policy.precision["dtype"] == "float32" and policy.dtype == torch.float32
    assert policy.precision["probes"] == 4 and "not faster" in policy.precision["reason"]
    assert merged_keys(mm) == {(True, torch.float32)}
    assert babyai.action_space.contains(int(policy.infer(obs[0])["actions"]))
    live = load_policy(mm, babyai, dtype="auto")  # not deploying: measured, but no copy kept
    assert live.precision["dtype"] == "float32" and not merged_keys(mm)


def test_auto_where_there_is_nothing_to_choose(tiny_mm, babyai, chunk_agent):
    from graft.agent.chunk_policy import ChunkPolicy
    from graft.agent.loader import load_policy
    from graft.envs.rollout import load_env_config, make_env_factory

    reach = make_env_factory(load_env_config("mujoco_reach"))()
    try:
        mm, generator = chunk_agent(inputs=["proprio"], execute=3)
        chunks = load_policy(mm, reach, generators={"action_chunk": generator}, dtype="auto")
        assert isinstance(chunks, ChunkPolicy) and chunks.precision["dtype"] == "float32"
        assert "action chunks" in chunks.precision["reason"]
        text = load_policy(mm, reach, dtype="auto")  # continuous: generated on the live model
        assert type(text) is Agent and not text.discrete and text.dtype is None
        assert text.precision["dtype"] == "float32" and "continuous" in text.precision["reason"]
        assert not merged_keys(mm)
        obs, _ = reach.reset(seed=0)
        assert reach.action_space.contains(chunks.infer(obs)["actions"][0])
    finally:
        reach.close()
    given = load_policy(tiny_mm(), babyai, dtype="bfloat16")
    assert given.precision == {"dtype": "bfloat16", "reason": "given"} and given.dtype == torch.bfloat16
    assert load_policy(tiny_mm(), babyai).precision["dtype"] == "float32"


def test_unknown_dtypes_name_auto(tiny_mm, babyai, chunk_agent):
    from graft.agent.loader import load_policy

    with pytest.raises(ValueError, match=r"dtype must be float32 or bfloat16 .*or auto.*'float16'"):
        load_policy(tiny_mm(), babyai, dtype="float16")
    mm, generator = chunk_agent(inputs=["proprio"], execute=3)
    from graft.envs.rollout import load_env_config, make_env_factory

    reach = make_env_factory(load_env_config("mujoco_reach"))()
    try:
        with pytest.raises(ValueError, match=r"float32 or bfloat16, or auto, got 'fp8'"):
            load_policy(mm, reach, generators={"action_chunk": generator}, dtype="fp8")
        with pytest.raises(ValueError, match="served in float32"):
            load_policy(mm, reach, generators={"action_chunk": generator}, dtype="bfloat16")
    finally:
        reach.close()
