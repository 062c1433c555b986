"""SampleStore: CRUD, isolation, rewind, and survival of a SIGKILL mid-write."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from graft.memory.schema import SampleError, samples_equal
from graft.memory.store import SampleStore


def record(group: str, i: int) -> dict:
    return {"group": group, "i": i, "kind": "caption", "modalities": [group],
            "grid": np.full((7, 7, 3), i % 251, np.uint8), "proprio": np.arange(3, dtype=np.float32) + i}


@pytest.fixture
def store(tmp_path):
    with SampleStore(tmp_path / "samples.sqlite") as s:
        yield s


def test_put_get_ids_count_delete(store):
    a = store.put_many("grid", [record("grid", i) for i in range(5)])
    b = store.put_many("rgb", [record("rgb", i) for i in range(3)])
    assert a == sorted(a) and min(b) > max(a)
    assert (store.count(), store.count("grid"), store.count("rgb"), store.count("none")) == (8, 5, 3, 0)
    assert store.ids("rgb") == b and store.ids() == a + b
    got = store.get([b[2], a[0], b[2]])
    assert all(samples_equal(x, y) for x, y in zip(got, [record("rgb", 2), record("grid", 0), record("rgb", 2)]))
    assert got[0] is not got[2] and got[0]["grid"] is not got[2]["grid"]  # repeats are separate copies
    assert store.group_of([b[0], a[1]]) == ["rgb", "grid"]
    assert store.delete([a[1], a[3], 999_999]) == 2
    assert store.ids("grid") == [a[0], a[2], a[4]]
    with pytest.raises(KeyError, match=str(a[1])):
        store.get([a[0], a[1]])
    (new,) = store.put_many("grid", [record("grid", 9)])
    assert new > max(b)  # ids are never reused
    assert store.integrity_check() == "ok"


def test_reopen_sees_committed_samples_and_meta(tmp_path):
    path = tmp_path / "s.sqlite"
    with SampleStore(path) as s:
        ids = s.put_many("grid", [record("grid", i) for i in range(4)])
        s.set_meta("note", {"stage": 2, "names": ["grid"]})
    with SampleStore(path) as s:
        assert s.ids() == ids
        assert samples_equal(s.get(ids[-1:])[0], record("grid", 3))
        assert s.get_meta("note") == {"stage": 2, "names": ["grid"]}
        assert s.get_meta("missing", 5) == 5


def test_rewind_undoes_later_inserts_and_hands_their_ids_out_again(store):
    assert store.last_id() == 0
    ids = store.put_many("grid", [record("grid", i) for i in range(5)])
    store.delete(ids[:1])
    assert store.last_id() == ids[-1]
    assert store.rewind(ids[1]) == 3  # ids[2:] deleted, with their arrays
    assert store.ids() == [ids[1]] and store.last_id() == ids[1]
    assert store.put_many("rgb", [record("rgb", 0)]) == [ids[2]]  # as if the undone inserts never happened
    assert store.rewind(ids[-1] + 10) == 0 and store.last_id() == ids[2]  # never raises the counter
    assert store.integrity_check() == "ok"
    assert store.conn.execute("SELECT COUNT(*) FROM arrays").fetchone()[0] == 2 * 2
    with pytest.raises(ValueError, match=">= 0"):
        store.rewind(-1)


def test_bad_sample_or_group_writes_nothing(store):
    store.put_many("grid", [record("grid", 0)])
    with pytest.raises(SampleError, match="'bad'"):
        store.put_many("grid", [record("grid", 1), {"bad": np.array([None], dtype=object)}])
    with pytest.raises(ValueError, match="non-empty str"):
        store.put_many("", [record("grid", 1)])
    with pytest.raises(TypeError, match="ids are ints"):
        store.get(["1"])
    assert store.count() == 1


def test_a_write_failing_inside_sqlite_rolls_back_whole(store):
    """A trigger makes SQLite itself fail half-way through a write (after the first sample is in)."""
    store.conn.execute("CREATE TRIGGER poison BEFORE INSERT ON samples WHEN NEW.fields LIKE '%poison%' "
                       "BEGIN SELECT RAISE(ABORT, 'poisoned sample'); END")
    old = store.put_many("grid", [record("grid", i) for i in range(3)])
    poisoned = [record("grid", 10), {"poison": 1}]
    with pytest.raises(sqlite3.IntegrityError, match="poisoned"):
        store.put_many("grid", poisoned)
    with pytest.raises(sqlite3.IntegrityError, match="poisoned"):
        store.put_many("rgb", [record("rgb", 0), {"poison": 1}])
    assert store.ids() == old
    assert not store.conn.in_transaction
    assert store.put_many("rgb", [record("rgb", 0)])  # and the store goes on working


def test_nested_transactions_roll_back_only_the_inner_part(store):
    with store.transaction():
        store.put_many("grid", [record("grid", 0)])
        with pytest.raises(RuntimeError), store.transaction():
            store.put_many("grid", [record("grid", 1)])
            raise RuntimeError("inner")
        store.put_many("grid", [record("grid", 2)])
    assert [s["i"] for s in store.get(store.ids())] == [0, 2]


def test_other_connections_see_old_or_new_never_a_mix(tmp_path):
    path = tmp_path / "s.sqlite"
    with SampleStore(path) as writer, SampleStore(path) as reader:
        writer.put_many("grid", [record("grid", i) for i in range(5)])
        with writer.transaction():
            writer.delete(writer.ids("grid"))
            writer.put_many("grid", [record("grid", 100)])
            assert reader.count("grid") == 5  # uncommitted swap is invisible
            assert [s["i"] for s in reader.get(reader.ids("grid"))] == list(range(5))
        assert [s["i"] for s in reader.get(reader.ids("grid"))] == [100]


def test_in_memory_store_and_closed_store(tmp_path):
    s = SampleStore(":memory:")
    ids = s.put_many("text", [{"prompt": "hi"}])
    assert s.get(ids) == [{"prompt": "hi"}]
    s.close()
    with pytest.raises(ValueError, match="closed"):
        s.count()


def test_forked_child_opens_its_own_connection(store):
    ids = store.put_many("grid", [record("grid", i) for i in range(3)])
    pid = os.fork()
    if pid == 0:  # child: read through the inherited object, report by exit code
        ok = [s["i"] for s in store.get(ids)] == [0, 1, 2]
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.count() == 3 and store.integrity_check() == "ok"  # the parent's connection still works


# -- SIGKILL mid-write ----------------------------------------------------------------------------

BATCH = 20
WRITER = textwrap.dedent(f"""
    import sys
    import numpy as np
    from graft.memory.store import SampleStore

    def make(kind, gen, j):
        return {{"kind": kind, "gen": gen, "j": j,
                 "payload": np.full(16384, (gen * 31 + j) % 251, np.uint32)}}  # 64 KiB

    store = SampleStore(sys.argv[1])
    gen = 0
    while True:
        store.put_many("stream", [make("stream", gen, j) for j in range({BATCH})])
        print("put", gen, flush=True)
        with store.transaction():  # swap the group's contents: old or new, never a mix
            store.delete(store.ids("swap"))
            store.put_many("swap", [make("swap", gen, j) for j in range(3 + gen % 5)])
        print("swap", gen, flush=True)
        gen += 1
