"""Captioners for auto-DNP: BLIP, BLIP-2, LLaVA (1.5 and NeXT) through transformers' native classes.

Models live in ComfyUI's models/captioners/ (registered with folder_paths, so extra_model_paths.yaml
can add folders), one Hugging Face-format folder per model. Weights load from safetensors only,
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
import comfy.utils
import folder_paths
import numpy as np
import torch
from PIL import Image

log = logging.getLogger("dnp_guidance")

FOLDER = "captioners"
DEFAULT_QUESTION = "Describe the main content of this image in one short sentence."
DTYPES = {"auto": None, "fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}

# Hub repositories the loader offers and can download (Hugging Face ids; llava-hf ports are native).
KNOWN_CAPTIONERS = (
    "Salesforce/blip-image-captioning-base",
    "Salesforce/blip-image-captioning-large",
    "Salesforce/blip2-opt-2.7b",
    "Salesforce/blip2-flan-t5-xl",
    "llava-hf/llava-1.5-7b-hf",
    "llava-hf/llava-v1.6-mistral-7b-hf",
)
DOWNLOAD_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "tokenizer*"]


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


def register_folder() -> None:
    """models/captioners/ as a ComfyUI model folder (extra_model_paths.yaml may add more)."""
    folder_paths.add_model_folder_path(FOLDER, os.path.join(folder_paths.models_dir, FOLDER), is_default=True)


def captioner_folders() -> list:
    return folder_paths.get_folder_paths(FOLDER)


def local_captioners() -> dict:
    """name -> folder, for every model folder (config.json inside) up to two levels deep."""
    found = {}
    for root in captioner_folders():
        if not os.path.isdir(root):
            continue
        for entry in sorted(os.listdir(root)):
            path = os.path.join(root, entry)
            if os.path.isfile(os.path.join(path, "config.json")):
                found.setdefault(entry, path)
            elif os.path.isdir(path):
                for sub in sorted(os.listdir(path)):
                    if os.path.isfile(os.path.join(path, sub, "config.json")):
                        found.setdefault(f"{entry}/{sub}", os.path.join(path, sub))
    return found


def captioner_choices() -> list:
    return sorted(set(local_captioners()) | set(KNOWN_CAPTIONERS))


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _missing_message(name: str, reason: str) -> str:
    target = os.path.join(captioner_folders()[0], *name.split("/"))
    return (
        f"Captioner '{name}' is not on disk and {reason}. Put the model's files (config.json, the "
        f"*.safetensors weights, and the tokenizer / processor files: tokenizer*.json, processor_config.json or "
        f"preprocessor_config.json, special_tokens_map.json, vocab files) from https://huggingface.co/{name} "
        f"into {target}/ (any folder listed for 'captioners' in extra_model_paths.yaml works too)."
    )


def download(name: str) -> str:
    """Fetch a hub model into models/captioners/<owner>/<name>, with a progress bar on the node."""
    if _offline():
        raise FileNotFoundError(_missing_message(name, "the machine is offline (HF_HUB_OFFLINE is set)"))
    from huggingface_hub import snapshot_download
    from tqdm.auto import tqdm

    target = os.path.join(captioner_folders()[0], *name.split("/"))
    bar = comfy.utils.ProgressBar(100)

    class NodeProgress(tqdm):
        def update(self, n=1):
            result = super().update(n)
            if self.total:
                bar.update_absolute(int(100 * self.n / self.total), 100)
            return result

    log.info("DNP Guidance: downloading captioner %s to %s", name, target)
    try:
        snapshot_download(name, local_dir=target, allow_patterns=DOWNLOAD_PATTERNS, tqdm_class=NodeProgress)
    except Exception as error:  # network or hub errors: say what to do instead
        raise FileNotFoundError(_missing_message(name, f"the download failed ({error})")) from error
    return target


def resolve(name: str) -> str:
    local = local_captioners()
    if name in local:
        return local[name]
    if "/" not in name:
        raise FileNotFoundError(_missing_message(name, "is not a Hugging Face id to download"))
    return download(name)


def model_family(path: str) -> str:
    with open(os.path.join(path, "config.json")) as handle:
        family = json.load(handle).get("model_type", "")
    if family not in FAMILIES:
        raise ValueError(
            f"Captioner at {path} is a '{family}' model; supported families: BLIP (blip), BLIP-2 (blip-2), "
            "LLaVA 1.5 (llava) and LLaVA-NeXT (llava_next)."
        )
    return family


class ManagedModule(torch.nn.Module):
    """Holds a transformers model for ComfyUI's ModelPatcher, which sets `.device` on what it manages
    (a read-only property on transformers models)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.inner = model
        self.device = next(model.parameters()).device


@dataclass
class Captioner:
    """A loaded captioner (the CAPTIONER type between nodes), managed by ComfyUI's model manager."""

    name: str
    family: str
    patcher: object
    processor: object
    dtype: torch.dtype
    keep_loaded: bool


def _pick_dtype(choice: str, device) -> torch.dtype:
    if DTYPES[choice] is not None:
        return DTYPES[choice]
    return torch.float16 if mm.should_use_fp16(device, prioritize_performance=False) else torch.float32


def load_captioner(name: str, dtype: str = "auto", keep_loaded: bool = False) -> Captioner:
    path = resolve(name)
    family = model_family(path)
    if not any(f.endswith(".safetensors") for f in os.listdir(path)):
        raise ValueError(
            f"Captioner '{name}' at {path} has no .safetensors weights. The pack only loads safetensors "
            "(pickle .bin files can run code); download the safetensors version of the model."
        )
    model_cls, processor_cls = family_classes(family)
    load_device, offload_device = mm.text_encoder_device(), mm.text_encoder_offload_device()
    torch_dtype = _pick_dtype(dtype, load_device)
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
        ManagedModule(model.to(offload_device)), load_device=load_device, offload_device=offload_device
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
