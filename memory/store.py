"""Durable, atomic storage of samples in one embedded SQLite file (stdlib sqlite3).

Samples are grouped by a key (the stage/modality name, e.g. "grid"). Each sample is one row of
`samples` (id, group, JSON fields from `encode_sample`) plus one row of `arrays` per numpy value
(raw bytes with dtype and shape columns). A small `meta` table holds JSON values that callers want
committed together with samples (ReplayMemory keeps its settings there).

Durability: WAL journal with `synchronous=FULL`; every public write is one transaction, and
`transaction()` groups several writes into one. A process killed at any instant (SIGKILL, power
loss) leaves the last committed state on disk: never a partial sample.

Ids are `INTEGER PRIMARY KEY AUTOINCREMENT`: increasing in insertion order, never reused, except
that `rewind(last_id)` undoes every insert after `last_id` as if it had never happened (for rollback).
`path=":memory:"` gives a private in-memory store with the same API (nothing survives close).
A connection is per process: after a fork (e.g. DataLoader workers) the child opens its own.
"""
from __future__ import annotations

import contextlib
import json
import operator
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from graft.memory.schema import EncodedArrays, Sample, decode_sample, encode_sample

SCHEMA_VERSION = 1
_CHUNK = 500  # ids per `IN (...)` query, well under SQLite's bound-parameter limit

_SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    grp TEXT NOT NULL,
    fields TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS samples_by_group ON samples (grp, id);
