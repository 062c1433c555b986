"""`dtype="auto"`: the text Agent's deployment precision, measured on the host that acts.

The Agent scores its candidate actions on a merged deployment copy of the weights
(`MMLLM.scorer(merge=True, dtype=...)`, agent/fast_path.py). Which precision is faster depends on
the CPU, not on the machine kind: on an AVX2-only host bfloat16 matmuls are several times slower
than float32, on an AVX-512-BF16 or AMX host they are faster. So the choice is measured:

    examples = probe_examples(agent)                                   # 32 prompts, sampled observations
    choice = choose_dtype(agent.mm, examples, agent.action_names)
    choice["dtype"], choice["ms"], choice["agreement"], choice["reason"]

`choose_dtype` times the fast-path scoring in float32 and in bfloat16 (one warm-up each, which
builds the merged copies, then the median of interleaved repeats) and picks bfloat16 only when it
is faster *and* its argmax action matches float32's on at least 99% of the probes. The copy it
does not pick is dropped from the scorer cache. `cpu_capability()` says what the host offers.
"""
from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from graft.agent.example import Example

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
AGREEMENT = 0.99  # bfloat16 must pick float32's action on this share of the probes
PROBES = 32
BATCH = 8  # examples per timed forward: a control step's batch (serve's max_batch, a rollout's num_envs)
# probe missions: plain text of the demonstrations' kind (only the prompt's shape and length matter)
MISSIONS = ("go to the red ball", "open the door", "pick up the purple key", "put the green box next to the grey ball",
            "reach the red target", "go to the blue door and then pick up the yellow key")


# ---- the host -----------------------------------------------------------------------------------------
def cpu_capability() -> dict[str, Any]:
    """What this CPU offers: torch's dispatch level ("AVX512", "AVX2", "DEFAULT", ...), the model
    name, and whether /proc/cpuinfo lists avx2, avx512f, avx512_bf16 and amx_bf16 (None for each
    where the flags cannot be read, e.g. not Linux)."""
    get = getattr(torch.backends.cpu, "get_cpu_capability", None)
    flags, model = _cpuinfo()
    out: dict[str, Any] = {"torch": get() if get is not None else None,
                           "model": model or platform.processor() or platform.machine() or None}
    out.update({f: (f in flags if flags is not None else None) for f in FLAGS})
    return out


def _cpuinfo(path: str = "/proc/cpuinfo") -> tuple[set[str] | None, str | None]:
    """(the first CPU's flags, its model name) from /proc/cpuinfo; (None, None) where there is none."""
    flags, model = None, None
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if flags is None and key in ("flags", "features"):  # x86: flags, arm: Features
                    flags = set(value.split())
                elif model is None and key in ("model name", "cpu model", "processor") and not value.strip().isdigit():
                    model = value.strip() or None
                if flags is not None and model is not None:
                    break
    except OSError:
        return None, None
    return flags, model


# ---- the probes ---------------------------------------------------------------------------------------
def probe_examples(policy, observations: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
                   n: int = PROBES, seed: int = 0, missions: Sequence[str] = MISSIONS) -> list[Example]:
    """Prompts in `policy`'s own format (its prompt template and modalities, `Policy.examples`).

    `observations`: real ones to probe on — a batch `{modality: (B, ...), "mission": [B str]}` or a
    list of single observations — validated as the policy validates its input. Default: `n`
    observations sampled from each modality's `sample(rng)` with a fixed `seed`, the missions cycled."""
    if observations is not None:
        if not isinstance(observations, Mapping):  # a list of single observations -> one batch
            rows = list(observations)
            if not rows:
                raise ValueError("observations: expected at least one observation to probe on")
            observations = {**{m: np.stack([np.asarray(o[m]) for o in rows]) for m in policy.modalities},
                            "mission": [o.get("mission", "") for o in rows]}
        return policy.examples(policy.check(observations, batched=True))
    if n < 1:
        raise ValueError(f"n must be >= 1 probes, got {n}")
    rng = np.random.default_rng(seed)
    mm = policy.mm
    obs: dict[str, Any] = {m: np.stack([mm.modalities[m].sample(rng) for _ in range(n)]) for m in policy.modalities}
    obs["mission"] = [missions[i % len(missions)] for i in range(n)]
    return policy.examples(obs)


