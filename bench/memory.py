"""Measure graft.memory at 10 000 BabyAI-sized samples (not a test; prints numbers).

    OMP_NUM_THREADS=1 python bench/memory.py [n]

`measure(n)` (called by `graft bench`) returns the figures as a dict, each beside the baseline a
user would write instead: a reservoir over a plain Python list of the same records, in memory.

Record: grid 7x7x3 uint8 + rgb 56x56x3 uint8 + short strings and ints (~9.6 KB of arrays).
Reports insert latency (SampleStore.put_many and ReplayMemory.add, file and in-memory), sample
latency (ReplayMemory.sample of 32 and 256), bytes per sample on disk and resident memory.
"""
from __future__ import annotations

import ctypes
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from graft.memory.replay import ReplayMemory
from graft.memory.store import SampleStore


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def records(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"episode_seed": int(rng.integers(2**31)), "step": i % 64, "kind": "demo",
             "env": "BabyAI-GoToLocal-v0", "mission": "go to the red ball", "modalities": ["grid", "rgb"],
             "prompt": "Mission: go to the red ball\nWhat is the next action?\n<grid>\n<rgb>",
             "response": "turn left", "action": [0.0],
             "grid": rng.integers(0, 11, (7, 7, 3), dtype=np.uint8),
             "rgb": rng.integers(0, 256, (56, 56, 3), dtype=np.uint8)} for i in range(n)]


def timed(fn, repeats: int = 1) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


class ListReservoir:
    """The baseline: reservoir sampling over a Python list (in memory, not durable)."""

    def __init__(self, max_size: int, seed: int = 0):
        self.max_size, self.items, self.seen = max_size, [], 0
        self.rng = np.random.default_rng(seed)

    def add(self, records: list[dict]) -> None:
        for r in records:
            self.seen += 1
            if len(self.items) < self.max_size:
                self.items.append(r)
            else:
                j = int(self.rng.integers(self.seen))
                if j < self.max_size:
                    self.items[j] = r

    def sample(self, k: int) -> list[dict]:
        return [self.items[i] for i in self.rng.choice(len(self.items), k, replace=False)]


def measure(n: int = 10_000, sample_repeats: int = 30) -> dict:
    """graft's ReplayMemory (file-backed SQLite, reservoir) against a list reservoir, at n samples:
    insert us/sample, sample(32/256) ms, bytes per sample on disk and resident memory."""
    from bench.common import interleaved

    data = records(n)
    raw = data[0]["grid"].nbytes + data[0]["rgb"].nbytes
    out: dict = {"samples": n, "array_bytes_per_sample": raw}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "replay.sqlite"
        memory = ReplayMemory("reservoir", max_size=n, store_path=path, seed=0)
        base = ListReservoir(n)
        out["insert_us"] = {"graft": timed(lambda: memory.add("grid", data)) / n * 1e6,
                            "baseline": timed(lambda: base.add(data)) / n * 1e6}
        for k in (32, 256):
            variants = {"graft": lambda r, k=k: memory.sample(k, rng=r), "baseline": lambda r, k=k: base.sample(k)}
            times = interleaved(variants, sample_repeats)
            out[f"sample{k}_ms"] = {name: statistics.median(t) * 1e3 for name, t in times.items()}
        memory.close()
        size = sum(f.stat().st_size for f in Path(tmp).glob("replay.sqlite*"))
        out["disk_bytes_per_sample"] = size / n
        res = subprocess.run([sys.executable, __file__, "resident", str(path), str(n), "json"],
                             capture_output=True, text=True, check=True)
        out["resident_mb"] = json.loads(res.stdout.strip().splitlines()[-1])
    for key in ("insert_us", "sample32_ms", "sample256_ms", "resident_mb"):
        out[key]["ratio"] = out[key]["graft"] / out[key]["baseline"]
    return out


