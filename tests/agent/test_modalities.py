"""Modality encoders are frozen, and bad observations raise errors that name the modality and spec."""
from __future__ import annotations

import numpy as np
import pytest
from graft.agent.build import build_modality
from graft.curricula.config import group_options
from graft.envs.spec import ObservationError


@pytest.fixture(params=group_options("modality"))
def modality(request, compose, tiny_mm):
    cfg = compose("chat", [f"+modality@modalities.m={request.param}"]).modalities.m
    built = build_modality(request.param, cfg)
    if hasattr(built, "bind"):  # an encoder that reads the LLM's vocabulary (grid_words)
        built.bind(tiny_mm())
    return built


def test_encoder_is_frozen_and_stays_in_eval_mode(modality):
    modality.train()
    assert not modality.training
    assert all(not p.requires_grad for p in modality.parameters())


def test_features_do_not_track_gradients(modality, rng):
    assert not modality(modality.sample(rng)[None]).requires_grad


def test_wrong_dtype_names_modality_and_spec(modality, rng):
    bad = modality.sample(rng).astype(np.float64)
    with pytest.raises(ObservationError, match=f"'{modality.name}'.*dtype"):
        modality(bad[None])


def test_wrong_shape_names_modality_and_spec(modality, rng):
    bad = modality.sample(rng)[..., :1] if modality.name != "proprio" else modality.sample(rng)[:2]
    if modality.name == "depth":
        bad = modality.sample(rng)[None]  # 3-D where 2-D is expected
    with pytest.raises(ObservationError, match=f"'{modality.name}'.*shape"):
        modality(bad[None])


def test_nan_is_rejected_for_float_modalities(compose, rng):
    depth = build_modality("depth", compose("chat", ["+modality@modalities.depth=depth"]).modalities.depth)
    bad = depth.sample(rng)
    bad[3, 3] = np.nan
    with pytest.raises(ObservationError, match="'depth'.*NaN"):
        depth(bad[None])


def test_grid_index_out_of_range_is_rejected(compose, rng):
    grid = build_modality("grid", compose("chat").modalities.grid)
    bad = grid.sample(rng)
    bad[0, 0, 1] = 9  # colour index; MiniGrid has 6 colours
    with pytest.raises(ObservationError, match="colour index 9"):
        grid(bad[None])
