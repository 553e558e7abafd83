"""The tiny all-in-one SD3.5 Medium checkpoint (scripts/make_tiny_checkpoint.py --sd35-out) through
ComfyUI's own checkpoint loader, text encoder, sampler and decoder nodes, in-process: the chain the
SD3.5 S-CFG workflow runs."""

import types

import pytest
import torch
from comfy_inprocess import TINY_SD35

CFG = 4.5
LATENT_SIDE = 8  # 64 px
CHECKPOINT = TINY_SD35["CheckpointLoaderSimple", "ckpt_name"]


@pytest.fixture(scope="module")
def sd35(comfy):
    model, clip, vae = comfy.nodes.CheckpointLoaderSimple().load_checkpoint(CHECKPOINT)[:3]
    return types.SimpleNamespace(model=model, clip=clip, vae=vae)


def test_the_checkpoint_loader_takes_it_for_sd3_with_sd35_mediums_mmdit_x(comfy, sd35):
    from comfy import supported_models

    config = sd35.model.model.model_config
    assert type(config) is supported_models.SD3
    assert config.unet_config["qk_norm"] == "rms"
    assert config.unet_config["x_block_self_attn_layers"] == [0, 1]


def test_sd3s_text_encoder_runs_on_clip_l_alone_padded_to_4096_with_a_2048_pooled_vector(comfy, sd35):
    encoder = sd35.clip.cond_stage_model
    conditioning = comfy.nodes.CLIPTextEncode().encode(sd35.clip, "a red fox and an owl")[0]
    assert encoder.clip_l is not None and encoder.clip_g is None and encoder.t5xxl is None
    tokens, extras = conditioning[0]
    assert tokens.shape == (1, 77, 4096)
    assert torch.count_nonzero(tokens[..., 768:]) == 0
    assert extras["pooled_output"].shape == (1, 2048)


def test_ksampler_and_the_16_channel_vae_make_finite_images(comfy, sd35):
    encode = comfy.nodes.CLIPTextEncode().encode
    positive, negative = encode(sd35.clip, "a red fox and an owl")[0], encode(sd35.clip, "")[0]
    empty = {"samples": torch.zeros(1, 16, LATENT_SIDE, LATENT_SIDE)}  # what EmptySD3LatentImage gives
    sampler = comfy.nodes.KSampler()
    latent = sampler.sample(sd35.model, 42, 2, CFG, "euler", "sgm_uniform", positive, negative, empty)[0]
    image = comfy.nodes.VAEDecode().decode(sd35.vae, latent)[0]
    assert latent["samples"].shape == (1, 16, LATENT_SIDE, LATENT_SIDE)
    assert image.shape == (1, 8 * LATENT_SIDE, 8 * LATENT_SIDE, 3)
    assert torch.isfinite(image).all() and image.std() > 0