CREATE TABLE IF NOT EXISTS arrays (
    sample_id INTEGER NOT NULL REFERENCES samples (id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    dtype TEXT NOT NULL,
    shape TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (sample_id, key)
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


class SampleStore:
    """Samples grouped by key in one SQLite file; see the module docstring. Use as a context manager
    or call close()."""

    def __init__(self, path: str | os.PathLike, *, timeout: float = 30.0):
        self.path = str(path)
        self._timeout = timeout
        self._pid = os.getpid()
        self._depth = 0  # nesting level of transaction()
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._conn: sqlite3.Connection | None = self._open()

    def _open(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; transaction() issues BEGIN/COMMIT itself.
        conn = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None)
        if self.path != ":memory:":
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                conn.close()
                raise OSError(f"{self.path}: SQLite refused WAL journal mode (got {mode!r}); "
                              "is the file on a filesystem without shared-memory support?")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.executescript(_SCHEMA)
        row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) != SCHEMA_VERSION:
            conn.close()
            raise ValueError(f"{self.path}: sample store schema version {row[0]}, this graft reads "
                             f"version {SCHEMA_VERSION}")
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        """This process's sqlite3 connection (autocommit mode; write through transaction())."""
        if self._conn is None:
            raise ValueError(f"SampleStore({self.path!r}) is closed")
        if os.getpid() != self._pid:
            if self.path == ":memory:":
                raise RuntimeError("an in-memory SampleStore cannot be used from a forked process")
            # A SQLite connection must not cross fork(); drop the parent's without closing it.
            self._pid, self._depth, self._conn = os.getpid(), 0, self._open()
        return self._conn

    # -- transactions ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[SampleStore]:
        """Group writes into one atomic transaction; nested calls become savepoints."""
        conn = self.conn
        if self._depth == 0:
            conn.execute("BEGIN IMMEDIATE")
            undo, done = ["ROLLBACK"], ["COMMIT"]
        else:
            name = f"sp{self._depth}"
            conn.execute(f"SAVEPOINT {name}")
            # A savepoint rolled back is still open: release it too.
            undo, done = [f"ROLLBACK TO {name}", f"RELEASE {name}"], [f"RELEASE {name}"]
        self._depth += 1
        try:
            yield self
            for sql in done:
                conn.execute(sql)
        except BaseException:
            if conn.in_transaction:
                for sql in undo:
                    conn.execute(sql)
            raise
        finally:
            self._depth -= 1

    # -- writes ---------------------------------------------------------------------------------
    def put_many(self, group: str, samples: Iterable[Mapping[str, Any]]) -> list[int]:
        """Insert samples under `group` in one transaction; returns their new ids in order."""
        check_group(group)
        encoded = [encode_sample(s) for s in samples]  # validate everything before writing
        with self.transaction():
            return self._insert(group, encoded)

    def _insert(self, group: str, encoded: list[tuple[str, EncodedArrays]]) -> list[int]:
        conn, ids = self.conn, []
        for fields, arrays in encoded:
            sid = conn.execute("INSERT INTO samples (grp, fields) VALUES (?, ?)", (group, fields)).lastrowid
            ids.append(sid)
            conn.executemany("INSERT INTO arrays VALUES (?, ?, ?, ?, ?)",
                             [(sid, k, dt, json.dumps(list(shape)), data) for k, (dt, shape, data) in arrays.items()])
        return ids

    def delete(self, ids: Iterable[int]) -> int:
        """Delete samples by id in one transaction; returns how many existed."""
        ids = _int_ids(ids)
        deleted = 0
        with self.transaction():
            for chunk in _chunks(ids):
                marks = ",".join("?" * len(chunk))
                deleted += self.conn.execute(f"DELETE FROM samples WHERE id IN ({marks})", chunk).rowcount
        return deleted

    def rewind(self, last_id: int) -> int:
        """Delete every sample with an id above `last_id` and make the next insert get id
        `last_id + 1` again, in one transaction; returns how many samples were deleted."""
        (last_id,) = _int_ids([last_id])
        if last_id < 0:
            raise ValueError(f"rewind() needs an id >= 0, got {last_id}")
        with self.transaction():
            deleted = self.conn.execute("DELETE FROM samples WHERE id > ?", (last_id,)).rowcount
            self.conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'samples' AND seq > ?",
                              (last_id, last_id))
        return deleted

    def last_id(self) -> int:
        """The highest id ever given out (0 before the first insert; lowered only by rewind())."""
        row = self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'samples'").fetchone()
        return 0 if row is None else row[0]

    def set_meta(self, key: str, value: Any) -> None:
        """Store a JSON value under `key` (in the caller's transaction, if any)."""
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
        with self.transaction():
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (f"user:{key}", text))

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (f"user:{key}",)).fetchone()
        return default if row is None else json.loads(row[0])

    # -- reads ----------------------------------------------------------------------------------
    def get(self, ids: Sequence[int]) -> list[Sample]:
        """Samples in the order of `ids` (repeats allowed, each decoded afresh); KeyError names
        missing ids."""
        ids = _int_ids(ids)
        arrays: dict[int, dict[str, tuple[str, list[int], bytes]]] = {}
        unique = list(dict.fromkeys(ids))
        # Both SELECTs in one read transaction, so a concurrent writer cannot slip in between.
        with self._read():
            fields = dict(self._select_in("SELECT id, fields FROM samples WHERE id IN ({})", unique))
            for sid, key, dt, shape, data in self._select_in(
                    "SELECT sample_id, key, dtype, shape, data FROM arrays WHERE sample_id IN ({})", unique):
                arrays.setdefault(sid, {})[key] = (dt, json.loads(shape), data)
        missing = [i for i in unique if i not in fields]
        if missing:
            raise KeyError(f"no samples with ids {missing[:10]}{' ...' if len(missing) > 10 else ''} "
                           f"in {self.path}")
        return [decode_sample(fields[i], arrays.get(i, {})) for i in ids]

    def ids(self, group: str | None = None) -> list[int]:
        """Ids in insertion order, of one group or of all."""
        if group is None:
            return [r[0] for r in self.conn.execute("SELECT id FROM samples ORDER BY id")]
        return [r[0] for r in self.conn.execute("SELECT id FROM samples WHERE grp = ? ORDER BY id", (group,))]

    def group_of(self, ids: Sequence[int]) -> list[str]:
        """The group of each id, in order; KeyError names missing ids."""
        ids = _int_ids(ids)
        unique = list(dict.fromkeys(ids))
        found = dict(self._select_in("SELECT id, grp FROM samples WHERE id IN ({})", unique))
        missing = [i for i in ids if i not in found]
        if missing:
            raise KeyError(f"no samples with ids {missing[:10]} in {self.path}")
        return [found[i] for i in ids]

    def count(self, group: str | None = None) -> int:
        if group is None:
            return self.conn.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
        return self.conn.execute("SELECT COUNT(*) FROM samples WHERE grp = ?", (group,)).fetchone()[0]

    def integrity_check(self) -> str:
        """SQLite's integrity_check plus a foreign-key check: "ok", or the problems found."""
        problems = [r[0] for r in self.conn.execute("PRAGMA integrity_check")]
        orphans = self.conn.execute("PRAGMA foreign_key_check").fetchall()
        if orphans:
            problems.append(f"{len(orphans)} array rows without a sample")
        return "ok" if problems == ["ok"] else "; ".join(problems)

    # -- files ----------------------------------------------------------------------------------
    def close(self) -> None:
        if self._conn is not None and os.getpid() == self._pid:
            self._conn.close()
        self._conn = None

    def __enter__(self) -> SampleStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._conn is None else f"{self.count()} samples"
        return f"SampleStore({self.path!r}, {state})"

    def _select_in(self, sql: str, ids: list[int]) -> Iterator[tuple]:
        """The rows of `sql`, whose `{}` stands for a list of ids, over `ids` in chunks."""
        for chunk in _chunks(ids):
            yield from self.conn.execute(sql.format(",".join("?" * len(chunk))), chunk)

    @contextlib.contextmanager
    def _read(self) -> Iterator[None]:
        if self._depth:
            yield
            return
        self.conn.execute("BEGIN")
        try:
            yield
        finally:
            self.conn.execute("COMMIT")


def check_group(group: str) -> None:
    if type(group) is not str or not group:
        raise ValueError(f"group must be a non-empty str (a stage or modality name), got {group!r}")


def _int_ids(ids: Iterable[int]) -> list[int]:
    out = []
    for i in ids:
        if isinstance(i, (bool, np.bool_)):
            raise TypeError(f"sample ids are ints, got the bool {i!r}")
        try:
            out.append(operator.index(i))
        except TypeError:
            raise TypeError(f"sample ids are ints, got {i!r} ({type(i).__name__})") from None
    return out


def _chunks(items: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start:start + _CHUNK]
