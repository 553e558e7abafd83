"""The tiny TAESD decoders ComfyUI ships for its live previews (models/vae_approx), as a cheap
differentiable decoder for image losses.

Which decoder: the model's latent format names it (`taesd_decoder_name`: taesd_decoder for SD1.x / SD2.x,
taesdxl_decoder for SDXL, taesd3_decoder for SD3 / SD3.5, taef1_decoder for Flux, Chroma, Lumina2,
HiDream). The file is looked up as ComfyUI's previewer looks it up, and built with ComfyUI's TAESD class
with its scale 1 and shift 0: like the previewer, it decodes the model-space latent x0 directly, which
equals what VAELoader's TAESD (scale and shift from nodes.py load_taesd) gives for the raw latent
(process_out(x0)), since TAESD.decode computes taesd_decoder((latent - shift) * scale) = x0.
"""

import comfy.model_management as mm
import comfy.model_patcher
import comfy.taesd.taesd
import folder_paths
import torch

from .differentiable import call_differentiably
from .families import model_family

FOLDER = "vae_approx"
REPOSITORY = "https://github.com/madebyollin/taesd"
# The image TAESDs ComfyUI's README sends users to (each file also comes as .safetensors there).
PUBLISHED = ("taesd_decoder", "taesdxl_decoder", "taesd3_decoder", "taef1_decoder")
ALTERNATIVES = (
    "Choose decoder = vae (exact; connect the checkpoint's VAE) or decoder = latent preview (cheap, approximate "
    "colours)."
)


def download_link(stem: str) -> str:
    return f"{REPOSITORY}/raw/main/{stem}.pth" if stem in PUBLISHED else REPOSITORY


def decoder_stem(model) -> str:
    """The TAESD decoder file stem for `model`'s latent format, or a clear error where it has none."""
    import latent_preview

    latent_format = model.get_model_object("latent_format")
    stem = getattr(latent_format, "taesd_decoder_name", None)
    family = type(latent_format).__name__
    if stem is None:
        raise ValueError(
            f"Loss Guidance: decoder = taesd: ComfyUI has no tiny TAESD decoder for the latents of this model "
            f"({model_family(model)}, latent format {family}). {ALTERNATIVES}"
        )
    if stem in getattr(latent_preview, "VIDEO_TAES", ()):
        raise ValueError(
            f"Loss Guidance: decoder = taesd: the latents of this model ({model_family(model)}, latent format "
            f"{family}: Qwen-Image, Wan, Cosmos Predict2, HunyuanVideo) have only a video tiny decoder ({stem}) in "
            f"ComfyUI, which Loss Guidance does not use. {ALTERNATIVES}"
        )
    return stem


def find_decoder(stem: str) -> str:
    """The path of `stem`.* in ComfyUI's vae_approx folders (.safetensors first), or an error saying
    which file to download from where and where to put it."""
    names = sorted(
        (name for name in folder_paths.get_filename_list(FOLDER) if name.startswith(f"{stem}.")),
        key=lambda name: not name.endswith(".safetensors"),
    )
    if not names:
        folders = ", ".join(folder_paths.get_folder_paths(FOLDER))
        raise ValueError(
            f"Loss Guidance: decoder = taesd needs {stem}.pth (or {stem}.safetensors) in ComfyUI's models/"
            f"{FOLDER} folder ({folders}). Download it from {download_link(stem)} and put it there (it is the "
            f"tiny decoder ComfyUI also uses for TAESD previews, about 5 MB). {ALTERNATIVES}"
        )
    return folder_paths.get_full_path_or_raise(FOLDER, names[0])


def load_decoder(model):
    """ComfyUI's TAESD for `model`'s latents, in a ModelPatcher (ComfyUI's memory management loads it
    with the MODEL it is attached to)."""
    stem = decoder_stem(model)
    path = find_decoder(stem)
    channels = model.get_model_object("latent_format").latent_channels
    load_device, offload_device = mm.get_torch_device(), mm.vae_offload_device()
    try:
        with torch.inference_mode(False):
            taesd = comfy.taesd.taesd.TAESD(None, path, latent_channels=channels)
    except RuntimeError as error:
        raise ValueError(
            f"Loss Guidance: {path} is not a TAESD decoder for {channels}-channel latents ({error}). Download "
            f"{stem} again from {download_link(stem)}."
        ) from error
    dtype = mm.vae_dtype(load_device, [torch.bfloat16, torch.float32])  # as ComfyUI's VAE picks its dtype
    taesd = taesd.eval().requires_grad_(False).to(offload_device, dtype)
    return comfy.model_patcher.ModelPatcher(taesd, load_device=load_device, offload_device=offload_device)


def taesd_decoder(patcher):
    """x0 (model space, (B, C, h, w)) -> RGB in [0, 1], (B, 3, 8h, 8w), through the TAESD in `patcher`,
    differentiable; clamped to [0, 1] as ComfyUI's VAE.decode clamps."""

    def decode(x0: torch.Tensor) -> torch.Tensor:
        module = patcher.model
        weight = module.taesd_decoder[1].weight  # wherever ComfyUI has put the decoder
        image = call_differentiably(module, module.decode, x0.to(weight.device, weight.dtype))
        return (image.float() * 0.5 + 0.5).clamp(0.0, 1.0).to(x0.device)

    return decode
