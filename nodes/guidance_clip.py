"""The CLIP models CLIP Text Loss and CLIP Image Loss run on the decoded image: the Guidance CLIP (a
transformers CLIPModel, loaded by the Guidance CLIP Loader node) and ComfyUI's CLIP_VISION, each as a
differentiable image embedder with CLIP's preprocessing (Radford et al., 2021; github.com/openai/CLIP)."""

import os
from dataclasses import dataclass

import comfy.model_management as mm
import comfy.model_patcher
import torch
import torch.nn.functional as F

from . import model_checks, model_files
from .clip_vision_grad import comfy_clip_vision_projection
from .differentiable import call_differentiably

CATEGORY = "DNP Guidance/Loss Guidance"
GUIDANCE_CLIP = "DNPG_GUIDANCE_CLIP"
CLIP_FOLDER = "clip_guidance"
KNOWN_CLIPS = ("openai/clip-vit-base-patch32", "openai/clip-vit-base-patch16", "openai/clip-vit-large-patch14")
CLIP_FILES = "config.json, model.safetensors, tokenizer.json (or vocab.json and merges.txt), preprocessor_config.json"
OPENAI_MEAN, OPENAI_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)

model_files.register_folder(CLIP_FOLDER)


@dataclass
class GuidanceClip:
    """A transformers CLIPModel for losses (the DNPG_GUIDANCE_CLIP type), managed by ComfyUI."""

    name: str
    patcher: object
    tokenizer: object
    image_size: int
    mean: tuple
    std: tuple
    dtype: torch.dtype


def clip_choices() -> list:
    return sorted(set(model_files.local_models(CLIP_FOLDER)) | set(KNOWN_CLIPS))


def _preprocessor_stats(path: str) -> tuple:
    config_path = os.path.join(path, "preprocessor_config.json")
    if not os.path.isfile(config_path):
        return OPENAI_MEAN, OPENAI_STD
    config = model_checks.read_json(config_path, "Guidance CLIP")
    return tuple(config.get("image_mean", OPENAI_MEAN)), tuple(config.get("image_std", OPENAI_STD))


def load_guidance_clip(name: str, dtype: str = "auto") -> GuidanceClip:
    import transformers

    path = model_files.resolve(CLIP_FOLDER, name, CLIP_FILES)
    what = f"Guidance CLIP '{name}'"
    model_checks.check_json_files(path, what)
    family = model_checks.read_json(os.path.join(path, "config.json"), what).get("model_type", "")
    if family != "clip":
        raise ValueError(f"{what} at {path} is a '{family}' model; the loader needs a CLIP model.")
    model_files.require_safetensors(path, name)
    model_checks.require_complete(path, what, model_checks.hub_page(name), needs_image_processor=False)
    load_device, offload_device = mm.get_torch_device(), mm.unet_offload_device()
    torch_dtype = model_files.pick_dtype(dtype, load_device)
    try:
        with torch.inference_mode(False):  # plain tensors: the loss backpropagates through this model
            model = transformers.CLIPModel.from_pretrained(
                path, dtype=torch_dtype, use_safetensors=True, local_files_only=True, trust_remote_code=False
            )
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    except Exception as error:
        raise ValueError(
            f"Guidance CLIP '{name}': could not load the files in {path} ({type(error).__name__}: {error}). "
            "Delete that folder and download the model again."
        ) from error
    model_checks.require_distinct_tokens(tokenizer, what, path)
    model = model.eval().requires_grad_(False)
    patcher = comfy.model_patcher.ModelPatcher(
        model_files.ManagedModule(model.to(offload_device)), load_device=load_device, offload_device=offload_device
    )
    mean, std = _preprocessor_stats(path)
    return GuidanceClip(name, patcher, tokenizer, model.config.vision_config.image_size, mean, std, torch_dtype)


