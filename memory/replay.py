"""Replay memory: avalanche storage policies choose what to keep; a SampleStore keeps it durably.

    memory = ReplayMemory("balanced", max_size=300, store_path="run/replay.sqlite", seed=0)
    memory.add("grid", grid_stage_samples)        # after the grid stage
    batch = memory.sample(32, rng)                # replay samples to mix into the next stage

Policies (avalanche.training.storage_policy, used as they are):
- "reservoir": `ReservoirSamplingBuffer(max_size)` over everything ever added, all groups together:
  every sample seen so far is equally likely to be kept, whatever its group.
- "balanced": `ExperienceBalancedBuffer(max_size, adaptive_size=True)`: each `add()` call is one
  avalanche experience and the slots are shared equally between experiences (30 slots, 3 adds →
  10 each; the first `max_size % n` experiences get one more). A stage smaller than its share
  keeps all its samples and the rest of its share stays empty (avalanche does not lend it to other
  experiences). Adding the same group twice makes two experiences with a share each.

How the policy sees samples: each `add()` becomes a minimal experience whose `dataset` is an
`AvalancheDataset` of sample references (store ids for kept samples, negative numbers for new ones);
`post_adapt(None, experience)` reads only `experience.dataset`. Afterwards the buffer's references
tell which new samples to insert and which stored ones to delete, and the buffer (ids in avalanche's
order, with the reservoir weights) is saved in the store's meta table, all in one transaction.

Determinism: avalanche draws reservoir weights with `torch.rand` from torch's global RNG. `add()`
runs the policy inside `torch.random.fork_rng`, seeded from (seed, number of adds so far), so the
buffer depends only on the seed and the added data, and the caller's global torch RNG state is the
same after `add()` as before it. Reopening `store_path` restores the exact buffer (same samples, ids,
order and weights), so a resumed run continues as if never interrupted. A failed add leaves the
memory at its previous committed state.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from graft.memory.schema import Sample, validate_sample
from graft.memory.store import SampleStore

POLICIES = ("reservoir", "balanced")
STATE_KEY = "replay"
STATE_FORMAT = 1


def _avalanche():
    """avalanche's dataset and buffers, imported on first use (the import takes seconds)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # third-party import noise (JAXopt deprecation, QP solvers)
        from avalanche.benchmarks.utils import AvalancheDataset
        from avalanche.training.storage_policy import ExperienceBalancedBuffer, ReservoirSamplingBuffer
    return AvalancheDataset, ReservoirSamplingBuffer, ExperienceBalancedBuffer


class _Refs(torch.utils.data.Dataset):
    """A dataset whose items are sample references (ints): what the storage policy selects from."""

    def __init__(self, refs: Sequence[int]):
        self.refs = list(refs)

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, index: int) -> int:
        return self.refs[index]


class _Experience:
    """The part of an avalanche experience that the storage policies read in post_adapt."""

    def __init__(self, dataset: Any, index: int):
        self.dataset = dataset
        self.current_experience = index


def _refs_dataset(refs: Sequence[int]):
    AvalancheDataset = _avalanche()[0]
    return AvalancheDataset([_Refs(refs)], collate_fn=list)


def _buffer_state(buffer) -> dict[str, list]:
    """A ReservoirSamplingBuffer as JSON: refs in buffer order and their weights (float32 values,
    exact as JSON doubles)."""
    data = buffer.buffer
    return {"ids": [int(data[i]) for i in range(len(data))], "weights": buffer._buffer_weights.tolist()}


def _load_buffer(reservoir_cls, max_size: int, state: Mapping[str, list]):
    buffer = reservoir_cls(max_size)
    buffer.buffer = _refs_dataset(state["ids"])
    # avalanche keeps the weights in a private attribute; restoring them is what makes a resumed
    # reservoir continue exactly like the uninterrupted one.
    buffer._buffer_weights = torch.tensor(state["weights"], dtype=torch.float32)
    return buffer


