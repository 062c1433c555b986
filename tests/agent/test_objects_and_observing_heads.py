"""The `objects` modality and output heads that observe input modalities directly (prefix attention)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from graft.agent.build import graft_output, load_mmllm, save_mmllm
from graft.agent.mmllm import Example
from graft.agent.modalities.objects import ObjectsModality
from graft.agent.outputs import PrefixAttentionOutputProjector
from graft.envs.spec import ObservationError

K, N, C = 2, 3, 16
PREFIX = {"_target_": "graft.agent.outputs.PrefixAttentionOutputProjector", "num_layers": 1, "num_heads": 4}


def rows(*objects):
    return np.asarray(objects, dtype=np.float32)  # (N, 5)


def test_objects_encoder_gives_one_frozen_token_per_object():
    m = ObjectsModality(fourier=2)
    feats = m(rows([0.1, -0.05, 1, 0, 0], [-0.1, 0.1, 0, 0, 1])[None])
    assert feats.shape == (1, 2, m.feature_dim) == (1, 2, 5 + 8)
    assert torch.allclose(feats[0, 0, :2], torch.tensor([0.4, -0.2]))  # x, y / scale
    assert torch.allclose(feats[0, 0, 2:5], torch.tensor([1.0, -1.0, -1.0]))  # colour in [-1, 1]
    assert not any(p.requires_grad for p in m.parameters())
    swapped = m(rows([-0.1, 0.1, 0, 0, 1], [0.1, -0.05, 1, 0, 0])[None])
    assert torch.equal(swapped[0, 0], feats[0, 1])  # a token per row: order in, order out
    assert m(m.sample(np.random.default_rng(0))[None]).shape[1] == 2


@pytest.mark.parametrize("bad, match", [
    (np.zeros((2, 4), np.float32), "shape"),
    (np.zeros((2, 5), np.float64), "dtype"),
    (rows([0.1, 0.0, 1.5, 0, 0]), r"\[-1.0, 1.0\]|range|1.5"),
    (rows([np.nan, 0.0, 1, 0, 0]), "NaN"),
    (rows([0.1, 0.0, -0.5, 0, 0]), r"colours .* \[0, 1\]"),
])
def test_objects_rejects_bad_rows_saying_what_was_expected(bad, match):
    with pytest.raises((ObservationError, ValueError), match=match):
        ObjectsModality()(bad[None])


def test_prefix_attention_projector_reads_the_prefix_and_ignores_padding():
    torch.manual_seed(0)
    proj = PrefixAttentionOutputProjector(8, C, K, N, num_layers=1, num_heads=4)
    h, prefix = torch.randn(2, K, 8), torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    out = proj(h, prefix, mask)
    assert out.shape == (2, N, C)
    observed = torch.randn(2, 3, 8)
    assert proj(h, prefix, mask, observed).shape == (2, N, C)
    assert not torch.allclose(proj(h, prefix, mask, observed), out, atol=1e-3)
    changed = prefix.clone()
    changed[0, 3:] += 5.0 * torch.randn(2, 8)  # padding of row 0 only
    again = proj(h, changed, mask)
    assert torch.allclose(again[0], out[0], atol=1e-6)
    changed[0, 0] += 5.0 * torch.randn(8)  # a real position
    assert not torch.allclose(proj(h, changed, mask)[0], out[0], atol=1e-3)


@pytest.fixture
def mm(tiny_mm):
    mm = tiny_mm("+modality@modalities.objects=objects", "+modality@modalities.proprio=proprio",
                 modalities=("grid",))
    torch.manual_seed(1)
    graft_output(mm, "act", {"signal_tokens": K, "projector": PREFIX, "observe": ["objects", "proprio"]}, N, C)
    return mm


def example(objects, proprio=None, mission="reach the red target"):
    proprio = np.zeros(6, np.float32) if proprio is None else proprio
    return Example(f"<objects>\n<proprio>\nMission: {mission}", {"objects": objects, "proprio": proprio})


def test_an_observing_head_conditions_on_the_observed_features(mm):
    head = mm.outputs["act"]
    assert head.observed == ["objects", "proprio"] and head.reads_prefix
    a = rows([0.10, 0.0, 1, 0, 0], [-0.1, 0.1, 0, 0, 1])
    b = rows([0.12, 0.0, 1, 0, 0], [-0.1, 0.1, 0, 0, 1])  # the red object moved 2 cm
    with torch.no_grad():
        ca, cb = mm.output_features([example(a), example(b)], "act")
    assert ca.shape == (N, C) and not torch.allclose(ca, cb, atol=1e-4)
    mm.set_trainable("act", "it")  # the head's observation maps train with it; encoders stay frozen
    trainable = {n for n, p in head.named_parameters() if p.requires_grad}
    assert {"observe.objects.weight", "observe.proprio.weight"} <= trainable
    assert not any(p.requires_grad for m in ("objects", "proprio") for p in mm.modalities[m].parameters())
    assert not any(p.requires_grad for m in ("objects", "proprio") for p in mm.projectors[m].parameters())
    mm.set_trainable(None)


def test_an_observing_head_needs_its_observations_and_a_prefix_projector(mm, tiny_mm):
    with pytest.raises(KeyError, match="not a grafted output modality"):
        mm.output_features([example(rows([0.1, 0.0, 1, 0, 0]))], "nope")
    with pytest.raises(ObservationError, match="reads 'objects' directly"):
        mm.output_features([Example("<proprio>\nhi", {"proprio": np.zeros(6, np.float32)})], "act")
    other = tiny_mm("+modality@modalities.objects=objects", modalities=("grid",))
    mlp = {"_target_": "graft.agent.outputs.MLPOutputProjector"}
    with pytest.raises(ValueError, match="prefix_attention"):
        graft_output(other, "act", {"signal_tokens": K, "projector": mlp, "observe": ["objects"]}, N, C)
    with pytest.raises(ValueError, match="not grafted input modalities"):
        graft_output(other, "act2", {"signal_tokens": K, "projector": PREFIX, "observe": ["depth"]}, N, C)


def test_an_observing_head_round_trips_through_a_checkpoint(mm, tmp_path):
    batch = [example(rows([0.1, 0.0, 1, 0, 0], [-0.1, 0.1, 0, 0, 1]))]
    with torch.no_grad():
        want = mm.output_features(batch, "act")
    save_mmllm(mm, tmp_path / "agent")
    loaded = load_mmllm(tmp_path / "agent")
    assert loaded.outputs["act"].observed == ["objects", "proprio"]
    with torch.no_grad():
        assert torch.allclose(loaded.output_features(batch, "act"), want, atol=1e-5)


def test_training_through_an_observing_head_learns_which_object_the_mission_names(mm):
    """Regress the named object's position from the conditioning: only possible by reading the
    mission (through the LLM) and the object rows (observed directly)."""
    head = mm.outputs["act"]
    readout = torch.nn.Linear(N * C, 2)
    params = [p for p in head.parameters()] + list(readout.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=3e-3)
    rng = np.random.default_rng(0)
    colours = {"red": [0.9, 0.1, 0.1], "blue": [0.15, 0.3, 0.95]}

    def batch(n):
        exs, targets = [], []
        for _ in range(n):
            xy = rng.uniform(-0.2, 0.2, (2, 2))
            named = rng.integers(2)
            objects = rows([*xy[0], *colours["red"]], [*xy[1], *colours["blue"]])
            exs.append(example(objects, mission=f"reach the {['red', 'blue'][named]} target"))
            targets.append(xy[named] / 0.2)
        return exs, torch.tensor(np.array(targets), dtype=torch.float32)

    def loss_on(exs, targets):
        return ((readout(mm.output_features(exs, "act").flatten(1)) - targets) ** 2).mean()

    test = batch(32)
    with torch.no_grad():
        before = loss_on(*test).item()
    for _ in range(150):
        loss = loss_on(*batch(16))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = loss_on(*test).item()
    assert after < 0.35 * before, (before, after)