""")


@pytest.mark.parametrize("delay", [0.05, 0.23, 0.41])
def test_sigkill_mid_write_leaves_the_last_committed_state(tmp_path, delay):
    path = tmp_path / "killed.sqlite"
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    lines = [child.stdout.readline() for _ in range(4)]  # it is writing for real by now
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    rest = child.stdout.read()
    lines += rest.splitlines()[: rest.count("\n")]  # a line cut by the kill is not an announcement
    assert child.wait() == -signal.SIGKILL
    announced = {"put": -1, "swap": -1}
    for line in lines:
        kind, gen = line.split()
        announced[kind] = int(gen)

    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    raw.close()
    with SampleStore(path) as store:
        assert store.integrity_check() == "ok"
        # A commit may land just before the kill, before its line is printed: one step further.
        n = store.count("stream")
        assert n % BATCH == 0 and announced["put"] + 1 <= n // BATCH <= announced["put"] + 2
        stream = store.get(store.ids("stream"))
        assert [(s["gen"], s["j"]) for s in stream] == [(g, j) for g in range(n // BATCH) for j in range(BATCH)]
        for s in stream:  # every array complete and right
            assert s["payload"].shape == (16384,) and (s["payload"] == (s["gen"] * 31 + s["j"]) % 251).all()
        swap = store.get(store.ids("swap"))
        gens = {s["gen"] for s in swap}
        assert len(gens) == 1, f"swap group mixes generations {gens}"
        (gen,) = gens
        assert announced["swap"] <= gen <= announced["swap"] + 1
        assert [s["j"] for s in swap] == list(range(3 + gen % 5))
        store.put_many("stream", [{"after": True}])  # and the store takes writes again
