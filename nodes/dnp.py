"""DNP nodes: captioner loading and captioning, the negative prompt n*, and one-node Auto-DNP
(Desai & Vasconcelos, arXiv 2411.05473). Text maths in guidance/dnp.py, DNS in nodes/dns.py."""

import nodes as comfy_nodes
import torch

from ..guidance import dnp
from . import captioning, conditioning_batch, feedback, model_files, validation
from .clip_tokens import clip_token_counter
from .dns import patch_dns
from .inputs import cfg_input, sampler_input, scheduler_input, seed_input, steps_input

CATEGORY = "DNP Guidance/DNP"
PER_IMAGE, SHARED = "per image", "shared"
NEGATIVE_MODES = (PER_IMAGE, SHARED)

captioning.register_folder()


class CaptionerLoader:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "captioner_name": (
                    captioning.captioner_choices(),
                    {
                        "tooltip": "A captioning model: folders in models/captioners/ (Hugging Face format, "
                        "safetensors weights) and the known BLIP, BLIP-2, Florence-2, LLaVA, Qwen2.5-VL, Qwen3-VL and "
                        "SmolVLM2 checkpoints, downloaded into models/captioners/<owner>/<name> on first use when the "
                        "machine is online. Small and good for n*: Florence-2-base (0.5 GB), SmolVLM2-500M (1 GB); "
                        "Qwen3-VL-2B (4.3 GB) for an 8 GB GPU.",
                    },
                ),
                "dtype": (
                    list(model_files.DTYPES),
                    {"default": "auto", "tooltip": "Weights precision. auto: fp16 on GPUs that support it, else fp32."},
                ),
                "keep_loaded": (
                    "BOOLEAN",
                    {
                        "default": False,
                        "tooltip": "Keep the captioner on the GPU after captioning (faster repeats, less memory for "
                        "the diffusion model). Off: it is moved back to the CPU right after use.",
                    },
                ),
            }
        }

    RETURN_TYPES = ("CAPTIONER",)
    OUTPUT_TOOLTIPS = ("The loaded captioner; connect it to Caption Image or Auto-DNP.",)
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Loads a captioner for auto-DNP: BLIP, BLIP-2, Florence-2, LLaVA (1.5 / NeXT), Qwen2.5-VL, Qwen3-VL or "
        "SmolVLM2 through transformers' own classes, safetensors only, no remote code. The folder is checked first "
        "(weights, tokenizer, processor, transformers version) and what is missing is named. ComfyUI's model "
        "manager moves it to the GPU only while it captions."
    )

    def load(self, captioner_name, dtype, keep_loaded):
        return (captioning.load_captioner(captioner_name, dtype, keep_loaded),)


class CaptionImage:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "captioner": ("CAPTIONER", {"tooltip": "From Captioner Loader."}),
                "image": ("IMAGE", {"tooltip": "The image(s) to describe, e.g. the decoded DNS sample."}),
                "question": (
                    "STRING",
                    {
                        "default": captioning.DEFAULT_QUESTION,
                        "multiline": True,
                        "tooltip": "Empty: each family's instruction for a short objects-and-attributes caption (a "
                        "good n*). Chat models (LLaVA, Qwen-VL, SmolVLM2) and BLIP-2 take a question or instruction; "
                        "Florence-2 takes a task token (<CAPTION>, <DETAILED_CAPTION>, <MORE_DETAILED_CAPTION>); "
                        "BLIP ignores it.",
                    },
                ),
                "max_new_tokens": (
                    "INT",
                    {"default": 40, "min": 1, "max": 512, "tooltip": "Longest caption, in the captioner's tokens."},
                ),
            }
        }

    RETURN_TYPES = ("STRING", "STRING")
    RETURN_NAMES = ("caption", "captions")
    OUTPUT_IS_LIST = (False, True)
    OUTPUT_TOOLTIPS = (
        "All captions of the batch joined with '; ' (one shared text).",
        "One caption per image, as a list (downstream nodes run once per caption).",
    )
    FUNCTION = "caption"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Describes each image of a batch with the captioner (greedy decoding: the same image gives the same text)."
    )

    def caption(self, captioner, image, question, max_new_tokens):
        captions = captioning.caption(captioner, image, question, max_new_tokens)
        feedback.show("\n".join(captions))
        return {"ui": {"text": captions}, "result": ("; ".join(captions), captions)}