def main(n: int = 10_000) -> None:
    data = records(n)
    print(f"{n} records, arrays {data[0]['grid'].nbytes + data[0]['rgb'].nbytes} B each")
    with tempfile.TemporaryDirectory() as tmp:
        with SampleStore(Path(tmp) / "store.sqlite") as store:
            t = timed(lambda: store.put_many("grid", data))
            print(f"SampleStore.put_many (file, one transaction): {t:.2f} s, {t / n * 1e6:.0f} us/sample")
            ids = store.ids()
            rng = np.random.default_rng(0)
            for k in (1, 32, 256):
                t = timed(lambda k=k: store.get(rng.choice(ids, k).tolist()), repeats=50)
                print(f"SampleStore.get({k}) median: {t * 1e3:.2f} ms")
            t = timed(lambda: store.put_many("one", data[:1]), repeats=20)
            print(f"SampleStore.put_many of 1 sample (commit + fsync) median: {t * 1e3:.2f} ms")
        files = list(Path(tmp).glob("store.sqlite*"))
        size = sum(f.stat().st_size for f in files)
        print(f"on disk: {size / 1e6:.1f} MB for {n + 20} samples = {size / (n + 20):.0f} B/sample "
              f"({', '.join(f.name for f in files)})")

        for where in ("file", "memory"):
            path = Path(tmp) / f"replay-{where}.sqlite" if where == "file" else None
            memory = ReplayMemory("reservoir", max_size=n, store_path=path, seed=0)
            t = timed(lambda m=memory: m.add("grid", data))
            print(f"ReplayMemory.add of {n} ({where}): {t:.2f} s, {t / n * 1e6:.0f} us/sample")
            t = timed(lambda m=memory: m.add("rgb", data[: n // 10]))
            print(f"ReplayMemory.add of {n // 10} into a full buffer ({where}): {t:.2f} s")
            for k in (32, 256):
                t = timed(lambda m=memory, k=k: m.sample(k, rng=1), repeats=30)
                print(f"ReplayMemory.sample({k}) ({where}) median: {t * 1e3:.2f} ms")
            memory.close()
        # Resident memory, each in a fresh process so nothing else is counted.
        for args in (["resident", str(Path(tmp) / "replay-file.sqlite"), str(n)], ["resident", ":memory:", str(n)]):
            out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
            print(out.stdout.strip())


def resident_json(path: str, n: int) -> None:
    """Resident memory (MB over the imports) of graft's buffer reopened from `path` and of a list
    reservoir holding the same n records, in this fresh process; prints one JSON line."""
    import gc

    from graft.memory.replay import _avalanche
    _avalanche()

    def settled() -> float:
        gc.collect()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
        return rss_mb()

    base = settled()
    memory = ReplayMemory("reservoir", max_size=n, store_path=path, seed=0)
    memory.sample(256, rng=0)
    graft = settled() - base
    memory.close()
    base = settled()
    data = records(n)
    reservoir = ListReservoir(n)
    reservoir.add(data)
    del data
    reservoir.sample(256)
    print(json.dumps({"graft": graft, "baseline": settled() - base}))


def resident(path: str, n: int = 0) -> None:
    """RSS of a process holding a 10k-sample buffer: reopened from a file, or built in memory."""
    import gc

    import torch  # noqa: F401  (imported by graft.memory.replay anyway; counted in the baseline)
    from graft.memory.replay import _avalanche
    _avalanche()
    base = rss_mb()
    if path == ":memory:":
        memory = ReplayMemory("reservoir", max_size=n, seed=0)
        data = records(n)
        memory.add("grid", data)
        del data
    else:
        memory = ReplayMemory("reservoir", max_size=n or 10_000, store_path=path, seed=0)
    gc.collect()
    try:  # hand freed heap back to the OS so RSS shows what is still held (glibc only)
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    memory.sample(256, rng=0)
    where = "in memory, after add()" if path == ":memory:" else "reopened from the file"
    pages = memory.store.conn.execute("PRAGMA page_count").fetchone()[0]
    page = memory.store.conn.execute("PRAGMA page_size").fetchone()[0]
    print(f"resident memory, {len(memory)} samples {where}: +{rss_mb() - base:.0f} MB over the imports "
          f"({base:.0f} MB: torch + avalanche); SQLite database {pages * page / 1e6:.0f} MB")

if __name__ == "__main__":
    if sys.argv[1:2] == ["resident"] and sys.argv[4:5] == ["json"]:
        resident_json(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1:2] == ["resident"]:
        resident(sys.argv[2], *map(int, sys.argv[3:]))
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
