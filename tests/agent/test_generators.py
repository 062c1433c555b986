"""Image and action generators: shapes, learning, seeded sampling, diffusers round trips, frozen encoders."""
from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf
import torch
from graft.agent.generators import build_generator, load_generator
from graft.agent.generators.unet1d import ConditionalUnet1D

VAE = {"block_out_channels": [16, 32], "down_block_types": ["DownEncoderBlock2D"] * 2,
       "up_block_types": ["UpDecoderBlock2D"] * 2, "latent_channels": 4, "norm_num_groups": 8, "layers_per_block": 1}


@pytest.fixture(scope="module")
def cfgs():
    from graft.curricula.config import compose_config

    g = compose_config("onboard", ["generators.image.image_size=16"]).generators
    return OmegaConf.create({"goal_image": g.image, "action_chunk": g.action})


@pytest.fixture
def image_gen(cfgs):
    return build_generator(cfgs.goal_image)


@pytest.fixture
def action_gen(cfgs):
    return build_generator(cfgs.action_chunk)


def images(n=4, size=28, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def chunks(gen, n=4, seed=0):
    return np.random.default_rng(seed).uniform(-0.8, 0.8, (n, gen.horizon, gen.action_dim)).astype(np.float32)


def cond_for(gen, n=4, seed=0):
    return torch.randn(n, gen.cond_tokens, gen.cond_dim, generator=torch.Generator().manual_seed(seed))


def same_samples(loaded, gen, cond):
    """A reloaded generator samples what the original does (a reloaded diffusers model may take another
    oneDNN kernel path, so latents agree to float precision and uint8 images to one level)."""
    torch.testing.assert_close(loaded.sample(cond, steps=2, seed=3), gen.sample(cond, steps=2, seed=3), atol=1e-5, rtol=0)
    a, b = loaded.generate(cond, steps=2, seed=3), gen.generate(cond, steps=2, seed=3)
    assert np.abs(a.astype(np.float64) - b).max() <= (1 if a.dtype == np.uint8 else 1e-5)


def fit_steps(gen, target, cond, steps):
    opt = torch.optim.AdamW(gen.trainable_parameters(), lr=3e-3)
    noise = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(steps):
        noise.manual_seed(0)  # the same noise and timesteps every step: a fixed batch
        loss = gen.loss(target, cond, generator=noise)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


# ---- image --------------------------------------------------------------------------------------
def test_image_generator_shapes(image_gen):
    cond = image_gen.encode_condition(["a red ball ahead", "a wall"])
    assert cond.shape == (2, image_gen.cond_tokens, image_gen.cond_dim) == (2, 16, 64)
    out = image_gen.generate(cond, steps=2)
    assert out.shape == (2, 16, 16, 3) and out.dtype == np.uint8
    assert image_gen.to_model_space(images()).shape == (4, 3, 16, 16)  # 28x28 inputs resized


def test_image_loss_falls_on_a_fixed_batch(image_gen):
    cond = image_gen.encode_condition(["a red ball ahead"] * 4)
    losses = fit_steps(image_gen, images(), cond, 12)
    assert losses[-1] < 0.7 * losses[0]


@pytest.mark.parametrize("sampler", ["ddim", "dpm"])
def test_few_step_sampling_is_deterministic_for_a_seed(cfgs, sampler):
    gen = build_generator({**cfgs.goal_image, "sampler": sampler})
    cond = gen.encode_condition(["a red ball ahead", "a wall"])
    a, b = gen.generate(cond, steps=3, seed=7), gen.generate(cond, steps=3, seed=7)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, gen.generate(cond, steps=3, seed=8))


def test_image_generator_saves_in_diffusers_layout_and_loads_by_path(image_gen, tmp_path):
    from diffusers import UNet2DConditionModel

    fit_steps(image_gen, images(), image_gen.encode_condition(["x"] * 4), 2)  # not the init weights
    image_gen.save_pretrained(tmp_path / "gen")
    for sub in ("unet", "scheduler", "text_encoder", "tokenizer"):
        assert (tmp_path / "gen" / sub).is_dir()
    assert isinstance(UNet2DConditionModel.from_pretrained(tmp_path / "gen", subfolder="unet"), UNet2DConditionModel)
    loaded = load_generator(tmp_path / "gen")
    cond = image_gen.encode_condition(["a red ball ahead"])
    assert torch.equal(loaded.encode_condition(["a red ball ahead"]), cond)
    same_samples(loaded, image_gen, cond)


def test_latent_diffusion_through_a_frozen_vae_round_trips(cfgs, tmp_path):
    gen = build_generator({**cfgs.goal_image, "vae": VAE})
    assert gen.sample_shape == (4, 8, 8) and gen.image_size == 16
    assert not any(p.requires_grad for p in gen.vae.parameters())
    cond = gen.encode_condition(["a wall"])
    out = gen.generate(cond, steps=2, seed=1)
    assert out.shape == (1, 16, 16, 3)
    gen.save_pretrained(tmp_path / "latent")
    same_samples(load_generator(tmp_path / "latent"), gen, cond)


