"""Continual-learning metrics over an accuracy matrix.

R[i][j] is the score on stage j's test set after training stage i (T x T; entries for j > i are
measured too, so forward transfer can be read off). `b[j]` is the score on stage j of the model
before any training (the baseline FWT compares against).

- average accuracy  ACC = mean_j R[T-1][j]                                  (Lopez-Paz & Ranzato 2017)
- backward transfer BWT = mean_{j<T-1} (R[T-1][j] - R[j][j])                (Lopez-Paz & Ranzato 2017)
- forward transfer  FWT = mean_{j>0} (R[j-1][j] - b[j])                     (Lopez-Paz & Ranzato 2017)
- forgetting        F   = mean_{j<T-1} (max_{l<T-1} R[l][j] - R[T-1][j])   (Chaudhry et al. 2018)
(Text retention, text score now / text score before the first graft, is formed in curricula/strategy.py.)
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def as_matrix(R: Sequence[Sequence[float]]) -> np.ndarray:
    m = np.asarray(R, dtype=float)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0:
        raise ValueError(f"accuracy matrix must be square T x T with T >= 1, got shape {m.shape}")
    return m


def average_accuracy(R) -> float:
    m = as_matrix(R)
    return float(m[-1].mean())


def backward_transfer(R) -> float:
    m = as_matrix(R)
    T = m.shape[0]
    if T < 2:
        return 0.0
    return float(np.mean([m[-1, j] - m[j, j] for j in range(T - 1)]))


def forward_transfer(R, baseline: Sequence[float]) -> float:
    m = as_matrix(R)
    b = np.asarray(baseline, dtype=float)
    T = m.shape[0]
    if b.shape != (T,):
        raise ValueError(f"baseline needs one score per stage ({T}), got shape {b.shape}")
    if T < 2:
        return 0.0
    return float(np.mean([m[j - 1, j] - b[j] for j in range(1, T)]))


def forgetting(R) -> float:
    m = as_matrix(R)
    T = m.shape[0]
    if T < 2:
        return 0.0
    return float(np.mean([m[: T - 1, j].max() - m[-1, j] for j in range(T - 1)]))

