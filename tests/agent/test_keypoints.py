"""The `keypoints` modality: frozen soft-argmax coordinates that keep where a coloured blob is."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from graft.agent.build import build_modality
from graft.agent.modalities.keypoints import KeypointsModality
from graft.envs.spec import ObservationError


@pytest.fixture
def keypoints(compose):
    cfg = compose("chat", ["+modality@modalities.keypoints=keypoints"]).modalities.keypoints
    return build_modality("keypoints", cfg)


def blob_image(row: int, col: int, size: int = 64, colour=(230, 25, 25)) -> np.ndarray:
    """A grey image with a small saturated disc centred at pixel (row, col)."""
    img = np.full((size, size, 3), 190, dtype=np.uint8)
    yy, xx = np.mgrid[:size, :size]
    img[(yy - row) ** 2 + (xx - col) ** 2 <= 9] = colour
    return img


def test_shapes_and_reads_rgb(keypoints, rng):
    out = keypoints(np.stack([keypoints.sample(rng), keypoints.sample(rng)]))
    assert out.shape == (2, keypoints.num_keypoints, keypoints.feature_dim)
    assert keypoints.source == "rgb"
    assert torch.isfinite(out).all()
    assert (out[..., :2].abs() <= 1).all()  # coordinates in [-1, 1]


def test_frozen(keypoints):
    params = list(keypoints.parameters())
    assert params and not any(p.requires_grad for p in params)
    keypoints.train()
    assert not keypoints.training


def test_seeded(compose, keypoints, rng):
    cfg = compose("chat", ["+modality@modalities.keypoints=keypoints"]).modalities.keypoints
    again = build_modality("keypoints", cfg)
    img = keypoints.sample(rng)[None]
    assert torch.equal(keypoints(img), again(img))


@pytest.mark.parametrize("bank", ["hue", "random"])
@pytest.mark.parametrize("row,col", [(10, 50), (40, 12), (55, 30)])
def test_soft_argmax_finds_a_bright_blob(row, col, bank):
    keypoints = KeypointsModality(bank=bank)
    out = keypoints(blob_image(row, col)[None])[0]  # (K, F)
    expect = torch.tensor([col, row], dtype=torch.float32) / 63 * 2 - 1  # (x, y) in [-1, 1]
    # Keypoints whose channel responds to the red disc sit on it; the colour under them is the disc's.
    reddish = out[:, 2] > out[:, 3] + 0.5
    assert reddish.any()
    pixel = 2 / 63  # one pixel in [-1, 1] coordinates
    err = (out[reddish, :2] - expect).norm(dim=-1)
    assert err.min() < 1.5 * pixel, (out[:, :6], expect)  # one sits on the disc's centre
    assert err.max() < 6 * pixel, (out[:, :6], expect)  # edge-tuned channels sit on its rim (radius 3 px)


def test_moving_the_blob_moves_the_keypoint(keypoints):
    a = keypoints(blob_image(20, 20)[None])[0]
    b = keypoints(blob_image(20, 44)[None])[0]
    k = int(torch.argmax(a[:, 2] - a[:, 3]))
    assert float(b[k, 0] - a[k, 0]) == pytest.approx(24 / 63 * 2, abs=0.05)
    assert float(b[k, 1]) == pytest.approx(float(a[k, 1]), abs=0.05)


def test_hue_bank_channel_follows_the_colour(keypoints):
    """With the hue bank, channel 0 (hue 0°) finds the red disc wherever it is, next to a blue one."""
    img = blob_image(12, 50)
    yy, xx = np.mgrid[:64, :64]
    img[(yy - 50) ** 2 + (xx - 14) ** 2 <= 9] = (30, 60, 240)
    out = keypoints(img[None])[0]
    assert out[0, :2].tolist() == pytest.approx([50 / 63 * 2 - 1, 12 / 63 * 2 - 1], abs=2 / 63)


def test_bad_input_raises_a_clear_error(keypoints):
    with pytest.raises(ObservationError, match="'keypoints'.*dtype"):
        keypoints(np.zeros((1, 64, 64, 3), dtype=np.float32))
    with pytest.raises(ObservationError, match="'keypoints'.*shape"):
        keypoints(np.zeros((1, 64, 64), dtype=np.uint8))
    with pytest.raises(ValueError, match="expected images"):
        keypoints.encode(torch.zeros(1, 1, 64, 64))
    with pytest.raises(ValueError, match="temperature"):
        KeypointsModality(temperature=0)
    with pytest.raises(ValueError, match="bank"):
        KeypointsModality(bank="learned")
