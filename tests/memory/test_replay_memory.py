"""ReplayMemory: what the avalanche policies keep, seeded determinism, resume from disk, sampling."""
from __future__ import annotations

import sqlite3

import numpy as np
import pytest
import torch
from graft.memory.replay import ReplayMemory
from graft.memory.schema import SampleError, samples_equal
from graft.memory.store import SampleStore


def stage(group: str, n: int, start: int = 0) -> list[dict]:
    return [{"group": group, "i": start + i, "grid": np.full((7, 7, 3), (start + i) % 251, np.uint8)}
            for i in range(n)]


def contents(memory: ReplayMemory) -> list[tuple[str, int]]:
    return [(s["group"], s["i"]) for s in memory.samples()]


def test_reservoir_keeps_max_size_and_a_uniform_sample_of_all_groups():
    memory = ReplayMemory("reservoir", max_size=500, seed=0)
    sizes = {"text": 1000, "grid": 4000, "rgb": 2000, "depth": 3000}  # 10 000 seen in all
    for group, n in sizes.items():
        memory.add(group, [{"group": group, "i": i} for i in range(n)])
        assert len(memory) == 500 and len(set(memory.ids())) == 500
    counts = memory.counts()
    assert list(counts) == list(sizes) and sum(counts.values()) == 500
    for group, n in sizes.items():
        expected = 500 * n / 10_000
        sd = np.sqrt(expected * (1 - n / 10_000))
        assert abs(counts[group] - expected) < 4 * sd + 1, (group, counts[group], expected)
    # Uniform within a group too: the early and late halves of the largest stage are kept alike.
    kept = [s["i"] for s in memory.samples() if s["group"] == "grid"]
    early = sum(i < 2000 for i in kept)
    assert abs(early - len(kept) / 2) < 4 * np.sqrt(len(kept) / 4)


def test_balanced_gives_every_add_an_equal_share():
    memory = ReplayMemory("balanced", max_size=30, seed=0)
    memory.add("grid", stage("grid", 100))
    assert memory.counts() == {"grid": 30}
    first = set(contents(memory))
    memory.add("rgb", stage("rgb", 7))
    # 15 slots each; the small stage keeps all 7 and its unused 8 slots stay empty (avalanche's rule).
    assert memory.counts() == {"grid": 15, "rgb": 7} and len(memory) == 22
    memory.add("depth", stage("depth", 200))
    assert memory.counts() == {"grid": 10, "rgb": 7, "depth": 10}  # 30 // 3 = 10 slots each
    assert {c for c in contents(memory) if c[0] == "grid"} <= first  # shrinking keeps a subset
    memory.add("text", stage("text", 50))
    assert memory.counts() == {"grid": 8, "rgb": 7, "depth": 7, "text": 7}  # 8, 8, 7, 7 slots
    assert memory.adds == ["grid", "rgb", "depth", "text"]
    groups_in_order = [g for g, _ in contents(memory)]
    assert groups_in_order == sorted(groups_in_order, key=memory.adds.index)  # experience by experience


def test_balanced_three_groups_of_equal_size_get_ten_each():
    memory = ReplayMemory("balanced", max_size=30, seed=3)
    for group in ("grid", "rgb", "depth"):
        memory.add(group, stage(group, 60))
    assert memory.counts() == {"grid": 10, "rgb": 10, "depth": 10}


@pytest.mark.parametrize("policy", ["reservoir", "balanced"])
def test_same_seed_same_buffer_other_seed_other_buffer(policy):
    def run(seed):
        memory = ReplayMemory(policy, max_size=40, seed=seed)
        for group in ("grid", "rgb", "depth"):
            memory.add(group, stage(group, 50))
        return memory.ids(), contents(memory)

    assert run(7) == run(7)
    assert run(7)[1] != run(8)[1]


def test_each_add_draws_fresh_randomness():
    """Equal-size stages must not get the same weights position by position (one seed per add)."""
    memory = ReplayMemory("balanced", max_size=20, seed=0)
    memory.add("grid", stage("grid", 100))
    memory.add("rgb", stage("rgb", 100))
    kept = {g: {i for h, i in contents(memory) if h == g} for g in ("grid", "rgb")}
    assert kept["grid"] != kept["rgb"]


def test_add_ignores_and_preserves_the_global_torch_rng():
    def buffer_after_global_seed(global_seed):
        torch.manual_seed(global_seed)
        before = torch.get_rng_state().clone()
        memory = ReplayMemory("reservoir", max_size=20, seed=5)
        memory.add("grid", stage("grid", 100))
        memory.add("rgb", stage("rgb", 100))
        assert torch.equal(torch.get_rng_state(), before), "add() changed the global torch RNG"
        return contents(memory)

    assert buffer_after_global_seed(0) == buffer_after_global_seed(1234)