def negative_prompt(caption: str, user_negative: str, mode: str, clip=None, max_tokens: int = -1) -> tuple:
    """n* and a report line: clean the caption, combine with the user's negative, fit the token limit.

    max_tokens -1 uses the text encoder's limit (75 for CLIP), 0 keeps everything (ComfyUI then
    encodes longer prompts in 77-token chunks).
    """
    text = dnp.combine_negative(dnp.clean_caption(caption), user_negative, mode)
    count, limit = clip_token_counter(clip) if clip is not None else (lambda t: len(t.split()), 75)
    if max_tokens >= 0:
        limit = max_tokens
    text, cut = dnp.truncate_words(text, count, limit) if count else (text, False)
    report = f"n*: {text}" + (f"  [truncated to {limit} tokens]" if cut else "")
    if cut:
        feedback.warn(f"the negative prompt was truncated to {limit} tokens: {text}")
    return text, report


class DNPNegativePrompt:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "caption": (
                    "STRING",
                    {"forceInput": True, "tooltip": "The caption of the DNS image (from Caption Image)."},
                ),
                "user_negative": (
                    "STRING",
                    {
                        "default": "",
                        "multiline": True,
                        "tooltip": "Your own negative prompt, kept next to n* (see mode).",
                    },
                ),
                "mode": (
                    list(dnp.COMBINE_MODES),
                    {
                        "default": "append",
                        "tooltip": "append: 'your negative, n*'. prepend: 'n*, your negative'. replace: n* alone.",
                    },
                ),
                "max_tokens": (
                    "INT",
                    {
                        "default": -1,
                        "min": -1,
                        "max": 1000,
                        "tooltip": "Cut n* at a word boundary to this many tokens. -1: the text encoder's limit "
                        "(75 for CLIP; needs the clip input, else words are counted). 0: no limit.",
                    },
                ),
            },
            "optional": {
                "clip": ("CLIP", {"tooltip": "The CLIP of your checkpoint, to count tokens exactly."}),
            },
        }

    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("negative_prompt",)
    OUTPUT_TOOLTIPS = ("n*: connect it to the text input of a CLIP Text Encode used as negative.",)
    FUNCTION = "build"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Turns the caption of the DNS image into the diffusion-negative prompt n*: strips captioner boiler-plate "
        "('arafed', 'a picture of', 'there is'), combines it with your own negative, and fits the token limit "
        "(saying so when it cuts)."
    )

    def build(self, caption, user_negative, mode, max_tokens, clip=None):
        text, report = negative_prompt(caption, user_negative, mode, clip, max_tokens)
        feedback.show(report)
        return {"ui": {"text": [report]}, "result": (text,)}


def encode(clip, text: str):
    return comfy_nodes.CLIPTextEncode().encode(clip, text)[0]


def dns_cost(steps: int, dns_steps: int, width: int, height: int, dns_size: int) -> float:
    """DNS UNet work relative to the final generation (UNet cost ~ steps x pixels)."""
    dns_pixels = dns_size * dns_size if dns_size else width * height
    return (dns_steps * dns_pixels) / (steps * width * height)


