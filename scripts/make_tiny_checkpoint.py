"""Build a tiny SD1.5-architecture checkpoint with seeded random weights (and, on request, a tiny
all-in-one SD3.5-Medium-style checkpoint and the separate files of a tiny Chroma: diffusion model,
text encoder, VAE).

ComfyUI detects SD1.5 from model_channels=320 and context_dim=768, so the UNet keeps those and
shrinks everything else (two levels, one res block, transformer depth 1). The text encoder is the
real CLIP-L architecture (ComfyUI builds it from a fixed config) and the VAE is embedded as TAESD
(`first_stage_model.taesd_*`), which ComfyUI's VAE loader recognises. Every tensor is written:
ComfyUI leaves weights missing from a file uninitialised.

Run from inside a ComfyUI tree (the provision script does): python make_tiny_checkpoint.py --out F
"""

import argparse
import functools
import os
import sys

import torch

sys.path.insert(0, os.getcwd())
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import comfy.cli_args  # noqa: E402

comfy.cli_args.args.cpu = True  # building weights needs no accelerator

import comfy.model_detection  # noqa: E402
import comfy.sd1_clip  # noqa: E402
import comfy.supported_models  # noqa: E402
import comfy.taesd.taesd  # noqa: E402
import tiny_models  # noqa: E402
from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

TINY_UNET_CONFIG = {
    "image_size": 32,
    "in_channels": 4,
    "out_channels": 4,
    "model_channels": 320,
    "num_res_blocks": [1, 1],
    "channel_mult": [1, 2],
    "transformer_depth": [1, 1],
    "transformer_depth_output": [1, 1, 1, 1],
    "transformer_depth_middle": 1,
    "num_heads": 8,
    "context_dim": 768,
    "use_spatial_transformer": True,
    "use_linear_in_transformer": False,
    "legacy": False,
}


def build_state_dict(seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    unet = UNetModel(**TINY_UNET_CONFIG)
    clip = comfy.sd1_clip.SDClipModel(dtype=torch.float32)
    taesd = comfy.taesd.taesd.TAESD()
    parts = (("model.diffusion_model.", unet), ("cond_stage_model.", clip), ("first_stage_model.", taesd))
    state = {}
    for prefix, module in parts:
        tiny_models.randomise_(module, generator)
        for key, tensor in module.state_dict().items():
            state[prefix + key] = tensor.detach().to(torch.float16).contiguous()
    state["first_stage_model.vae_scale"] = torch.tensor(1.0, dtype=torch.float16)
    state["first_stage_model.vae_shift"] = torch.tensor(0.0, dtype=torch.float16)
    return state


CHROMA_FILES = {
    "diffusion_models": "dnpg_tiny_chroma.safetensors",
    "text_encoders": "dnpg_tiny_clip_l.safetensors",
    "vae": "dnpg_tiny_flux_vae.safetensors",
}
CLIP_PREFIX = "cond_stage_model.transformer."
TAEF1_SCALE, TAEF1_SHIFT = 0.3611, 0.1159  # what ComfyUI's VAELoader gives its taef1 (nodes.py, load_taesd)


def chroma_config():
    """ComfyUI's own config for the smallest Chroma its detection accepts, from the keys it reads.

    comfy/model_detection.py fixes 24 heads of 128 (hidden size 3072) and the approximator (5 layers
    of 5120), counts the double and single blocks, and takes the text width from txt_in.weight: one
    double block, no single blocks and a 768-wide text input (a CLIP-L conditions it)."""
    meta = functools.partial(torch.empty, device="meta")
    sketch = {
        "double_blocks.0.img_attn.norm.key_norm.scale": meta(128),
        "distilled_guidance_layer.norms.0.scale": meta(5120),
        "img_in.weight": meta(3072, 64),
        "txt_in.weight": meta(3072, 768),
    }
    return comfy.model_detection.model_config_from_unet(sketch, "")


def published_chroma_keys(network: torch.nn.Module) -> dict:
    """The state dict with its RMSNorm gains named `.scale`, as in Chroma's published files: ComfyUI
    0.3.75 reads only `.scale`; 0.33.0's RMSNorm calls them `.weight` and renames `.scale` on load."""
    rms_norms = {name for name, module in network.named_modules() if type(module).__name__ == "RMSNorm"}
    state = {}
    for key, tensor in network.state_dict().items():
        module, _, name = key.rpartition(".")
        state[f"{module}.scale" if module in rms_norms and name == "weight" else key] = tensor
    return state


def save_fp16(state: dict, path: str, what: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".partial"
    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in state.items()}
    save_file(tensors, tmp, metadata={"dnpg": what})
    os.replace(tmp, path)
    print(f"wrote {path}: {sum(t.numel() for t in tensors.values()) / 1e6:.1f} M parameters")


# SD3.5 Medium's MMDiT-X (RMS q/k norm; the extra image self-attention, which Medium has in its first 13
# of 24 blocks, here in both) at the size of tiny_models.SD3_MMDIT, with the widths SD3's text encoder
# gives: 4096-wide token embeddings (CLIP-L zero-padded when CLIP-G and T5 are absent) and a 2048-wide
# pooled vector (CLIP-L's 768, zeros for CLIP-G's 1280).
SD35_MEDIUM_MMDIT = dict(
    tiny_models.SD3_MMDIT,
    qk_norm="rms",
    x_block_self_attn_layers=[0, 1],
    adm_in_channels=2048,
    context_embedder_config={"target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": 128}},
)
TAESD3_SCALE, TAESD3_SHIFT = 1.5305, 0.0609  # what ComfyUI's VAELoader gives its taesd3 (nodes.py, load_taesd)


