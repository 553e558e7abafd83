"""Captioners for auto-DNP: BLIP, BLIP-2, LLaVA (1.5 and NeXT) through transformers' native classes.

Models live in ComfyUI's models/captioners/ (nodes/model_files.py: registered with folder_paths, so
extra_model_paths.yaml can add folders), one Hugging Face-format folder per model. Weights load from safetensors only,
never with trust_remote_code. A known model missing on disk is downloaded when the machine is online
(with a progress bar on the node); offline, the error says which files to put where. Device and
dtype follow ComfyUI's model management: the model is loaded on demand and unloaded after use
unless asked to stay.
"""

import json
import logging
import os
from dataclasses import dataclass

import comfy.model_management as mm
import comfy.model_patcher
import numpy as np
import torch
from PIL import Image

from . import model_files

log = logging.getLogger("dnp_guidance")

FOLDER = "captioners"
DEFAULT_QUESTION = "Describe the main content of this image in one short sentence."

# Hub repositories the loader offers and can download (Hugging Face ids; llava-hf ports are native).
KNOWN_CAPTIONERS = (
    "Salesforce/blip-image-captioning-base",
    "Salesforce/blip-image-captioning-large",
    "Salesforce/blip2-opt-2.7b",
    "Salesforce/blip2-flan-t5-xl",
    "llava-hf/llava-1.5-7b-hf",
    "llava-hf/llava-v1.6-mistral-7b-hf",
)


# config.json model_type -> (model class, processor class) in transformers, imported on first load.
FAMILIES = {
    "blip": ("BlipForConditionalGeneration", "BlipProcessor"),
    "blip-2": ("Blip2ForConditionalGeneration", "Blip2Processor"),
    "llava": ("LlavaForConditionalGeneration", "LlavaProcessor"),
    "llava_next": ("LlavaNextForConditionalGeneration", "LlavaNextProcessor"),
}


def family_classes(family: str) -> tuple:
    import transformers

    return tuple(getattr(transformers, name) for name in FAMILIES[family])


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
    return sorted(set(local_captioners()) | set(KNOWN_CAPTIONERS))


def resolve(name: str) -> str:
    return model_files.resolve(FOLDER, name, FILES)


def model_family(path: str) -> str:
    with open(os.path.join(path, "config.json")) as handle:
        family = json.load(handle).get("model_type", "")
    if family not in FAMILIES:
        raise ValueError(
            f"Captioner at {path} is a '{family}' model; supported families: BLIP (blip), BLIP-2 (blip-2), "
            "LLaVA 1.5 (llava) and LLaVA-NeXT (llava_next)."
        )
    return family


@dataclass
class Captioner:
    """A loaded captioner (the CAPTIONER type between nodes), managed by ComfyUI's model manager."""

    name: str
    family: str
    patcher: object
    processor: object
    dtype: torch.dtype
    keep_loaded: bool


def load_captioner(name: str, dtype: str = "auto", keep_loaded: bool = False) -> Captioner:
    path = resolve(name)
    family = model_family(path)
    model_files.require_safetensors(path, name)
    model_cls, processor_cls = family_classes(family)
    load_device, offload_device = mm.text_encoder_device(), mm.text_encoder_offload_device()
    torch_dtype = model_files.pick_dtype(dtype, load_device)
    try:
        model = model_cls.from_pretrained(
            path, dtype=torch_dtype, use_safetensors=True, local_files_only=True, trust_remote_code=False
        ).eval()
        processor = processor_cls.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    except Exception as error:
        raise ValueError(
            f"Captioner '{name}': could not load the files in {path} ({type(error).__name__}: {error}). "
            "They may be corrupt or incomplete: delete that folder and download the model again."
        ) from error
    patcher = comfy.model_patcher.ModelPatcher(
        model_files.ManagedModule(model.to(offload_device)), load_device=load_device, offload_device=offload_device
    )
    return Captioner(name, family, patcher, processor, torch_dtype, keep_loaded)


def to_pil(images: torch.Tensor) -> list:
    """ComfyUI IMAGE (B, H, W, C) in [0, 1] -> RGB PIL images."""
    if images.ndim != 4 or images.shape[0] == 0 or images.shape[1] == 0 or images.shape[2] == 0:
        raise ValueError(f"Caption Image: the image is empty (shape {tuple(images.shape)}); connect a decoded image.")
    array = (images[..., :3].detach().clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
    return [Image.fromarray(item) for item in array]


def _prompt(captioner: Captioner, question: str):
    question = question.strip() or DEFAULT_QUESTION
    if captioner.family == "blip":
        return None  # BLIP captions unconditionally
    if captioner.family == "blip-2":
        return f"Question: {question} Answer:"
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return captioner.processor.apply_chat_template(conversation, add_generation_prompt=True)


def caption(
    captioner: Captioner, images: torch.Tensor, question: str = DEFAULT_QUESTION, max_new_tokens: int = 40
) -> list:
    """One caption per image, greedy (deterministic)."""
    pictures = to_pil(images)
    mm.load_models_gpu([captioner.patcher])
    model = captioner.patcher.model.inner
    device = captioner.patcher.load_device
    try:
        prompt = _prompt(captioner, question)
        texts = None if prompt is None else [prompt] * len(pictures)
        inputs = captioner.processor(images=pictures, text=texts, return_tensors="pt", padding=True).to(device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(captioner.dtype)
        with torch.inference_mode():
            output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
        prompt_length = inputs["input_ids"].shape[1] if prompt is not None and "input_ids" in inputs else 0
        if (
            prompt_length
            and output.shape[1] > prompt_length
            and torch.equal(output[:, :prompt_length], inputs["input_ids"])
        ):
            output = output[:, prompt_length:]
        return [text.strip() for text in captioner.processor.batch_decode(output, skip_special_tokens=True)]
    finally:
        if not captioner.keep_loaded:
            unload(captioner)


def unload(captioner: Captioner) -> None:
    """Hand the captioner's memory back to ComfyUI (weights go to the offload device)."""
    for index, loaded in enumerate(mm.current_loaded_models):
        if loaded.model is captioner.patcher:
            mm.current_loaded_models.pop(index).model_unload()
            break