class AutoDNP:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The diffusion model (the DNS run patches a clone of it)."}),
                "clip": ("CLIP", {"tooltip": "Its text encoder."}),
                "vae": ("VAE", {"tooltip": "Its VAE, to decode the DNS image for the captioner."}),
                "captioner": ("CAPTIONER", {"tooltip": "From Captioner Loader."}),
                "prompt": ("STRING", {"multiline": True, "default": "", "tooltip": "Your prompt p."}),
                "user_negative": ("STRING", {"multiline": True, "default": "", "tooltip": "Your own negative prompt."}),
                "mode": (
                    list(dnp.COMBINE_MODES),
                    {"default": "append", "tooltip": "How n* joins your negative prompt."},
                ),
                "seed": seed_input("Seed of the DNS run.", control=True),
                "steps": steps_input("Steps of your final generation."),
                "cfg": cfg_input("cfg of your final generation; DNS runs at this scale (ComfyUI convention).", 1.0),
                "sampler_name": sampler_input("Sampler of the DNS run."),
                "scheduler": scheduler_input("Scheduler of the DNS run."),
                "width": (
                    "INT",
                    {"default": 512, "min": 64, "max": 8192, "step": 8, "tooltip": "Final image width (px)."},
                ),
                "height": (
                    "INT",
                    {"default": 512, "min": 64, "max": 8192, "step": 8, "tooltip": "Final image height (px)."},
                ),
                "dns_steps": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 10000,
                        "tooltip": "Steps of the DNS run; 0 = the same as steps. Fewer is cheaper.",
                    },
                ),
                "dns_size": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 8192,
                        "step": 8,
                        "tooltip": "Side of the square DNS image (px); 0 = width x height. Smaller is cheaper.",
                    },
                ),
                "batch_size": (
                    "INT",
                    {
                        "default": 1,
                        "min": 1,
                        "max": 64,
                        "tooltip": "Batch size of your final generation: the DNS run draws as many images "
                        "(image i from the noise of batch index i of this seed).",
                    },
                ),
                "negatives": (
                    list(NEGATIVE_MODES),
                    {
                        "default": PER_IMAGE,
                        "tooltip": "per image: image i of the final batch gets the n* of DNS image i (one batched "
                        "negative). shared: one n* from all the DNS captions, for every image.",
                    },
                ),
            }
        }

    RETURN_TYPES = ("CONDITIONING", "CONDITIONING", "STRING", "IMAGE")
    RETURN_NAMES = ("positive", "negative", "negative_prompt", "dns_image")
    OUTPUT_TOOLTIPS = (
        "p encoded: the final KSampler's positive.",
        "n* (with your negative) encoded: the final KSampler's negative.",
        "The text of n* (one line per image with per-image negatives).",
        "The diffusion-negative sample the caption describes.",
    )
    FUNCTION = "run"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Auto-DNP in one node: draws the diffusion-negative sample of your prompt (DNS), captions it, and returns "
        "the conditioning pair (p, n*) for your final KSampler. dns_steps / dns_size make the DNS run cheaper; "
        "its cost relative to the final generation is shown on the node. With batch_size > 1 each image of the "
        "final batch can get the n* of its own DNS image (negatives = per image)."
    )

    @classmethod
    def VALIDATE_INPUTS(cls, cfg):
        return validation.verdict(cls, cfg=cfg)

    def run(
        self,
        model,
        clip,
        vae,
        captioner,
        prompt,
        user_negative,
        mode,
        seed,
        steps,
        cfg,
        sampler_name,
        scheduler,
        width,
        height,
        dns_steps,
        dns_size,
        batch_size=1,
        negatives=PER_IMAGE,
    ):
        validation.require_valid(AutoDNP, cfg=cfg)
        if not prompt.strip():
            raise ValueError("Auto-DNP: the prompt is empty. DNS needs a prompt p to steer away from.")
        dns_steps = dns_steps or steps
        side_w, side_h = (dns_size, dns_size) if dns_size else (width, height)
        latent = {"samples": empty_latent(model, batch_size, side_w, side_h)}
        positive, empty = encode(clip, prompt), encode(clip, "")
        dns_latent = comfy_nodes.common_ksampler(
            patch_dns(model, 0.0), seed, dns_steps, cfg, sampler_name, scheduler, positive, empty, latent
        )[0]
        dns_image = comfy_nodes.VAEDecode().decode(vae, dns_latent)[0]
        captions = require_captions(captioning.caption(captioner, dns_image), captioner)
        texts, negative, report = dnp_negatives(captions, user_negative, mode, clip, negatives)
        cost = dns_cost(steps, dns_steps, width, height, dns_size)
        note = (
            f"{report}\nDNS run: {batch_size} x {dns_steps} steps at {side_w}x{side_h} = {cost:.0%} of the final "
            f"generation's UNet work, plus {len(captions)} caption(s)."
        )
        feedback.show(note)
        return {"ui": {"text": [note]}, "result": (positive, negative, "\n".join(texts), dns_image)}


