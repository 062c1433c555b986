"""ReplayMemory as the one source of truth: atomic adds, rollback(k), reopen, SIGKILL, real experiences."""
from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from graft.memory import replay
from graft.memory.replay import ReplayMemory
from graft.memory.schema import samples_equal

STAGES = [("grid", 60), ("rgb", 25), ("depth", 80), ("grid", 40)]  # the same group twice, too


def stage(group: str, n: int, add: int) -> list[dict]:
    return [{"group": group, "add": add, "i": i, "grid": np.full((3, 3), (add * 7 + i) % 251, np.uint8)}
            for i in range(n)]


def snapshot(memory: ReplayMemory) -> dict:
    """Everything a resumed run could observe: buffer ids and samples, the file's ids, and draws."""
    return {"adds": memory.adds, "ids": memory.ids(), "store": memory.store.ids(), "counts": memory.counts(),
            "buffer": [(s["add"], s["i"]) for s in memory.samples()],
            "draws": [(s["add"], s["i"]) for s in memory.sample(12, rng=np.random.default_rng(9))]}


def run(policy: str, path=None, n: int = len(STAGES)) -> tuple[ReplayMemory, list[dict]]:
    memory = ReplayMemory(policy, max_size=30, store_path=path, seed=3)
    states = []
    for add, (group, size) in enumerate(STAGES[:n]):
        memory.add(group, stage(group, size, add))
        states.append(snapshot(memory))
    return memory, states


@pytest.mark.parametrize("policy", ["reservoir", "balanced"])
def test_rollback_restores_each_earlier_state_exactly(policy, tmp_path):
    memory, states = run(policy, tmp_path / "replay.sqlite")
    for k in (3, 1):
        memory.rollback(k)
        assert len(memory.adds) == k and snapshot(memory) == states[k - 1]
    memory.rollback(0)
    assert memory.adds == [] and len(memory) == 0 and memory.store.count() == 0
    with pytest.raises(ValueError, match="empty replay memory"):
        memory.sample(1, rng=0)
    memory.close()


@pytest.mark.parametrize("policy", ["reservoir", "balanced"])
def test_a_resume_that_rolls_back_and_redoes_the_adds_matches_the_uninterrupted_run(policy, tmp_path):
    """The checkpoint said 2 adds; the run had done 3 when it was killed. Resume = reopen + rollback(2)."""
    path = tmp_path / "replay.sqlite"
    killed, _ = run(policy, path, n=3)
    killed.close()
    with ReplayMemory(policy, max_size=30, store_path=path, seed=3) as resumed:
        assert len(resumed.adds) == 3  # reopening restores the latest committed state
        resumed.rollback(2)
        for add in (2, 3):
            resumed.add(STAGES[add][0], stage(*STAGES[add], add))
        redone = snapshot(resumed)
    _, uninterrupted = run(policy)
    assert redone == uninterrupted[-1]  # same ids too: rollback hands the undone ids out again


def test_rollback_arguments_are_checked_and_the_current_count_is_a_no_op():
    memory, states = run("reservoir", n=2)
    memory.rollback(2)
    assert snapshot(memory) == states[1]
    for bad, error in ((3, ValueError), (-1, ValueError), (True, TypeError), (1.0, TypeError)):
        with pytest.raises(error, match="rollback|n_adds"):
            memory.rollback(bad)
    assert snapshot(memory) == states[1]


def test_reopen_after_close_and_after_rollback_gives_the_same_state(tmp_path):
    path = tmp_path / "replay.sqlite"
    memory, states = run("balanced", path)
    memory.close()
    with ReplayMemory("balanced", max_size=30, store_path=path, seed=3) as again:
        assert snapshot(again) == states[-1]
        again.rollback(2)
    with ReplayMemory("balanced", max_size=30, store_path=path, seed=3) as again:
        assert snapshot(again) == states[1]