# ---- the choice ---------------------------------------------------------------------------------------
def choose_dtype(mm, examples: Sequence[Example], candidates: Sequence[str], repeats: int = 3, *,
                 batch: int | None = BATCH, agreement: float = AGREEMENT, keep: bool = True,
                 timer: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """Time `mm.scorer(merge=True, dtype=d).score(examples, candidates)` for float32 and bfloat16 and
    pick one (see the module docstring).

    Each dtype is warmed up once (building its merged copy and head cache), then timed `repeats`
    times, the two interleaved, as the median time of one pass over the probes in forwards of
    `batch` examples (None: all in one forward). bfloat16 wins only if faster and its argmax matches
    float32's on at least `agreement` of the probes. The scorer of the dtype not chosen is dropped
    from the cache (`mm.__dict__["_scorers"]`, keyed `(merge, dtype)`); with `keep=False` the chosen
    one goes too (nothing stays alive; it is rebuilt when first used).

    Returns {"dtype": "float32" | "bfloat16", "ms": {"float32": ms, "bfloat16": ms | None},
    "agreement": share of probes where the argmax actions match (None if bfloat16 could not score),
    "probes": n, "reason": short text}."""
    examples, candidates = list(examples), list(candidates)
    if not examples or not candidates:
        raise ValueError(f"choose_dtype needs probe examples and candidates, got {len(examples)} and {len(candidates)}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    step = int(batch) if batch else len(examples)
    chunks = [examples[i:i + step] for i in range(0, len(examples), step)]
    device = _device(mm)
    was_training = mm.training
    mm.eval()

    def run(dtype: torch.dtype) -> torch.Tensor:
        scorer = mm.scorer(merge=True, dtype=dtype)
        actions = torch.cat([scorer.score(c, candidates).argmax(-1).cpu() for c in chunks])  # as an act step
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return actions

    actions: dict[str, torch.Tensor] = {}
    times: dict[str, list[float]] = {}
    failed: dict[str, str] = {}
    try:
        for name, dtype in DTYPES.items():  # warm-up: merged copies, head caches, kernels
            try:
                actions[name] = run(dtype)
                times[name] = []
            except (ValueError, RuntimeError) as err:  # e.g. no adapter to merge and a model of the other dtype
                failed[name] = f"{type(err).__name__}: {err}"
                _drop(mm, dtype)
        if not times:
            raise RuntimeError(f"neither float32 nor bfloat16 can score on this agent: {failed}")
        for _ in range(repeats):
            for name, took in times.items():
                start = timer()
                actions[name] = run(DTYPES[name])
                took.append(timer() - start)
    finally:
        mm.train(was_training)
    ms = {name: (1e3 * statistics.median(times[name]) if name in times else None) for name in DTYPES}
    probes = len(examples)
    agree = None
    if len(actions) == 2:
        agree = float((actions["bfloat16"] == actions["float32"]).float().mean())
    dtype, reason = _decide(ms, agree, agreement, probes, failed)
    _drop(mm, DTYPES["float32" if dtype == "bfloat16" else "bfloat16"])
    if not keep:
        _drop(mm, DTYPES[dtype])
    return {"dtype": dtype, "ms": ms, "agreement": agree, "probes": probes, "reason": reason, "device": str(device)}


def _decide(ms: Mapping[str, float | None], agree: float | None, threshold: float, probes: int,
            failed: Mapping[str, str]) -> tuple[str, str]:
    if "bfloat16" in failed:
        return "float32", f"bfloat16 cannot score here ({failed['bfloat16']})"
    if "float32" in failed:
        return "bfloat16", f"float32 cannot score here ({failed['float32']})"
    f32, b16 = ms["float32"], ms["bfloat16"]
    if b16 >= f32:
        return "float32", f"bfloat16 is not faster ({b16:.2f} ms vs {f32:.2f} ms for float32)"
    if agree < threshold:
        return "float32", (f"bfloat16 is {f32 / b16:.2f}x faster but picks float32's action on only "
                           f"{agree:.1%} of {probes} probes (needs {threshold:.0%})")
    return "bfloat16", (f"bfloat16 is {f32 / b16:.2f}x faster ({b16:.2f} ms vs {f32:.2f} ms) and picks float32's "
                        f"action on {agree:.1%} of {probes} probes")


def _drop(mm, dtype: torch.dtype) -> None:
    """Forget the merged scorer of `dtype` (and with it its copy of the weights)."""
    mm.__dict__.get("_scorers", {}).pop((True, dtype), None)


def _device(mm) -> torch.device:
    for p in mm.backbone.parameters():
        return p.device
    return torch.device("cpu")
