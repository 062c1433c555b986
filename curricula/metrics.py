"""Continual-learning metrics over an accuracy matrix, success intervals and spreads over seeds.

R[i][j] is the score on stage j's test set after training stage i (T x T). Every cell is measured:
a cell j > i scores stage j *blind* (its modality not yet grafted, the placeholder dropped), and
`b[j]` is the blind score of the model before any training. A cell may be None (NaN): an output
stage cannot be scored before its head exists; metrics average over the cells they have.

- average accuracy  ACC = mean_j R[T-1][j]                                  (Lopez-Paz & Ranzato 2017)
- backward transfer BWT = mean_{j<T-1} (R[T-1][j] - R[j][j])                (Lopez-Paz & Ranzato 2017)
- forward transfer  FWT = mean_{j>0} (R[j-1][j] - b[j])                     (Lopez-Paz & Ranzato 2017)
  R[j-1][j] is the blind score of stage j after the stages before it: what they taught about
  stage j's questions before its sensor arrived, against the same blind questions before any training.
- forgetting        F   = mean_{j<T-1} (max_{l<T-1} R[l][j] - R[T-1][j])   (Chaudhry et al. 2018)

`success_cell(successes, episodes)` is a rollout cell {rate, ci95: [lo, hi], episodes} with the
95% Wilson score interval; `summarize(values)` is {mean, std, values} over seeds.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Z95 = 1.959963984540054


def as_matrix(R: Sequence[Sequence[float | None]]) -> np.ndarray:
    m = np.array([[np.nan if v is None else float(v) for v in row] for row in R], dtype=float)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0:
        raise ValueError(f"accuracy matrix must be square T x T with T >= 1, got shape {m.shape}")
    return m


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def average_accuracy(R) -> float | None:
    return _mean(list(as_matrix(R)[-1]))


def backward_transfer(R) -> float | None:
    m = as_matrix(R)
    T = m.shape[0]
    return 0.0 if T < 2 else _mean([m[-1, j] - m[j, j] for j in range(T - 1)])


def forward_transfer(R, baseline: Sequence[float | None]) -> float | None:
    m = as_matrix(R)
    b = np.array([np.nan if v is None else float(v) for v in baseline], dtype=float)
    T = m.shape[0]
    if b.shape != (T,):
        raise ValueError(f"baseline needs one score per stage ({T}), got shape {b.shape}")
    return 0.0 if T < 2 else _mean([m[j - 1, j] - b[j] for j in range(1, T)])


def forgetting(R) -> float | None:
    m = as_matrix(R)
    T = m.shape[0]
    if T < 2:
        return 0.0
    best = [np.nanmax(m[: T - 1, j]) if np.isfinite(m[: T - 1, j]).any() else np.nan for j in range(T - 1)]
    return _mean([best[j] - m[-1, j] for j in range(T - 1)])


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95% by default)."""
    if n <= 0:
        raise ValueError(f"a success interval needs at least one episode, got n={n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, {n}], got {successes}")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def success_cell(successes: int, episodes: int) -> dict:
    lo, hi = wilson(successes, episodes)
    return {"rate": successes / episodes, "ci95": [lo, hi], "episodes": int(episodes)}


def rate(cell) -> float | None:
    """The rate of a success cell (or a bare number, or None)."""
    return cell.get("rate") if isinstance(cell, dict) else cell


def drop_limit(before: float, now: float, n: int, budget: float, z: float) -> float:
    """The drop of a score on n items that counts as forgetting: the budget, or z standard errors of
    the difference of two proportions when that is larger (a drop inside the noise is not one)."""
    if z <= 0:
        return float(budget)
    se = math.sqrt(max(before * (1 - before), 0.0) / max(n, 1) + max(now * (1 - now), 0.0) / max(n, 1))
    return max(float(budget), z * se)


def summarize(values: Sequence[float | None]) -> dict:
    """{mean, std (sample, ddof=1), values} over seeds; None where no seed has a value."""
    have = [float(v) for v in values if v is not None and np.isfinite(v)]
    return {"mean": float(np.mean(have)) if have else None,
            "std": float(np.std(have, ddof=1)) if len(have) > 1 else (0.0 if have else None),
            "values": list(values)}
