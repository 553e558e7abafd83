"""Captioners for auto-DNP: BLIP, BLIP-2, Florence-2, LLaVA (1.5 and NeXT), Qwen2.5-VL, Qwen3-VL and SmolVLM2
through transformers' native classes (the families, their prompts and decoding: captioner_families.py).

Models live in ComfyUI's models/captioners/ (nodes/model_files.py: registered with folder_paths, so
extra_model_paths.yaml can add folders), one Hugging Face-format folder per model. Weights load from safetensors only,
never with trust_remote_code. A known model missing on disk is downloaded when the machine is online
(with a progress bar on the node); offline, the error says which files to put where. Device and
dtype follow ComfyUI's model management: the model is loaded on demand and unloaded after use
unless asked to stay.
"""

import os
from dataclasses import dataclass

import comfy.model_management as mm
import comfy.model_patcher
import numpy as np
import torch
from PIL import Image

from . import captioner_families, model_checks, model_files

FOLDER = "captioners"
DEFAULT_QUESTION = ""  # empty: each family's own default (captioner_families.prompt)

FILES = (
    "config.json, the *.safetensors weights, and the tokenizer / processor files: tokenizer*.json, "
    "processor_config.json or preprocessor_config.json, special_tokens_map.json, vocab files"
)


def register_folder() -> None:
    """models/captioners/ as a ComfyUI model folder (extra_model_paths.yaml may add more)."""
    model_files.register_folder(FOLDER)


def local_captioners() -> dict:
    return model_files.local_models(FOLDER)


def captioner_choices() -> list:
    return sorted(set(local_captioners()) | set(captioner_families.known_checkpoints()))


def resolve(name: str) -> str:
    return model_files.resolve(FOLDER, name, FILES)


def model_family(path: str, what: str) -> captioner_families.Family:
    """The family of the model in `path` (config.json's model_type)."""
    config = model_checks.read_json(os.path.join(path, "config.json"), what)
    family = captioner_families.FAMILIES.get(config.get("model_type", ""))
    if family is None:
        raise ValueError(
            f"{what} at {path} is a '{config.get('model_type', '')}' model; supported families: "
            f"{captioner_families.supported_list()}."
        )
    if "auto_map" in config and family.model_type == "florence2":
        raise ValueError(
            f"{what} at {path} is the remote-code Florence-2 format (microsoft/Florence-2-*), which the pack does not "
            "run (no trust_remote_code). Use the native conversions florence-community/Florence-2-base or "
            "florence-community/Florence-2-large instead."
        )
    return family


@dataclass
class Captioner:
    """A loaded captioner (the CAPTIONER type between nodes), managed by ComfyUI's model manager."""

    name: str
    family: str  # config.json's model_type, a key of captioner_families.FAMILIES
    patcher: object
    processor: object
    dtype: torch.dtype
    keep_loaded: bool

    @property
    def spec(self) -> captioner_families.Family:
        return captioner_families.FAMILIES[self.family]


def check_folder(path: str, name: str, what: str) -> captioner_families.Family:
    """Everything that can be checked before transformers reads the files; returns the family."""
    model_checks.check_json_files(path, what)
    family = model_family(path, what)
    model_checks.require_transformers(
        family.label, family.min_transformers, (family.model_class, family.processor_class)
    )
    model_checks.require_packages(family.label, family.packages)
    model_files.require_safetensors(path, name)
    model_checks.require_complete(path, what, model_checks.hub_page(name))
    return family


def load_captioner(name: str, dtype: str = "auto", keep_loaded: bool = False) -> Captioner:
    """Check the folder (JSON, parts, transformers version), then load model and processor."""
    path = resolve(name)
    what = f"Captioner '{name}'"
    family = check_folder(path, name, what)
    model_cls, processor_cls = captioner_families.family_classes(family)
    load_device, offload_device = mm.text_encoder_device(), mm.text_encoder_offload_device()
    torch_dtype = model_files.pick_dtype(dtype, load_device)
    try:
        model, loading = model_cls.from_pretrained(
            path,
            dtype=torch_dtype,
            use_safetensors=True,
            local_files_only=True,
            trust_remote_code=False,
            output_loading_info=True,
        )
        processor = processor_cls.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    except Exception as error:
        raise ValueError(
            f"{what}: transformers {model_checks.transformers_version()} could not load the files in {path} "
            f"({type(error).__name__}: {error}). The folder has every file a {family.label} model needs, so they are "
            "probably corrupt or incomplete: delete that folder and download the model again."
        ) from error
    model_checks.require_all_weights(loading, what, path, family.label)
    model_checks.require_distinct_tokens(processor.tokenizer, what, path)
    processor.tokenizer.padding_side = "left"  # generation appends on the right of every prompt
    patcher = comfy.model_patcher.ModelPatcher(
        model_files.ManagedModule(model.eval().to(offload_device)),
        load_device=load_device,
        offload_device=offload_device,
    )
    return Captioner(name, family.model_type, patcher, processor, torch_dtype, keep_loaded)


