"""Why `threads: auto` picks one thread on small machines: small ops and matmuls at 1 vs N threads.

Run: `python bench/threads.py` (prints absolute times and the ratio against one thread, measured
in the same run; writes nothing). The baseline is one torch thread.
"""
from __future__ import annotations

import json
import os
import time

import torch


def best_of(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def small_ops() -> None:
    x = torch.randn(64, 576)
    for _ in range(200):  # the elementwise work of a small LLM layer: norm, add, activation
        x = torch.nn.functional.silu(x * 1.01 + 0.1)
        x = x / x.norm(dim=-1, keepdim=True)


def matmul() -> None:
    a, b = torch.randn(512, 576), torch.randn(576, 1536)
    for _ in range(20):
        a @ b


def main() -> None:
    results = {}
    for threads in sorted({1, os.cpu_count() or 1}):
        torch.set_num_threads(threads)
        results[threads] = {"small_ops_s": best_of(small_ops), "matmul_s": best_of(matmul)}
    base = results[1]
    print(f"{'threads':>8} {'small ops (s)':>14} {'ratio':>7} {'matmul (s)':>11} {'GFLOP/s':>8} {'ratio':>7}")
    for threads, r in results.items():
        gflops = 20 * 2 * 512 * 576 * 1536 / r["matmul_s"] / 1e9
        print(f"{threads:>8} {r['small_ops_s']:>14.4f} {r['small_ops_s'] / base['small_ops_s']:>7.2f}"
              f" {r['matmul_s']:>11.4f} {gflops:>8.1f} {r['matmul_s'] / base['matmul_s']:>7.2f}")
    print(json.dumps({str(k): v for k, v in results.items()}))


if __name__ == "__main__":
    main()