class ReplayMemory:
    """A replay buffer of samples, chosen by an avalanche storage policy, kept in a SampleStore.

    `store_path=None` keeps everything in memory (`snapshot()` still writes a reopenable file).
    Reopening an existing `store_path` restores the buffer; `policy`, `max_size` and `seed` must then
    match what the store was created with.
    """

    def __init__(self, policy: str = "reservoir", max_size: int = 1000,
                 store_path: str | os.PathLike | None = None, seed: int = 0):
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1:
            raise ValueError(f"max_size must be a positive int, got {max_size!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.policy, self.max_size, self.seed = policy, max_size, seed
        self.store = SampleStore(":memory:" if store_path is None else store_path)
        try:
            state = self.store.get_meta(STATE_KEY)
            if state is None:
                if self.store.count():
                    raise ValueError(f"{store_path} holds samples but no replay state; it is not a "
                                     "ReplayMemory store")
                state = {"format": STATE_FORMAT, "policy": policy, "max_size": max_size, "seed": seed,
                         "adds": [], "buffers": []}
            self._check_state(state)
            self._restore(state)
        except BaseException:
            self.store.close()
            raise

    # -- the policy -----------------------------------------------------------------------------

    def _check_state(self, state: Mapping[str, Any]) -> None:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"{self.store.path}: replay state format {state.get('format')!r}, "
                             f"expected {STATE_FORMAT}")
        mine = {"policy": self.policy, "max_size": self.max_size, "seed": self.seed}
        stored = {k: state[k] for k in mine}
        if stored != mine:
            raise ValueError(f"{self.store.path} was created with {stored}, but this ReplayMemory "
                             f"was asked for {mine}; pass the stored settings to resume")
        ids = [i for b in state["buffers"] for i in b["ids"]]
        if sorted(ids) != self.store.ids():
            raise ValueError(f"{self.store.path}: the replay state lists {len(ids)} samples but the "
                             f"store holds {self.store.count()}; the store was modified outside "
                             "ReplayMemory")

    def _restore(self, state: Mapping[str, Any]) -> None:
        """Rebuild the avalanche policy object from a saved state."""
        _, Reservoir, Balanced = _avalanche()
        self._adds: list[str] = list(state["adds"])
        buffers = state["buffers"]
        if self.policy == "reservoir":
            self._policy = _load_buffer(Reservoir, self.max_size, buffers[0] if buffers else
                                        {"ids": [], "weights": []})
        else:
            self._policy = Balanced(self.max_size, adaptive_size=True)
            self._policy._num_exps = len(buffers)
            lengths = self._policy.get_group_lengths(len(buffers)) if buffers else []
            for index, (size, b) in enumerate(zip(lengths, buffers)):
                self._policy.buffer_groups[index] = _load_buffer(Reservoir, size, b)
        self._ids = [i for b in buffers for i in b["ids"]]

    def _state(self, id_of: Mapping[int, int]) -> dict[str, Any]:
        """The policy's buffers as JSON, with references mapped to store ids by `id_of`."""
        if self.policy == "reservoir":
            buffers = [_buffer_state(self._policy)]
        else:
            buffers = [_buffer_state(b) for b in self._policy.buffer_groups.values()]
        for b in buffers:
            b["ids"] = [id_of.get(r, r) for r in b["ids"]]
        return {"format": STATE_FORMAT, "policy": self.policy, "max_size": self.max_size,
                "seed": self.seed, "adds": self._adds, "buffers": buffers}

    def _torch_seed(self, add_index: int) -> int:
        return int(np.random.SeedSequence([self.seed, add_index]).generate_state(1)[0])

    # -- public API -----------------------------------------------------------------------------

    def add(self, group: str, samples: Sequence[Mapping[str, Any]]) -> None:
        """Offer one stage's samples to the policy, then persist the new buffer in one transaction."""
        if type(group) is not str or not group:
            raise ValueError(f"group must be a non-empty str (the stage/modality name), got {group!r}")
        samples = list(samples)
        if not samples:
            raise ValueError(f"add({group!r}, ...) got no samples; an empty experience would still take "
                             "a share of a balanced buffer")
        for s in samples:  # reject bad samples before touching the policy
            validate_sample(s)
        new_refs = [-(k + 1) for k in range(len(samples))]  # store ids are positive
        experience = _Experience(_refs_dataset(new_refs), len(self._adds))
        committed = self.store.get_meta(STATE_KEY)
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self._torch_seed(len(self._adds)))
                self._policy.post_adapt(None, experience)
            self._adds.append(group)
            refs = self._buffer_refs()
            kept_new = sorted((r for r in refs if r < 0), reverse=True)  # -1, -2, ...: input order
            dropped = sorted(set(self._ids) - set(refs))
            with self.store.transaction():
                new_ids = self.store.put_many(group, [samples[-r - 1] for r in kept_new])
                self.store.delete(dropped)
                state = self._state(dict(zip(kept_new, new_ids)))
                self.store.set_meta(STATE_KEY, state)
        except BaseException:
            self._restore(committed if committed is not None else {"adds": [], "buffers": []})
            raise
        # The live policy still holds this add's provisional (negative) references: rebuild it from
        # the committed state, exactly as a resumed run would load it.
        self._restore(state)

    def _buffer_refs(self) -> list[int]:
        data = self._policy.buffer
        return [int(data[i]) for i in range(len(data))]

    def sample(self, n: int, rng: np.random.Generator | int, *, replace: bool = False) -> list[Sample]:
        """`n` buffer samples drawn uniformly with `rng` (a numpy Generator, or an int seed): the same
        seed and buffer give the same samples in the same order. Without `replace`, `n` may not
        exceed len(self)."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        if n == 0:
            return []
        if not self._ids:
            raise ValueError("sample() from an empty replay memory; add() a stage first")
        if n > len(self._ids) and not replace:
            raise ValueError(f"sample({n}) without replacement from a buffer of {len(self._ids)}; "
                             "ask for fewer or pass replace=True")
        if not isinstance(rng, np.random.Generator):
            rng = np.random.default_rng(rng)
        picks = rng.choice(len(self._ids), size=int(n), replace=replace)
        return self.store.get([self._ids[p] for p in picks])

    def ids(self) -> list[int]:
        """Store ids of the buffer, in the policy's order (balanced: experience by experience)."""
        return list(self._ids)

    def samples(self) -> list[Sample]:
        """The whole buffer, in the order of ids()."""
        return self.store.get(self._ids)

    def groups(self) -> list[str]:
        """Groups with samples in the buffer, in the order they were first added."""
        present = set(self.store.groups())
        return [g for g in dict.fromkeys(self._adds) if g in present]

    def counts(self) -> dict[str, int]:
        """Buffer samples per group, in the order of groups()."""
        return {g: self.store.count(g) for g in self.groups()}

    @property
    def adds(self) -> list[str]:
        """The group of every add() so far (for "balanced", one experience each)."""
        return list(self._adds)

    def __len__(self) -> int:
        return len(self._ids)

    def snapshot(self, dst_path: str | os.PathLike):
        """Write the committed buffer to a file that ReplayMemory(store_path=...) reopens."""
        return self.store.snapshot(dst_path)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> ReplayMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"ReplayMemory({self.policy!r}, max_size={self.max_size}, seed={self.seed}, "
                f"store={self.store.path!r}, counts={self.counts()})")
