"""The tiny Chroma files (scripts/make_tiny_checkpoint.py --chroma-dir) through ComfyUI's own loader,
text encoder, sampler and decoder nodes, in-process: the chain the Chroma workflow runs."""

import types

import pytest
import torch
from comfy_inprocess import TINY_CHROMA

CFG = 4.0  # true CFG, as Chroma graphs use
LATENT_SIDE = 8  # 64 px
UNET = TINY_CHROMA["UNETLoader", "unet_name"]
CLIP_L = TINY_CHROMA["CLIPLoader", "clip_name"]
VAE = TINY_CHROMA["VAELoader", "vae_name"]


@pytest.fixture(scope="module")
def chroma(comfy):
    nodes = comfy.nodes
    return types.SimpleNamespace(
        model=nodes.UNETLoader().load_unet(UNET, "default")[0],
        clip=nodes.CLIPLoader().load_clip(CLIP_L, "chroma")[0],
        vae=nodes.VAELoader().load_vae(VAE)[0],
    )


def test_comfyuis_detection_takes_the_diffusion_model_for_chroma(comfy, chroma):
    from comfy import model_detection, supported_models, utils

    path = comfy.folder_paths.get_full_path_or_raise("diffusion_models", UNET)
    detected = model_detection.model_config_from_unet(utils.load_torch_file(path), "")
    assert type(detected) is supported_models.Chroma
    assert type(chroma.model.model.model_config) is supported_models.Chroma


def test_clip_loader_type_chroma_takes_the_clip_l_as_an_sd1_clip_of_77_tokens_of_768(comfy, chroma):
    from comfy import sd1_clip

    conditioning = comfy.nodes.CLIPTextEncode().encode(chroma.clip, "a red fox")[0]
    assert isinstance(chroma.clip.cond_stage_model, sd1_clip.SD1ClipModel)
    assert conditioning[0][0].shape == (1, 77, 768)


def test_ksampler_with_true_cfg_and_the_16_channel_vae_make_finite_images(comfy, chroma):
    encode = comfy.nodes.CLIPTextEncode().encode
    positive, negative = encode(chroma.clip, "a red fox")[0], encode(chroma.clip, "blurry")[0]
    empty = {"samples": torch.zeros(1, 16, LATENT_SIDE, LATENT_SIDE)}  # what EmptySD3LatentImage gives
    latent = comfy.nodes.KSampler().sample(chroma.model, 42, 1, CFG, "euler", "beta", positive, negative, empty)[0]
    image = comfy.nodes.VAEDecode().decode(chroma.vae, latent)[0]
    assert latent["samples"].shape == (1, 16, LATENT_SIDE, LATENT_SIDE)
    assert image.shape == (1, 8 * LATENT_SIDE, 8 * LATENT_SIDE, 3)
    assert torch.isfinite(image).all() and image.std() > 0