def empty_latent(model, batch_size: int, width: int, height: int) -> torch.Tensor:
    """The empty latent of the model's own format, as its Empty Latent node makes it: 4 channels for
    SD1.x / SDXL, 16 for SD3 / Flux / Chroma, ..., a single frame for video formats."""
    latent_format = model.get_model_object("latent_format")
    ratio = getattr(latent_format, "spacial_downscale_ratio", 8)
    size = (height // ratio, width // ratio)
    frames = (1,) if getattr(latent_format, "latent_dimensions", 2) == 3 else ()
    return torch.zeros(batch_size, latent_format.latent_channels, *frames, *size)


def require_captions(captions: list, captioner) -> list:
    """Every DNS image got a caption with content: an empty n* would make Auto-DNP plain CFG silently."""
    empty = [index for index, text in enumerate(captions) if not dnp.clean_caption(text).strip()]
    if empty:
        raise ValueError(
            f"Auto-DNP: captioner '{captioner.name}' returned an empty caption for DNS image(s) {empty}, so n* "
            "would be empty. Check the captioner's files (tokenizer) or try another captioner."
        )
    return captions


def dnp_negatives(captions: list, user_negative: str, mode: str, clip, negatives: str) -> tuple:
    """(n* texts, negative CONDITIONING, report): one n* per DNS image stacked into a batch, or one shared."""
    if negatives == PER_IMAGE and len(captions) > 1:
        built = [negative_prompt(text, user_negative, mode, clip) for text in captions]
        texts = [text for text, _ in built]
        try:
            negative = conditioning_batch.stack_conditionings([encode(clip, text) for text in texts])
            return texts, negative, "\n".join(f"image {i}: {line}" for i, (_, line) in enumerate(built))
        except conditioning_batch.CannotStack as why:
            feedback.warn(f"per-image negatives cannot be batched ({why}); using one shared n*.")
            fallback = f"per-image negatives could not be batched ({why}): one shared n* instead\n"
    else:
        fallback = ""
    text, report = negative_prompt("; ".join(captions), user_negative, mode, clip)
    return [text], encode(clip, text), fallback + report


class PerImageConditioning:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "conditioning": (
                    "CONDITIONING",
                    {
                        "tooltip": "A list of conditionings, one per image (e.g. CLIP Text Encode run on the "
                        "per-image n* list from Caption Image -> DNP Negative Prompt).",
                    },
                ),
            }
        }

    INPUT_IS_LIST = True
    RETURN_TYPES = ("CONDITIONING",)
    OUTPUT_TOOLTIPS = (
        "One conditioning whose batch index i is list item i: connect it to a KSampler of that batch size.",
    )
    FUNCTION = "stack"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Stacks a list of conditionings into one batched conditioning, so image i of a batch is sampled with item i "
        "(per-image negatives n*). Token lengths that differ are repeated to a common length, as ComfyUI does when it "
        "batches conditionings."
    )

    def stack(self, conditioning):
        try:
            return (conditioning_batch.stack_conditionings(conditioning),)
        except conditioning_batch.CannotStack as why:
            raise ValueError(f"Per-Image Conditioning: the conditionings cannot be batched: {why}.") from why


NODE_CLASS_MAPPINGS = {
    "DNPG_CaptionerLoader": CaptionerLoader,
    "DNPG_CaptionImage": CaptionImage,
    "DNPG_DNPNegativePrompt": DNPNegativePrompt,
    "DNPG_AutoDNP": AutoDNP,
    "DNPG_PerImageConditioning": PerImageConditioning,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "DNPG_CaptionerLoader": "Captioner Loader",
    "DNPG_CaptionImage": "Caption Image",
    "DNPG_DNPNegativePrompt": "DNP Negative Prompt",
    "DNPG_AutoDNP": "Auto-DNP",
    "DNPG_PerImageConditioning": "Per-Image Conditioning",
}