def rgb(images: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE (B, H, W, C) -> (B, H, W, 3): grey (C=1, or 2 with alpha) is repeated, alpha dropped."""
    channels = images.shape[-1]
    if channels in (1, 2):
        return images[..., :1].expand(*images.shape[:-1], 3)
    if channels in (3, 4):
        return images[..., :3]
    raise ValueError(
        f"Caption Image: the image has {channels} channels (shape {tuple(images.shape)}); captioners read grey, "
        "RGB or RGBA images (1, 3 or 4 channels). Connect a decoded image, not a latent or a mask."
    )


def to_pil(images: torch.Tensor) -> list:
    """ComfyUI IMAGE (B, H, W, C) in [0, 1] -> RGB PIL images."""
    if images.ndim != 4 or 0 in images.shape[:3]:
        raise ValueError(f"Caption Image: the image is empty (shape {tuple(images.shape)}); connect a decoded image.")
    images = rgb(images.detach())
    if not torch.isfinite(images).all():
        raise ValueError(
            "Caption Image: the image holds NaN or infinite values (the sampler or VAE diverged); a caption of it "
            "would be noise. Check the upstream sampler settings (cfg, steps) and the VAE."
        )
    array = (images.clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
    return [Image.fromarray(item) for item in array]


def _inputs(captioner: Captioner, pictures: list, question: str) -> tuple:
    """The processor's tensors for the batch, and the prompt (None: unprompted)."""
    family = captioner.spec
    text = captioner_families.prompt(family, captioner.processor, question)
    images = [[picture] for picture in pictures] if family.nested_images else pictures
    texts = None if text is None else [text] * len(pictures)
    inputs = captioner.processor(images=images, text=texts, return_tensors="pt", padding=True)
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(captioner.dtype)
    return inputs, text


def _without_prompt(output: torch.Tensor, inputs) -> torch.Tensor:
    """Decoder-only models return prompt + answer: keep the answer."""
    prompt_ids = inputs.get("input_ids")
    if prompt_ids is None or output.shape[1] <= prompt_ids.shape[1]:
        return output
    if torch.equal(output[:, : prompt_ids.shape[1]], prompt_ids.to(output.device)):
        return output[:, prompt_ids.shape[1] :]
    return output


def caption(
    captioner: Captioner, images: torch.Tensor, question: str = DEFAULT_QUESTION, max_new_tokens: int = 40
) -> list:
    """One caption per image, greedy (deterministic). An empty question uses the family's default
    (captioner_families.prompt)."""
    pictures = to_pil(images)
    mm.load_models_gpu([captioner.patcher])
    model = captioner.patcher.model.inner
    try:
        inputs, text = _inputs(captioner, pictures, question)
        inputs = inputs.to(captioner.patcher.load_device)
        with torch.inference_mode():
            output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
        sizes = [picture.size for picture in pictures]
        return captioner_families.decode(
            captioner.spec, captioner.processor, _without_prompt(output, inputs), text, sizes
        )
    finally:
        if not captioner.keep_loaded:
            unload(captioner)


def unload(captioner: Captioner) -> None:
    """Hand the captioner's memory back to ComfyUI: its own unload_model_and_clones where the running
    release has it (2026 releases), else the loaded-model list (weights go to the offload device)."""
    unload_helper = getattr(mm, "unload_model_and_clones", None)
    if unload_helper is not None:
        unload_helper(captioner.patcher, all_devices=True)
    for index, loaded in enumerate(mm.current_loaded_models):
        if loaded.model is captioner.patcher:
            mm.current_loaded_models.pop(index).model_unload()
            break