@pytest.mark.parametrize("policy", ["reservoir", "balanced"])
def test_resume_from_disk_is_identical_to_the_uninterrupted_run(policy, tmp_path):
    path = tmp_path / "replay.sqlite"
    with ReplayMemory(policy, max_size=25, store_path=path, seed=11) as memory:
        memory.add("grid", stage("grid", 60))
        memory.add("rgb", stage("rgb", 40))
        before_ids, before = memory.ids(), memory.samples()
        drawn = memory.sample(10, rng=5)
        rows = memory.store.conn.execute("SELECT * FROM replay_adds").fetchall()
    with ReplayMemory(policy, max_size=25, store_path=path, seed=11) as resumed:
        assert resumed.ids() == before_ids
        assert all(samples_equal(a, b) for a, b in zip(resumed.samples(), before))
        assert resumed.store.conn.execute("SELECT * FROM replay_adds").fetchall() == rows
        assert all(samples_equal(a, b) for a, b in zip(resumed.sample(10, rng=5), drawn))
        assert resumed.adds == ["grid", "rgb"] and len(resumed) == 25
        resumed.add("depth", stage("depth", 50))
        resumed_after = (resumed.ids(), contents(resumed), resumed.sample(10, rng=3))
    # A fresh run with the same seed and stages, never interrupted.
    with ReplayMemory(policy, max_size=25, store_path=tmp_path / "fresh.sqlite", seed=11) as fresh:
        fresh.add("grid", stage("grid", 60))
        fresh.add("rgb", stage("rgb", 40))
        assert fresh.ids() == before_ids
        fresh.add("depth", stage("depth", 50))
        fresh_after = (fresh.ids(), contents(fresh), fresh.sample(10, rng=3))
    assert resumed_after[:2] == fresh_after[:2]
    assert all(samples_equal(a, b) for a, b in zip(resumed_after[2], fresh_after[2]))


def test_sample_is_deterministic_for_a_seed_and_respects_replace():
    memory = ReplayMemory("reservoir", max_size=50, seed=0)
    memory.add("grid", stage("grid", 80))
    draw = memory.sample(20, rng=42)
    again = memory.sample(20, rng=np.random.default_rng(42))
    assert [s["i"] for s in draw] == [s["i"] for s in again]
    assert [s["i"] for s in memory.sample(20, rng=43)] != [s["i"] for s in draw]
    assert len({s["i"] for s in memory.sample(50, rng=0)}) == 50  # without replacement: all distinct
    assert len(memory.sample(200, rng=0, replace=True)) == 200
    assert all(samples_equal(s, stage("grid", 1, s["i"])[0]) for s in draw)
    assert memory.sample(0, rng=0) == []
    with pytest.raises(ValueError, match="replace=True"):
        memory.sample(51, rng=0)
    with pytest.raises(ValueError, match="empty replay memory"):
        ReplayMemory("reservoir", max_size=5).sample(1, rng=0)


def test_failed_add_leaves_the_committed_buffer(tmp_path):
    path = tmp_path / "replay.sqlite"
    memory = ReplayMemory("reservoir", max_size=10, store_path=path, seed=4)
    memory.add("grid", stage("grid", 30))
    ids, kept, stored = memory.ids(), contents(memory), memory.store.ids()
    with pytest.raises(SampleError, match="'bad'"):
        memory.add("rgb", stage("rgb", 5) + [{"bad": np.array([{}], dtype=object)}])
    assert memory.ids() == ids and memory.adds == ["grid"]
    # A write that fails in SQLite (another process holds the write lock) rolls back as a whole.
    memory.store.conn.execute("PRAGMA busy_timeout=50")
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        memory.add("rgb", stage("rgb", 30))
    blocker.execute("ROLLBACK")
    blocker.close()
    assert memory.ids() == ids and contents(memory) == kept and memory.adds == ["grid"]
    # A failure half-way through the inserts (a trigger makes SQLite refuse one sample).
    memory.store.conn.execute("CREATE TRIGGER poison BEFORE INSERT ON samples WHEN NEW.fields LIKE "
                              "'%poison%' BEGIN SELECT RAISE(ABORT, 'poisoned'); END")
    with pytest.raises(sqlite3.IntegrityError, match="poisoned"):
        memory.add("rgb", [{"poison": i} for i in range(30)])
    assert memory.ids() == ids and contents(memory) == kept and memory.adds == ["grid"]
    assert memory.store.ids() == stored  # the failed add's inserts were rolled back
    memory.store.conn.execute("DROP TRIGGER poison")
    memory.add("rgb", stage("rgb", 30))  # the retry equals an add that never failed
    fresh = ReplayMemory("reservoir", max_size=10, seed=4)
    fresh.add("grid", stage("grid", 30))
    fresh.add("rgb", stage("rgb", 30))
    assert contents(memory) == contents(fresh)
    memory.close()


def test_reopening_with_other_settings_or_a_foreign_store_is_refused(tmp_path):
    path = tmp_path / "replay.sqlite"
    with ReplayMemory("balanced", max_size=10, store_path=path, seed=1) as memory:
        memory.add("grid", stage("grid", 20))
    for kwargs in ({"policy": "reservoir"}, {"max_size": 11}, {"seed": 2}):
        with pytest.raises(ValueError, match="pass the stored settings"):
            ReplayMemory(**{"policy": "balanced", "max_size": 10, "seed": 1, **kwargs}, store_path=path)
    with SampleStore(path) as store:
        store.put_many("grid", [{"sneaked": "in"}])
    with pytest.raises(ValueError, match="modified outside"):
        ReplayMemory("balanced", max_size=10, store_path=path, seed=1)
    with SampleStore(tmp_path / "plain.sqlite") as store:
        store.put_many("grid", [{"a": 1}])
    with pytest.raises(ValueError, match="not a ReplayMemory store"):
        ReplayMemory(store_path=tmp_path / "plain.sqlite")


@pytest.mark.parametrize("kwargs, words", [
    ({"policy": "fifo"}, "policy must be one of"),
    ({"max_size": 0}, "positive int"),
    ({"seed": -1}, "non-negative int"),
])
def test_bad_settings_are_refused(kwargs, words):
    with pytest.raises(ValueError, match=words):
        ReplayMemory(**kwargs)


def test_bad_add_arguments_are_refused():
    memory = ReplayMemory("balanced", max_size=5)
    with pytest.raises(ValueError, match="no samples"):
        memory.add("grid", [])
    with pytest.raises(ValueError, match="non-empty str"):
        memory.add("", stage("grid", 2))
    assert len(memory) == 0 and memory.adds == []
