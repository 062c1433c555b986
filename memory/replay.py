"""Replay memory: avalanche storage policies choose what to keep; one SQLite file is the truth.

    memory = ReplayMemory("balanced", max_size=300, store_path="run/replay.sqlite", seed=0)
    memory.add("grid", grid_stage_samples)        # after the grid stage: one transaction
    batch = memory.sample(32, rng)                # replay samples to mix into the next stage
    k = len(memory.adds)                          # all a training checkpoint needs to store
    memory.rollback(k)                            # on resume: back to right after the k-th add

Policies (avalanche.training.storage_policy, used as they are):
- "reservoir": `ReservoirSamplingBuffer(max_size)` over everything ever added, all groups together:
  every sample seen so far is equally likely to be kept, whatever its group.
- "balanced": `ExperienceBalancedBuffer(max_size, adaptive_size=True)`: each `add()` is one
  experience and the slots are shared equally between experiences (30 slots, 3 adds -> 10 each;
  the first `max_size % n` experiences get one more). A stage smaller than its share keeps all its
  samples and the rest of its share stays empty (avalanche does not lend it to other experiences).

How avalanche sees the samples: the n-th `add()` is a real `DatasetExperience` (what
`benchmark_from_datasets` builds) with `current_experience=n`, whose dataset is an
`AvalancheDataset` of *refs*: the samples' positions in the sequence of everything ever offered
(the first add offers refs 0..m-1, the next m.., and so on). The policy gets it through its public
`post_adapt(None, experience)` and is read back through its public `buffer` / `buffer_groups`.
Avalanche draws reservoir weights with `torch.rand`; each add runs inside `torch.random.fork_rng`
seeded from (seed, add index), so the buffer depends only on the seed and how many samples each add
offered (never on a private avalanche attribute), and the caller's global torch RNG is untouched.

The store is the only source of truth. One SQLite file (SampleStore) holds the samples, the settings
(meta "replay") and the `replay_adds` table (`_TABLE`: one row per add, with the buffer after it).
`add()` writes the kept samples and that row in one transaction, so a kill at any instant leaves the
memory as it was before the add or after it. Samples an add evicts stay in the file (at most
max_size per add), so `rollback(k)` can bring back the state after the k-th add exactly, in one
transaction (the ids of the samples it deletes are handed out again, see SampleStore.rewind).

Restoring a state (on open, rollback, or after a failed add) replays the adds through avalanche.
The replayed buffer must equal the one the last row stored; if it does not (another avalanche or
torch changed the draws) opening fails rather than sample from a different buffer.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from graft.memory.avalanche_import import import_avalanche
from graft.memory.schema import Sample, validate_sample
from graft.memory.store import SampleStore, check_group

POLICIES = ("reservoir", "balanced")
CONFIG_KEY = "replay"
STATE_FORMAT = 2
_TABLE = """
CREATE TABLE IF NOT EXISTS replay_adds (
    add_index INTEGER PRIMARY KEY,  -- 0 for the first add(), 1 for the next, ...
    grp TEXT NOT NULL,
    offered INTEGER NOT NULL,       -- samples offered to the policy (its refs follow the previous add's)
    last_id INTEGER NOT NULL,       -- SampleStore.last_id() after this add
    state TEXT NOT NULL             -- JSON [{"refs": [...], "ids": [...]}, ...]: the buffer, per group,
                                    -- in avalanche's order
)"""


def _state_json(groups: list[dict[str, list[int]]]) -> str:
    return json.dumps(groups, separators=(",", ":"))


def _avalanche():
    """The avalanche names this module uses (imported on first use: the import takes seconds)."""
    av = import_avalanche()
    return (av.benchmarks.utils.AvalancheDataset, av.benchmarks.scenarios.dataset_scenario.DatasetExperience,
            av.training.storage_policy.ReservoirSamplingBuffer, av.training.storage_policy.ExperienceBalancedBuffer)


class ReplayMemory:
    """A replay buffer of samples, chosen by an avalanche storage policy, kept in a SampleStore.

    `store_path=None` keeps everything in memory.
    Reopening an existing `store_path` restores the state after its last add; `policy`, `max_size`
    and `seed` must then match what the store was created with.
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
            self._open()
        except BaseException:
            self.store.close()
            raise

    # -- the stored state -----------------------------------------------------------------------
    def _open(self) -> None:
        mine = {"format": STATE_FORMAT, "policy": self.policy, "max_size": self.max_size, "seed": self.seed}
        with self.store.transaction():
            config = self.store.get_meta(CONFIG_KEY)
            if config is None:
                if self.store.count():
                    raise ValueError(f"{self.store.path} holds samples but no replay state; it is not a "
                                     "ReplayMemory store")
                self.store.conn.execute(_TABLE)
                self.store.set_meta(CONFIG_KEY, mine)
                config = mine
        if config.get("format") != STATE_FORMAT:
            raise ValueError(f"{self.store.path}: replay state format {config.get('format')!r}, this "
                             f"graft reads format {STATE_FORMAT}")
        if config != mine:
            stored = {k: config.get(k) for k in ("policy", "max_size", "seed")}
            asked = {k: mine[k] for k in stored}
            raise ValueError(f"{self.store.path} was created with {stored}, but this ReplayMemory "
                             f"was asked for {asked}; pass the stored settings to resume")
        self._load(check_store=True)

    def _load(self, check_store: bool = False) -> None:
        """Rebuild the live policy and buffer from the committed rows (replaying the adds)."""
        rows = self.store.conn.execute(
            "SELECT add_index, grp, offered, last_id, state FROM replay_adds ORDER BY add_index").fetchall()
        if [r[0] for r in rows] != list(range(len(rows))):
            raise ValueError(f"{self.store.path}: replay adds {[r[0] for r in rows]} are not 0, 1, 2, ...; "
                             "the store was modified outside ReplayMemory")
        self._adds = [r[1] for r in rows]
        self._offered = [r[2] for r in rows]
        self._last_ids = [r[3] for r in rows]
        self._policy = self._new_policy()
        for index, offered in enumerate(self._offered):
            self._offer(index, offered)
        state = json.loads(rows[-1][4]) if rows else []
        replayed = self._buffer_groups()
        if rows and replayed != [g["refs"] for g in state]:
            raise ValueError(f"{self.store.path}: replaying its {len(rows)} adds through avalanche gave "
                             "another buffer than the one stored (a different avalanche or torch draws "
                             "differently); refusing to sample from a different buffer")
        self._id_of = {r: i for g in state for r, i in zip(g["refs"], g["ids"])}
        self._ids = [self._id_of[r] for g in replayed for r in g]
        if check_store:
            known = {i for r in rows for g in json.loads(r[4]) for i in g["ids"]}
            present = set(self.store.ids())
            if not set(self._ids) <= present <= known:
                raise ValueError(f"{self.store.path}: the buffer has {len(self._ids)} samples, the store "
                                 f"{len(present)}, {len(present - known)} of them unknown to the replay "
                                 f"state and {len(set(self._ids) - present)} missing; the store was "
                                 "modified outside ReplayMemory")

    # -- the avalanche policy -------------------------------------------------------------------
    def _new_policy(self):
        _, _, Reservoir, Balanced = _avalanche()
        if self.policy == "reservoir":
            return Reservoir(self.max_size)
        return Balanced(self.max_size, adaptive_size=True)

    def _offer(self, index: int, offered: int) -> None:
        """The `index`-th add as an avalanche experience of `offered` new refs, through post_adapt."""
        AvalancheDataset, DatasetExperience, _, _ = _avalanche()
        first = sum(self._offered[:index])
        dataset = AvalancheDataset([range(first, first + offered)], collate_fn=list)  # items: sample refs
        experience = DatasetExperience(dataset=dataset, current_experience=index)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(np.random.SeedSequence([self.seed, index]).generate_state(1)[0]))
            self._policy.post_adapt(None, experience)

    def _buffer_groups(self) -> list[list[int]]:
        """The policy's buffer as refs, per group (one group for "reservoir"), in avalanche's order."""
        if self.policy == "reservoir":
            buffers = [self._policy.buffer]
        else:
            buffers = [b.buffer for b in self._policy.buffer_groups.values()]
        return [[int(data[i]) for i in range(len(data))] for data in buffers]

    # -- writes ---------------------------------------------------------------------------------
    def add(self, group: str, samples: Sequence[Mapping[str, Any]]) -> None:
        """Offer one stage's samples to the policy (one avalanche experience); then, in one
        transaction, store the samples it kept and its new state. On any failure the memory stays
        at its state before the call."""
        check_group(group)
        samples = list(samples)
        if not samples:
            raise ValueError(f"add({group!r}, ...) got no samples; an empty experience would still take "
                             "a share of a balanced buffer")
        for s in samples:  # reject bad samples before touching the policy
            validate_sample(s)
        index, first = len(self._adds), sum(self._offered)
        try:
            self._offered.append(len(samples))
            self._offer(index, len(samples))
            groups = self._buffer_groups()
            new = sorted(r for g in groups for r in g if r >= first)  # kept new samples, input order
            with self.store.transaction():
                id_of = dict(zip(new, self.store.put_many(group, [samples[r - first] for r in new])))
                id_of.update((r, self._id_of[r]) for g in groups for r in g if r < first)
                state = [{"refs": g, "ids": [id_of[r] for r in g]} for g in groups]
                last_id = self.store.last_id()
                self.store.conn.execute("INSERT INTO replay_adds VALUES (?, ?, ?, ?, ?)",
                                        (index, group, len(samples), last_id, _state_json(state)))
        except BaseException:
            self._load()  # the live policy already took the experience: back to the committed state
            raise
        self._adds.append(group)
        self._last_ids.append(last_id)
        self._id_of = id_of
        self._ids = [id_of[r] for g in groups for r in g]

    def rollback(self, n_adds: int) -> None:
        """Go back to the state right after the first `n_adds` adds, in one transaction: the rows
        and samples of later adds are deleted (their sample ids will be handed out again), samples
        they evicted come back, and sample(n, rng) draws what it drew then. `rollback(len(adds))`
        changes nothing."""
        if isinstance(n_adds, bool) or not isinstance(n_adds, (int, np.integer)):
            raise TypeError(f"n_adds must be an int (a count of adds), got {n_adds!r}")
        n_adds = int(n_adds)
        if not 0 <= n_adds <= len(self._adds):
            raise ValueError(f"rollback({n_adds}): this memory can go back to 0...{len(self._adds)} adds")
        if n_adds == len(self._adds):
            return
        try:
            with self.store.transaction():
                self.store.conn.execute("DELETE FROM replay_adds WHERE add_index >= ?", (n_adds,))
                self.store.rewind(self._last_ids[n_adds - 1] if n_adds else 0)
        finally:
            self._load()

    # -- reads ----------------------------------------------------------------------------------
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
        picks = np.random.default_rng(rng).choice(len(self._ids), size=int(n), replace=replace)
        return self.store.get([self._ids[p] for p in picks])

    def ids(self) -> list[int]:
        """Store ids of the buffer, in the policy's order (balanced: experience by experience)."""
        return list(self._ids)

    def samples(self) -> list[Sample]:
        """The whole buffer, in the order of ids()."""
        return self.store.get(self._ids)

    def counts(self) -> dict[str, int]:
        """Buffer samples per group, groups in the order they were first added."""
        counts = Counter(self.store.group_of(self._ids))
        return {g: counts[g] for g in dict.fromkeys(self._adds) if counts[g]}

    @property
    def adds(self) -> list[str]:
        """The group of every add() so far, oldest first; len(adds) is what rollback() takes."""
        return list(self._adds)

    def __len__(self) -> int:
        return len(self._ids)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> ReplayMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"ReplayMemory({self.policy!r}, max_size={self.max_size}, seed={self.seed}, "
                f"store={self.store.path!r}, adds={len(self._adds)}, size={len(self._ids)})")
