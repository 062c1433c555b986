"""ActionTokenizer: round trips within half a bin, fitted statistics, JSON persistence, clear errors."""
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


@pytest.mark.parametrize("n_bins", [16, 256])
def test_continuous_round_trip_within_half_a_bin(actions, n_bins):
    tok = ActionTokenizer(dim=3, n_bins=n_bins).fit(actions)
    ids = tok.encode(actions)
    assert ids.shape == (500, 3) and ids.dtype == np.int64 and ids.min() >= 0 and ids.max() < n_bins
    half_bin = (tok.high - tok.low) / n_bins / 2
    error = np.abs(tok.decode(ids) - actions).max(axis=0)
    assert np.all(error <= half_bin + 1e-6)
    assert error[0] > 0.5 * half_bin[0]  # the bound is tight: quantisation really happens
    assert np.allclose(tok.low, actions.min(axis=0)) and np.allclose(tok.high, actions.max(axis=0))


def test_quantile_statistics_ignore_outliers(actions):
    spiky = np.concatenate([actions, [[100.0, 0.2, 5.0]]])
    tok = ActionTokenizer(dim=3, stats="quantile").fit(spiky)
    assert tok.high[0] < 2.0 and tok.low[0] > -2.0
    assert tok.decode(tok.encode([[100.0, 0.2, 5.0]]))[0, 0] == pytest.approx(tok.high[0], abs=0.02)


def test_normalize_unnormalize_numpy_and_torch(actions):
    tok = ActionTokenizer(dim=3).fit(actions)
    x = tok.normalize(actions)
    assert x.min() >= -1 and x.max() <= 1 and np.allclose(tok.unnormalize(x), actions)
    chunk = torch.tensor(actions[:16].reshape(2, 8, 3), dtype=torch.float32)  # (B, horizon, dim)
    normed = tok.normalize(chunk)
    assert isinstance(normed, torch.Tensor) and normed.dtype == torch.float32 and normed.shape == (2, 8, 3)
    assert torch.allclose(tok.unnormalize(normed), chunk, atol=1e-5)


def test_text_tokens_round_trip(actions):
    tok = ActionTokenizer(dim=3, n_bins=64).fit(actions)
    strings = tok.token_strings()
    assert len(strings) == len(set(strings)) == 64 and strings[0] == "<act_0>"
    text = tok.to_text(actions[0])
    assert text.count("<act_") == 3
    assert np.allclose(tok.from_text("Action: " + text + " done"), tok.decode(tok.encode(actions[0])))


def test_discrete_named_tokens():
    tok = ActionTokenizer(names=NAMES)
    assert tok.token_strings() == [f"<act_{n}>" for n in NAMES] and tok.vocab_size == 7
    assert tok.encode(["forward", "done"]).tolist() == [2, 6]
    assert tok.encode(np.array([0, 5])).tolist() == [0, 5]
    assert tok.decode([3]).tolist() == [3]
    assert tok.to_text(2) == "<act_forward>" and tok.from_text("I will go <act_toggle>") == 5
    with pytest.raises(TypeError, match="continuous actions only"):
        tok.normalize(np.zeros(1))


def test_save_load_json_atomically(tmp_path, actions):
    tok = ActionTokenizer(dim=3, n_bins=32, stats="quantile").fit(actions)
    path = tok.save(tmp_path / "sub" / "action_tokenizer.json")
    assert sorted(p.name for p in path.parent.iterdir()) == ["action_tokenizer.json"]
    data = json.loads(path.read_text())
    assert data["n_bins"] == 32 and data["stats"] == "quantile" and len(data["low"]) == 3
    loaded = ActionTokenizer.load(path)
    assert np.array_equal(loaded.encode(actions), tok.encode(actions))
    named = ActionTokenizer.from_json(ActionTokenizer(names=NAMES).to_json())
    assert named.token_strings() == ActionTokenizer(names=NAMES).token_strings()


@pytest.mark.parametrize("call, message", [
    (lambda t: t.encode([[np.nan, 0.0, 5.0]]), "NaN"),
    (lambda t: t.decode([[0, 0, 999]]), r"token indices must lie in \[0, 256\)"),
    (lambda t: t.fit(np.zeros((4, 2))), r"fit needs a non-empty, finite \(N, 3\)"),
    (lambda t: t.normalize(np.zeros((4, 2))), "last dimension 3"),
    (lambda t: t.from_text("no tokens"), r"expected 3 action token\(s\)"),
])
def test_continuous_errors(call, message, actions):
    tok = ActionTokenizer(dim=3).fit(actions)
    with pytest.raises(ValueError, match=message):
        call(tok)


def test_discrete_and_construction_errors():
    tok = ActionTokenizer(names=NAMES)
    with pytest.raises(ValueError, match="unknown action name"):
        tok.encode(["jump"])
    with pytest.raises(ValueError, match=r"ints in \[0, 7\)"):
        tok.encode([7])
    with pytest.raises(ValueError, match="exactly one of names="):
        ActionTokenizer()
    with pytest.raises(ValueError, match="stats must be"):
        ActionTokenizer(dim=2, stats="mean")
    with pytest.raises(ValueError, match="unsupported action tokenizer format"):
        ActionTokenizer.from_json({"version": 99})