def test_an_add_failing_inside_its_transaction_leaves_the_previous_state(tmp_path, monkeypatch):
    path = tmp_path / "replay.sqlite"
    memory, states = run("reservoir", path, n=2)
    # SQLite refuses the state row, after the add's samples were inserted in the same transaction.
    memory.store.conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON replay_adds "
                              "BEGIN SELECT RAISE(ABORT, 'refused'); END")
    with pytest.raises(sqlite3.IntegrityError, match="refused"):
        memory.add("depth", stage("depth", 80, 2))
    assert snapshot(memory) == states[1]
    memory.store.conn.execute("DROP TRIGGER refuse")
    # An interrupt (BaseException) while the state is being encoded, samples already inserted.
    def interrupted(state):
        assert memory.store.conn.in_transaction and memory.store.last_id() > max(states[1]["store"])
        raise KeyboardInterrupt
    monkeypatch.setattr(replay, "_state_json", interrupted)
    with pytest.raises(KeyboardInterrupt):
        memory.add("depth", stage("depth", 80, 2))
    monkeypatch.undo()
    assert snapshot(memory) == states[1]
    memory.close()
    with ReplayMemory("reservoir", max_size=30, store_path=path, seed=3) as reopened:
        assert snapshot(reopened) == states[1]
        for add in (2, 3):  # and the retried adds equal adds that never failed
            reopened.add(STAGES[add][0], stage(*STAGES[add], add))
        assert snapshot(reopened) == run("reservoir")[1][-1]


def test_a_failing_rollback_changes_nothing():
    memory, states = run("balanced", n=3)
    memory.store.conn.execute("CREATE TRIGGER keep BEFORE DELETE ON replay_adds "
                              "BEGIN SELECT RAISE(ABORT, 'kept'); END")
    with pytest.raises(sqlite3.IntegrityError, match="kept"):
        memory.rollback(1)
    assert snapshot(memory) == states[2]


def test_avalanche_gets_real_experiences_through_post_adapt(monkeypatch):
    from avalanche.benchmarks.scenarios.dataset_scenario import DatasetExperience
    from avalanche.benchmarks.scenarios.generic_scenario import CLExperience
    from avalanche.benchmarks.utils import AvalancheDataset
    from avalanche.training.storage_policy import ExperienceBalancedBuffer

    seen = []
    original = ExperienceBalancedBuffer.post_adapt

    def spy(self, agent, experience):
        seen.append(experience)
        return original(self, agent, experience)

    monkeypatch.setattr(ExperienceBalancedBuffer, "post_adapt", spy)
    memory = ReplayMemory("balanced", max_size=10, seed=0)
    memory.add("grid", stage("grid", 4, 0))
    memory.add("rgb", stage("rgb", 3, 1))
    assert len(seen) == 2
    for index, (experience, first, n) in enumerate(zip(seen, (0, 4), (4, 3))):
        assert isinstance(experience, DatasetExperience) and isinstance(experience, CLExperience)
        assert isinstance(experience.dataset, AvalancheDataset)
        assert experience.current_experience == index
        assert [experience.dataset[i] for i in range(len(experience.dataset))] == list(range(first, first + n))
    assert len(memory) == 7 and memory.counts() == {"grid": 4, "rgb": 3}


KILLED = textwrap.dedent("""
    import sys
    import numpy as np
    from graft.memory.replay import ReplayMemory
    memory = ReplayMemory("reservoir", max_size=30, store_path=sys.argv[1], seed=3)
    print("open", flush=True)
    add = 0
    while True:
        memory.add("grid", [{"add": add, "i": i, "pad": np.full(4096, i % 251, np.uint8)} for i in range(400)])
        add += 1
""")


def test_sigkill_during_adds_leaves_a_whole_number_of_adds(tmp_path):
    path = tmp_path / "killed.sqlite"
    child = subprocess.Popen([sys.executable, "-c", KILLED, str(path)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "open\n"
    try:
        child.wait(timeout=1.5)  # adding for real by now
    except subprocess.TimeoutExpired:
        child.send_signal(signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL
    with ReplayMemory("reservoir", max_size=30, store_path=path, seed=3) as memory:
        assert memory.store.integrity_check() == "ok"
        k = len(memory.adds)
        assert k >= 1
        fresh = ReplayMemory("reservoir", max_size=30, seed=3)
        for add in range(k):
            fresh.add("grid", [{"add": add, "i": i, "pad": np.full(4096, i % 251, np.uint8)} for i in range(400)])
        assert memory.ids() == fresh.ids()
        assert all(samples_equal(a, b) for a, b in zip(memory.samples(), fresh.samples()))
