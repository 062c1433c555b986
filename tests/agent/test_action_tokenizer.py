"""ActionTokenizer's action statistics: fitted bounds, [-1, 1] normalisation (numpy and torch), JSON
persistence, clear errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from graft.agent.action_tokenizer import ActionTokenizer

NAMES = ("left", "right", "forward", "pickup", "drop", "toggle", "done")


@pytest.fixture
def actions():
    rng = np.random.default_rng(0)
    return rng.uniform([-2.0, 0.0, 5.0], [2.0, 0.5, 5.0], size=(500, 3))  # last dim constant


def test_minmax_statistics_span_the_data(actions):
    tok = ActionTokenizer(dim=3).fit(actions)
    assert np.allclose(tok.low, actions.min(axis=0)) and np.allclose(tok.high, actions.max(axis=0))
    x = tok.normalize(actions)
    assert np.allclose(x[:, :2].min(axis=0), -1) and np.allclose(x[:, :2].max(axis=0), 1)
    assert np.all(x[:, 2] == 0)  # a constant dimension maps to 0, not to a division by zero


def test_quantile_statistics_ignore_outliers(actions):
    spiky = np.concatenate([actions, [[100.0, 0.2, 5.0]]])
    tok = ActionTokenizer(dim=3, stats="quantile").fit(spiky)
    assert -2.0 < tok.low[0] < -1.8 and 1.8 < tok.high[0] < 2.0
    assert tok.normalize([[100.0, 0.2, 5.0]])[0, 0] == 1.0  # clipped to the fitted range
    assert tok.unnormalize([[1.0, 0.0, 0.0]])[0, 0] == pytest.approx(tok.high[0])


def test_normalize_unnormalize_numpy_and_torch(actions):
    tok = ActionTokenizer(dim=3).fit(actions)
    x = tok.normalize(actions)
    assert x.min() >= -1 and x.max() <= 1 and np.allclose(tok.unnormalize(x), actions)
    chunk = torch.tensor(actions[:16].reshape(2, 8, 3), dtype=torch.float32)  # (B, horizon, dim)
    normed = tok.normalize(chunk)
    assert isinstance(normed, torch.Tensor) and normed.dtype == torch.float32 and normed.shape == (2, 8, 3)
    np.testing.assert_allclose(normed.numpy(), x[:16].reshape(2, 8, 3), atol=1e-6)
    assert torch.allclose(tok.unnormalize(normed), chunk, atol=1e-5)


def test_unfitted_bounds_are_the_unit_box_or_given():
    assert np.array_equal(ActionTokenizer(dim=2).normalize([[0.5, -2.0]]), [[0.5, -1.0]])
    tok = ActionTokenizer(dim=2, low=[0.0, 0.0], high=[2.0, 4.0])
    assert np.allclose(tok.normalize([[1.0, 4.0]]), [[0.0, 1.0]])


def test_discrete_statistics_refuse_to_normalize():
    tok = ActionTokenizer(names=NAMES)
    assert tok.discrete and tok.dim is None and tok.fit(np.zeros((4, 3))) is tok
    with pytest.raises(TypeError, match="continuous actions only"):
        tok.normalize(np.zeros(1))
    with pytest.raises(TypeError, match="continuous actions only"):
        tok.unnormalize(np.zeros(1))


def test_save_load_json_atomically(tmp_path, actions):
    tok = ActionTokenizer(dim=3, n_bins=32, stats="quantile").fit(actions)
    path = tok.save(tmp_path / "sub" / "action_tokenizer.json")
    assert sorted(p.name for p in path.parent.iterdir()) == ["action_tokenizer.json"]
    data = json.loads(path.read_text())
    assert data == {"version": 1, "prefix": "act", "stats": "quantile", "names": None, "dim": 3, "n_bins": 32,
                    "low": tok.low.tolist(), "high": tok.high.tolist()}
    loaded = ActionTokenizer.load(path)
    assert repr(loaded) == repr(tok) == "ActionTokenizer(dim=3, n_bins=32, stats='quantile')"
    assert np.array_equal(loaded.normalize(actions), tok.normalize(actions))
    named = ActionTokenizer.from_json(ActionTokenizer(names=NAMES).to_json())
    assert named.discrete and named.names == NAMES and named.to_json() == ActionTokenizer(names=NAMES).to_json()


@pytest.mark.parametrize("call, message", [
    (lambda t: t.fit(np.zeros((4, 2))), r"fit needs a non-empty, finite \(N, 3\)"),
    (lambda t: t.fit(np.array([[np.nan, 0.0, 5.0]])), r"fit needs a non-empty, finite"),
    (lambda t: t.normalize(np.zeros((4, 2))), "last dimension 3"),
    (lambda t: t.unnormalize(torch.zeros(4, 2)), "last dimension 3"),
])
def test_continuous_errors(call, message, actions):
    tok = ActionTokenizer(dim=3).fit(actions)
    with pytest.raises(ValueError, match=message):
        call(tok)


def test_construction_errors():
    with pytest.raises(ValueError, match="exactly one of names="):
        ActionTokenizer()
    with pytest.raises(ValueError, match="unique and non-empty"):
        ActionTokenizer(names=["left", "left"])
    with pytest.raises(ValueError, match="stats must be"):
        ActionTokenizer(dim=2, stats="mean")
    with pytest.raises(ValueError, match="need finite low <= high"):
        ActionTokenizer(dim=2, low=[1.0, 0.0], high=[0.0, 1.0])
    with pytest.raises(ValueError, match="unsupported action tokenizer format"):
        ActionTokenizer.from_json({"version": 99})
