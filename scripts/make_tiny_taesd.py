"""Write tiny TAESD decoder files with seeded random weights, built with ComfyUI's own TAESD class, under
the names ComfyUI looks for in models/vae_approx (taesd_decoder.safetensors, ...). They have the real
architecture (TAESD is already tiny, about 1.2 M parameters per decoder), so they stand in for the
published files in the tests: same shapes and keys, random outputs.

Run from inside a ComfyUI tree (the provision script does): python make_tiny_taesd.py FOLDER
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.getcwd())
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# ComfyUI's image TAESDs: file stem -> latent channels (comfy/latent_formats.py taesd_decoder_name).
DECODERS = {"taesd_decoder": 4, "taesdxl_decoder": 4, "taesd3_decoder": 16, "taef1_decoder": 16}


def tiny_taesd(latent_channels: int, seed: int):
    """ComfyUI's TAESD with seeded random weights (both halves: ComfyUI's VAELoader wants an encoder too)."""
    import comfy.taesd.taesd
    import tiny_models

    taesd = comfy.taesd.taesd.TAESD(latent_channels=latent_channels)
    tiny_models.randomise_(taesd, torch.Generator().manual_seed(seed))
    return taesd


def write_taesd(folder: str, stem: str, seed: int = 0, encoder: bool = False) -> str:
    """`folder`/`stem`.safetensors: the decoder's state dict as published (no prefix); with encoder=True
    also the matching `..._encoder` file. Returns the decoder's path."""
    from safetensors.torch import save_file

    taesd = tiny_taesd(DECODERS[stem], seed)
    os.makedirs(folder, exist_ok=True)
    halves = {stem: taesd.taesd_decoder}
    if encoder:
        halves[stem.replace("_decoder", "_encoder")] = taesd.taesd_encoder
    for name, module in halves.items():
        tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in module.state_dict().items()}
        path = os.path.join(folder, f"{name}.safetensors")
        save_file(tensors, path + ".partial", metadata={"dnpg": "tiny random TAESD (test weights)"})
        os.replace(path + ".partial", path)
    return os.path.join(folder, f"{stem}.safetensors")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", help="the test models' vae_approx folder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # building weights needs no accelerator
    for stem in DECODERS:
        print(f"wrote {write_taesd(args.folder, stem, args.seed)}")


if __name__ == "__main__":
    main()
