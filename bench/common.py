"""Shared pieces of graft's benchmarks: interleaved timing, the matmul FLOP/s probe, the machine.

Every figure in BENCHMARKS.md is a ratio against a baseline measured in the same run: the
variants of one benchmark are timed in interleaved rounds (A, B, C, A, B, C, ...) so that load
from other processes on the machine hits them alike, and each variant's median is reported.
"""
from __future__ import annotations

import importlib.metadata as md
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping

import torch


def interleaved(variants: Mapping[str, Callable[[int], object]], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Time each `variants[name](round)` once per round, in turn; seconds per call, warm-up dropped."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(warmup + rounds):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn(r)
            if r >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def median(values) -> float:
    return float(statistics.median(values))


def matmul_flops(size: int = 1024, repeats: int = 5, inner: int = 4, dtype: torch.dtype = torch.float32) -> float:
    """Measured FLOP/s of a `size`² matmul on this thread (median of `repeats` loops of `inner`)."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            a @ b
        rates.append(inner * 2 * size**3 / (time.perf_counter() - start))
    return median(rates)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """What the numbers were measured on: CPU, cores, threads, memory, versions."""
    versions = {}
    for pkg in ("graft", "torch", "transformers", "peft", "avalanche-lib", "gymnasium", "minigrid"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = "not installed"
    mem_gb = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_gb = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu_name(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "memory_gb": mem_gb,
            "gpu": gpu, "python": platform.python_version(), "platform": platform.platform(), "versions": versions}
