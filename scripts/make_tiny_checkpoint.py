"""Build a tiny SD1.5-architecture checkpoint with seeded random weights.

ComfyUI detects SD1.5 from model_channels=320 and context_dim=768, so the UNet keeps those and
shrinks everything else (two levels, one res block, transformer depth 1). The text encoder is the
real CLIP-L architecture (ComfyUI builds it from a fixed config) and the VAE is embedded as TAESD
(`first_stage_model.taesd_*`), which ComfyUI's VAE loader recognises. Every tensor is written:
ComfyUI leaves weights missing from a file uninitialised.

Run from inside a ComfyUI tree (the provision script does): python make_tiny_checkpoint.py --out F
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.getcwd())
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import comfy.cli_args  # noqa: E402

comfy.cli_args.args.cpu = True  # building weights needs no accelerator

import comfy.sd1_clip  # noqa: E402
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


def write_sd3(path: str) -> None:
    """A tiny SD3-architecture diffusion model for UNETLoader (models/diffusion_models/)."""
    unet = tiny_models.sd3().model.diffusion_model
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_file({k: v.to(torch.float16).contiguous() for k, v in unet.state_dict().items()}, path)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sd3-out", help="also write a tiny SD3 (MMDiT) diffusion model here (a non-UNet family)")
    args = parser.parse_args()
    if args.sd3_out:
        write_sd3(args.sd3_out)
    state = build_state_dict(args.seed)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".partial"
    save_file(state, tmp, metadata={"dnpg": "tiny random SD1.5 test checkpoint"})
    os.replace(tmp, args.out)
    print(f"wrote {args.out}: {sum(t.numel() for t in state.values()) / 1e6:.1f} M parameters")


if __name__ == "__main__":
    main()
