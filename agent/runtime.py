"""Process-wide runtime settings: torch threads.

On small machines (the reference one has 2 vCPUs sharing one core's FP units) a second OpenMP
thread adds no matmul throughput and makes small ops ~40x slower, so `threads: auto` means one
thread up to 4 logical CPUs and half the CPUs (max 8) above that. An explicit number wins.
"""
from __future__ import annotations

import os

import torch


def resolve_threads(setting: int | str | None = "auto") -> int:
    if setting in (None, "auto"):
        cpus = os.cpu_count() or 1
        return 1 if cpus <= 4 else min(cpus // 2, 8)
    threads = int(setting)
    if threads < 1:
        raise ValueError(f"threads must be a positive integer or 'auto', got {setting!r}")
    return threads


def configure_threads(setting: int | str | None = "auto") -> int:
    threads = resolve_threads(setting)
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # for worker processes started later
    return threads