def clip_pixels(images: torch.Tensor, size: int, mean: tuple, std: tuple) -> torch.Tensor:
    """CLIP preprocessing, differentiable: shorter side to `size` (bicubic), centre crop, normalise.
    images: (B, 3, H, W) in [0, 1]."""
    height, width = images.shape[-2:]
    ratio = size / min(height, width)
    resized = F.interpolate(
        images, size=(max(size, round(height * ratio)), max(size, round(width * ratio))), mode="bicubic"
    )
    top, left = (resized.shape[-2] - size) // 2, (resized.shape[-1] - size) // 2
    cropped = resized[..., top : top + size, left : left + size]
    mean_t = torch.tensor(mean, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (cropped - mean_t) / std_t


def guidance_clip_image_embedder(clip: GuidanceClip):
    def embed(images: torch.Tensor) -> torch.Tensor:
        model = clip.patcher.model.inner
        pixels = clip_pixels(images, clip.image_size, clip.mean, clip.std)
        pixels = pixels.to(clip.patcher.load_device, clip.dtype)

        def project(values):
            return model.visual_projection(model.vision_model(pixel_values=values).pooler_output)

        return call_differentiably(model, project, pixels).float().to(images.device)

    return embed


def clip_vision_image_embedder(clip_vision):
    """The same for ComfyUI's CLIP_VISION (Load CLIP Vision): its projected image embedding."""
    if getattr(clip_vision.model.vision_model, "output_layernorm", False):
        raise ValueError("CLIP Image Loss: clip_vision is a SigLIP model; connect a CLIP vision model (ViT-L/H/G).")

    def embed(images: torch.Tensor) -> torch.Tensor:
        model = clip_vision.model
        pixels = clip_pixels(images, clip_vision.image_size, clip_vision.image_mean, clip_vision.image_std)
        pixels = pixels.to(clip_vision.load_device, clip_vision.dtype)
        out = call_differentiably(model, lambda values: comfy_clip_vision_projection(model, values), pixels)
        return out.float().to(images.device)

    return embed


def clip_text_embedding(clip: GuidanceClip, text: str) -> torch.Tensor:
    mm.load_models_gpu([clip.patcher])
    model = clip.patcher.model.inner
    limit = model.config.text_config.max_position_embeddings
    tokens = clip.tokenizer([text], padding=True, truncation=True, max_length=limit, return_tensors="pt")
    tokens = {key: value.to(clip.patcher.load_device) for key, value in tokens.items()}
    with torch.no_grad():
        return model.text_projection(model.text_model(**tokens).pooler_output).float().cpu()


def image_embedding(embed, images: torch.Tensor, patcher) -> torch.Tensor:
    """The embedding of ComfyUI IMAGEs (B, H, W, C) without gradients (a reference); `patcher` holds the model."""
    mm.load_models_gpu([patcher])
    with torch.no_grad():
        return embed(images[..., :3].movedim(-1, 1).float()).cpu()


class GuidanceClipLoader:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "clip_name": (
                    clip_choices(),
                    {
                        "tooltip": "A transformers CLIP model folder in models/clip_guidance/, or a Hugging Face id "
                        "to download there when online (safetensors only)."
                    },
                ),
                "dtype": (
                    list(model_files.DTYPES),
                    {"tooltip": "Weights' precision; auto = fp16 on GPUs that support it, fp32 on CPU."},
                ),
            }
        }

    RETURN_TYPES = (GUIDANCE_CLIP,)
    OUTPUT_TOOLTIPS = ("The CLIP model, for CLIP Text Loss and CLIP Image Loss.",)
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Loads a CLIP model (image and text towers, transformers format) for CLIP losses. Weights come from "
        "models/clip_guidance/ or are downloaded there with a progress bar; no pickle, no remote code."
    )

    def load(self, clip_name, dtype):
        return (load_guidance_clip(clip_name, dtype),)


NODE_CLASS_MAPPINGS = {"DNPG_GuidanceClipLoader": GuidanceClipLoader}
NODE_DISPLAY_NAME_MAPPINGS = {"DNPG_GuidanceClipLoader": "Guidance CLIP Loader"}