def taesd_16(generator: torch.Generator, scale: float, shift: float) -> dict:
    """A random 16-channel TAESD's weights with its latent scale and shift."""
    taesd = comfy.taesd.taesd.TAESD(latent_channels=16)
    tiny_models.randomise_(taesd, generator)
    return dict(taesd.state_dict(), vae_scale=torch.tensor(scale), vae_shift=torch.tensor(shift))


def sd1_clip_l(checkpoint_state: dict) -> dict:
    """The tiny SD1.5 checkpoint's CLIP-L, without its prefix."""
    return {k[len(CLIP_PREFIX) :]: v for k, v in checkpoint_state.items() if k.startswith(CLIP_PREFIX)}


def write_sd35_medium(path: str, seed: int, checkpoint_state: dict) -> None:
    """A tiny all-in-one SD3.5-Medium-style checkpoint for CheckpointLoaderSimple, laid out as
    Comfy-Org's sd3.5_medium_incl_clips_t5xxlfp8scaled.safetensors: the MMDiT-X under
    `model.diffusion_model.`, the SD1.5 checkpoint's CLIP-L as SD3's `text_encoders.clip_l.` (the
    loader builds SD3's text encoder with just CLIP-L when no CLIP-G or T5 keys are there) and a
    16-channel TAESD under `first_stage_model.` (ComfyUI's VAE reads the latent channels from
    taesd_decoder.1.weight)."""
    generator = torch.Generator().manual_seed(seed)
    network = tiny_models.patcher(comfy.supported_models.SD3(dict(SD35_MEDIUM_MMDIT)), generator).model
    parts = (
        ("model.diffusion_model.", network.diffusion_model.state_dict()),
        ("text_encoders.clip_l.transformer.", sd1_clip_l(checkpoint_state)),
        ("first_stage_model.", taesd_16(generator, TAESD3_SCALE, TAESD3_SHIFT)),
    )
    state = {prefix + key: tensor for prefix, part in parts for key, tensor in part.items()}
    save_fp16(state, path, "tiny random SD3.5-Medium-style checkpoint (MMDiT-X, CLIP-L, 16-channel TAESD)")


def write_chroma(models_dir: str, seed: int, checkpoint_state: dict) -> None:
    """The tiny Chroma set under models_dir: the diffusion model for UNETLoader, the SD1.5 checkpoint's
    CLIP-L for CLIPLoader (type chroma falls back to an SD1 CLIP for it) and a 16-channel TAESD for
    VAELoader (ComfyUI reads the latent channels from taesd_decoder.1.weight)."""
    generator = torch.Generator().manual_seed(seed)

    def path(folder: str) -> str:
        return os.path.join(models_dir, folder, CHROMA_FILES[folder])

    model = chroma_config().get_model({})
    tiny_models.randomise_(model, generator)
    save_fp16(published_chroma_keys(model.diffusion_model), path("diffusion_models"), "tiny random Chroma")
    save_fp16(sd1_clip_l(checkpoint_state), path("text_encoders"), "the tiny SD1.5 checkpoint's CLIP-L")
    save_fp16(taesd_16(generator, TAEF1_SCALE, TAEF1_SHIFT), path("vae"), "tiny random 16-channel TAESD (Flux latents)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--sd35-out", help="also write a tiny all-in-one SD3.5-Medium-style checkpoint here (CheckpointLoaderSimple)"
    )
    parser.add_argument(
        "--chroma-dir",
        help="also write the tiny Chroma set under this models folder: "
        + ", ".join(f"{folder}/{name}" for folder, name in CHROMA_FILES.items()),
    )
    args = parser.parse_args()
    state = build_state_dict(args.seed)
    save_fp16(state, args.out, "tiny random SD1.5 test checkpoint")
    if args.sd35_out:
        write_sd35_medium(args.sd35_out, args.seed, state)
    if args.chroma_dir:
        write_chroma(args.chroma_dir, args.seed, state)


if __name__ == "__main__":
    main()