def test_a_stable_diffusion_pipeline_folder_loads_by_path(cfgs, tmp_path):
    from diffusers import StableDiffusionPipeline
    from graft.agent.generators.image import ImageGenerator

    # settings the SD pipeline would otherwise rewrite as legacy (steps_offset, clip_sample)
    scheduler = {**cfgs.goal_image.scheduler, "steps_offset": 1, "clip_sample": False}
    gen = build_generator({**cfgs.goal_image, "vae": VAE, "scheduler": scheduler})
    pipe = StableDiffusionPipeline(vae=gen.vae, text_encoder=gen.text_encoder, tokenizer=gen.tokenizer, unet=gen.unet,
                                   scheduler=gen.scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(tmp_path / "sd")  # diffusers' own writer: model_index.json + subfolders
    assert (tmp_path / "sd" / "model_index.json").is_file()
    loaded = ImageGenerator.from_pretrained(tmp_path / "sd", sample_steps=2)
    assert loaded.vae is not None and loaded.image_size == 16
    same_samples(loaded, gen, gen.encode_condition(["a wall"]))


def test_text_encoder_stays_frozen_and_bit_identical_through_training(image_gen):
    before = {n: p.detach().clone() for n, p in image_gen.text_encoder.named_parameters()}
    unet_before = next(image_gen.unet.parameters()).detach().clone()
    image_gen.train()
    assert not image_gen.text_encoder.training  # frozen encoders stay in eval mode
    assert all(p.requires_grad for p in image_gen.trainable_parameters())
    assert not any(p.requires_grad for p in image_gen.text_encoder.parameters())
    fit_steps(image_gen, images(), image_gen.encode_condition(["a wall"] * 4), 2)
    assert all(torch.equal(before[n], p) for n, p in image_gen.text_encoder.named_parameters())
    assert not torch.equal(unet_before, next(image_gen.unet.parameters()))


def test_wrong_images_and_conditioning_name_what_was_expected(image_gen):
    cond = image_gen.encode_condition(["x"])
    with pytest.raises(ValueError, match=r"expected uint8 images \(B, H, W, 3\), got uint8 of shape \(4, 28, 28\)"):
        image_gen.loss(images()[..., 0], cond)
    with pytest.raises(ValueError, match=r"got float32"):
        image_gen.loss(images().astype(np.float32), cond)
    with pytest.raises(ValueError, match=r"expected conditioning \(B, 16, 64\), got shape \(1, 4, 64\)"):
        image_gen.generate(cond[:, :4])


# ---- action -------------------------------------------------------------------------------------
def test_action_generator_shapes_and_normalisation(action_gen):
    data = chunks(action_gen, 8) * np.array([2.0, 0.5], dtype=np.float32)
    action_gen.fit(data)
    x = action_gen.to_model_space(data)
    assert x.shape == (8, 16, 2) and x.abs().max() <= 1.0
    np.testing.assert_allclose(x.numpy(), action_gen.normalizer.normalize(data), atol=1e-6)
    out = action_gen.generate(cond_for(action_gen, 3), steps=2)
    assert out.shape == (3, 16, 2) and out.dtype == np.float32
    assert np.all(out >= action_gen.normalizer.low - 1e-5) and np.all(out <= action_gen.normalizer.high + 1e-5)


def test_action_loss_falls_and_sampling_is_seeded(action_gen):
    cond = cond_for(action_gen)
    losses = fit_steps(action_gen, chunks(action_gen), cond, 15)
    assert losses[-1] < 0.6 * losses[0]
    a = action_gen.generate(cond, steps=3, seed=5)
    assert np.array_equal(a, action_gen.generate(cond, steps=3, seed=5))
    assert not np.array_equal(a, action_gen.generate(cond, steps=3, seed=6))


def test_action_generator_round_trips_with_its_statistics(action_gen, tmp_path):
    action_gen.fit(chunks(action_gen, 8) * 3)
    fit_steps(action_gen, chunks(action_gen), cond_for(action_gen), 2)
    action_gen.save_pretrained(tmp_path / "act")
    assert (tmp_path / "act" / "action_stats.json").is_file()
    loaded = load_generator(tmp_path / "act")
    np.testing.assert_array_equal(loaded.normalizer.high, action_gen.normalizer.high)
    same_samples(loaded, action_gen, cond_for(action_gen, 2))


def test_wrong_chunks_name_the_expected_shape(action_gen):
    with pytest.raises(ValueError, match=r"expected float action chunks \(B, 16, 2\).*got float32 of shape \(4, 8, 2\)"):
        action_gen.loss(chunks(action_gen)[:, :8], cond_for(action_gen))
    with pytest.raises(ValueError, match=r"got int64"):
        action_gen.loss(np.zeros((4, 16, 2), dtype=np.int64), cond_for(action_gen))
    with pytest.raises(ValueError, match=r"expected conditioning \(B, 2, 64\)"):
        action_gen.generate(torch.zeros(1, 3, 64))


def test_unet1d_film_conditioning_changes_the_output_and_checks_the_horizon():
    torch.manual_seed(0)
    unet = ConditionalUnet1D(horizon=8, channels=(16, 32), cond_tokens=1, cond_dim=8, time_embed_dim=16)
    x, t = torch.randn(2, 8, 2), torch.tensor([3, 50])
    a, b = unet(x, t, torch.zeros(2, 1, 8)), unet(x, t, torch.ones(2, 1, 8))
    assert a.shape == (2, 8, 2) and not torch.allclose(a, b)
    with pytest.raises(ValueError, match="horizon 10 must be divisible by 2"):
        ConditionalUnet1D(horizon=10, channels=(16, 32, 64))


def test_shared_noise_makes_each_row_independent_of_its_batch(action_gen):
    cond = cond_for(action_gen, 3)
    batched = action_gen.sample(cond, steps=3, seed=5, shared_noise=True)  # (3, H, A)
    for i in range(3):
        alone = action_gen.sample(cond[i:i + 1], steps=3, seed=5)
        torch.testing.assert_close(batched[i:i + 1], alone, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(batched[0], batched[1])  # same noise, different conditioning
    action_gen.sampler = "ddpm"
    try:
        with pytest.raises(ValueError, match="ddim or dpm"):
            action_gen.sample(cond, steps=3, shared_noise=True)
    finally:
        action_gen.sampler = "ddim"
