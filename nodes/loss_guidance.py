"""Training-free loss-based guidance nodes (Shen et al., NeurIPS 2024). Maths in guidance/loss_guidance.py
and guidance/losses.py; this module is the glue: inputs, model loading, decoding, the patch."""

import dataclasses
import os
from dataclasses import dataclass

import comfy.model_management as mm
import comfy.model_patcher
import comfy.model_sampling
import torch
import torch.nn.functional as F

from ..guidance import losses as loss_maths
from ..guidance.loss_guidance import (
    GRADIENT_PATHS,
    STEP_RULES,
    THROUGH_DENOISER,
    LossGuidanceConfig,
    loss_guidance_term,
    trackable,
)
from ..guidance.progress import DEFAULT_SOURCE, SOURCES
from . import model_checks, model_files, taesd, validation
from .differentiable import call_differentiably
from .families import config_name, model_family
from .patching import add_guidance_term

CATEGORY = "DNP Guidance/Loss Guidance"
LOSS = "DNPG_LOSS"
GUIDANCE_CLIP = "DNPG_GUIDANCE_CLIP"
CLIP_FOLDER = "clip_guidance"
KNOWN_CLIPS = ("openai/clip-vit-base-patch32", "openai/clip-vit-base-patch16", "openai/clip-vit-large-patch14")
CLIP_FILES = "config.json, model.safetensors, tokenizer.json (or vocab.json and merges.txt), preprocessor_config.json"
OPENAI_MEAN, OPENAI_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
VAE_DECODER, TAESD_DECODER, PREVIEW_DECODER = "vae", "taesd", "latent preview"
ADDITIONAL_MODELS_KEY = "dnp_guidance_losses"
LATENT_RATIO = 8  # pixels per latent cell in the SD1.x / SD2.x / SDXL VAEs

model_files.register_folder(CLIP_FOLDER)


# ---------------------------------------------------------------- guidance CLIP (transformers)


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


def comfy_clip_vision_projection(model, pixels: torch.Tensor) -> torch.Tensor:
    """The projected image embedding of ComfyUI's CLIPVisionModelProjection, computed from its own
    submodules with out-of-place residual adds (its CLIPLayer adds in place, which autograd refuses)."""
    from comfy.ldm.modules.attention import optimized_attention_for_device

    vision = model.vision_model
    x = vision.pre_layrnorm(vision.embeddings(pixels))
    attention = optimized_attention_for_device(x.device, mask=False, small_input=True)
    for layer in vision.encoder.layers:
        x = x + layer.self_attn(layer.layer_norm1(x), None, attention)
        x = x + layer.mlp(layer.layer_norm2(x))
    return model.visual_projection(vision.post_layernorm(x[:, 0, :]))


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


# ---------------------------------------------------------------- loss nodes


def _weight_input():
    return (
        "FLOAT",
        {
            "default": 1.0,
            "min": 0.0,
            "max": 1000.0,
            "step": 0.01,
            "tooltip": "Weight of this loss in the sum (losses add up: total = sum of weight * ||residual||).",
        },
    )


def _optional_loss_inputs(mask: bool = True) -> dict:
    optional = {
        "add_to": (
            LOSS,
            {
                "tooltip": "Losses to add this one to (chain several loss nodes, then connect the last to Loss Guidance)."
            },
        )
    }
    if mask:
        optional["mask"] = (
            "MASK",
            {
                "tooltip": "Only the white part of the image counts. Needs the generated image's aspect ratio "
                "(it is resized to the image)."
            },
        )
    return optional


def _mask_tensor(mask):
    """ComfyUI MASK (B, H, W) or (H, W) -> (B, 1, H, W) float."""
    if mask is None:
        return None
    mask = mask.float()
    return (mask if mask.ndim == 3 else mask[None]).unsqueeze(1)


def _chain(add_to, loss) -> tuple:
    return (tuple(add_to or ()) + (loss,),)


def parse_hex_colour(text: str) -> tuple:
    """'#RRGGBB' (or 'RRGGBB') -> (r, g, b) in [0, 1]."""
    digits = text.strip().lstrip("#")
    if len(digits) != 6 or any(c not in "0123456789abcdefABCDEF" for c in digits):
        raise ValueError(f"Colour Target Loss: colour must be a hex colour like #FF8800, got {text!r}.")
    return tuple(int(digits[i : i + 2], 16) / 255 for i in (0, 2, 4))


class ColourTargetLoss:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "colour": (
                    "STRING",
                    {"default": "#D04020", "tooltip": "Target mean colour of the (masked) image, as hex #RRGGBB."},
                ),
                "weight": _weight_input(),
            },
            "optional": _optional_loss_inputs(),
        }

    RETURN_TYPES = (LOSS,)
    OUTPUT_TOOLTIPS = ("The losses so far plus this one; connect to Loss Guidance or another loss node.",)
    FUNCTION = "build"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Loss: distance between the mean colour of the image (inside the mask, if given) and a target colour. "
        "Needs no extra network; works on the decoded image (VAE or the fast latent preview)."
    )

    @classmethod
    def VALIDATE_INPUTS(cls, weight):
        return validation.verdict(cls, weight=weight)

    def build(self, colour, weight, add_to=None, mask=None):
        validation.require_valid(ColourTargetLoss, weight=weight)
        return _chain(add_to, loss_maths.colour_target(parse_hex_colour(colour), _mask_tensor(mask), weight))


class BrightnessTargetLoss:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "brightness": (
                    "FLOAT",
                    {
                        "default": 0.7,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.01,
                        "tooltip": "Target mean brightness (luma) of the (masked) image: 0 black, 1 white.",
                    },
                ),
                "weight": _weight_input(),
            },
            "optional": _optional_loss_inputs(),
        }

    RETURN_TYPES = (LOSS,)
    OUTPUT_TOOLTIPS = ColourTargetLoss.OUTPUT_TOOLTIPS
    FUNCTION = "build"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Loss: distance between the mean brightness (Rec. 601 luma) of the image, inside the mask if given, and a "
        "target. Needs no extra network."
    )

    @classmethod
    def VALIDATE_INPUTS(cls, brightness, weight):
        return validation.verdict(cls, brightness=brightness, weight=weight)

    def build(self, brightness, weight, add_to=None, mask=None):
        validation.require_valid(BrightnessTargetLoss, brightness=brightness, weight=weight)
        return _chain(add_to, loss_maths.brightness_target(brightness, _mask_tensor(mask), weight))


class ReferenceImageLoss:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": (
                    "IMAGE",
                    {"tooltip": "The reference the generated image should resemble (batch 1 or the batch size)."},
                ),
                "space": (
                    ["pixel", "latent"],
                    {
                        "tooltip": "pixel: compare decoded images (needs a decoder in Loss Guidance). latent: compare "
                        "latents (cheap; the reference is encoded with the vae input)."
                    },
                ),
                "weight": _weight_input(),
            },
            "optional": {
                **_optional_loss_inputs(),
                "vae": ("VAE", {"tooltip": "Encodes the reference for space = latent (use the checkpoint's VAE)."}),
            },
        }

    RETURN_TYPES = (LOSS,)
    OUTPUT_TOOLTIPS = ColourTargetLoss.OUTPUT_TOOLTIPS
    FUNCTION = "build"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Loss: L2 distance to a reference image, in pixels or in latent space, inside the mask if given (a masked-"
        "region target). The reference needs the generated image's aspect ratio."
    )

    @classmethod
    def VALIDATE_INPUTS(cls, weight):
        return validation.verdict(cls, weight=weight)

    def build(self, image, space, weight, add_to=None, mask=None, vae=None):
        validation.require_valid(ReferenceImageLoss, weight=weight)
        if space == "latent":
            if vae is None:
                raise ValueError("Reference Image Loss: space = latent needs the vae input (the checkpoint's VAE).")
            reference = vae.encode(image[..., :3]).float()
            reference = reference[:, :, 0] if reference.ndim == 5 else reference  # a video VAE's single frame
            return _chain(add_to, loss_maths.reference_target(reference, loss_maths.LATENT, _mask_tensor(mask), weight))
        reference = image[..., :3].movedim(-1, 1).float()
        return _chain(add_to, loss_maths.reference_target(reference, loss_maths.IMAGE, _mask_tensor(mask), weight))


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


class ClipTextLoss:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "guidance_clip": (GUIDANCE_CLIP, {"tooltip": "From Guidance CLIP Loader."}),
                "text": (
                    "STRING",
                    {"multiline": True, "default": "", "tooltip": "What the image should show, in CLIP's words."},
                ),
                "weight": _weight_input(),
            },
            "optional": _optional_loss_inputs(mask=False),
        }

    RETURN_TYPES = (LOSS,)
    OUTPUT_TOOLTIPS = ColourTargetLoss.OUTPUT_TOOLTIPS
    FUNCTION = "build"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Loss: CLIP distance between the image and a text, ||normalize(CLIP(image)) - normalize(CLIP(text))|| "
        "(lower = more similar). Runs CLIP on the decoded image at every guided step."
    )

    @classmethod
    def VALIDATE_INPUTS(cls, weight):
        return validation.verdict(cls, weight=weight)

    def build(self, guidance_clip, text, weight, add_to=None):
        validation.require_valid(ClipTextLoss, weight=weight)
        if not text.strip():
            raise ValueError("CLIP Text Loss: text is empty. Type what the image should show.")
        target = clip_text_embedding(guidance_clip, text)
        embed = guidance_clip_image_embedder(guidance_clip)
        loss = loss_maths.embedding_target("CLIP text", embed, target, weight, (guidance_clip.patcher,))
        return _chain(add_to, loss)


class ClipImageLoss:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "Reference image(s) whose CLIP embedding the result should match."}),
                "weight": _weight_input(),
            },
            "optional": {
                "guidance_clip": (GUIDANCE_CLIP, {"tooltip": "A CLIP from Guidance CLIP Loader (or use clip_vision)."}),
                "clip_vision": (
                    "CLIP_VISION",
                    {"tooltip": "A CLIP vision model from ComfyUI's Load CLIP Vision (or use guidance_clip)."},
                ),
                **_optional_loss_inputs(mask=False),
            },
        }

    RETURN_TYPES = (LOSS,)
    OUTPUT_TOOLTIPS = ColourTargetLoss.OUTPUT_TOOLTIPS
    FUNCTION = "build"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Loss: CLIP image-image distance between the generated image and a reference (style / content "
        "similarity). Uses either a Guidance CLIP or a ComfyUI CLIP vision model; connect exactly one."
    )

    @classmethod
    def VALIDATE_INPUTS(cls, weight):
        return validation.verdict(cls, weight=weight)

    def build(self, image, weight, guidance_clip=None, clip_vision=None, add_to=None):
        validation.require_valid(ClipImageLoss, weight=weight)
        if (guidance_clip is None) == (clip_vision is None):
            raise ValueError("CLIP Image Loss: connect exactly one of guidance_clip and clip_vision.")
        if guidance_clip is not None:
            embed, patcher = guidance_clip_image_embedder(guidance_clip), guidance_clip.patcher
        else:
            embed, patcher = clip_vision_image_embedder(clip_vision), clip_vision.patcher
        target = image_embedding(embed, image, patcher)
        return _chain(add_to, loss_maths.embedding_target("CLIP image", embed, target, weight, (patcher,)))


# ---------------------------------------------------------------- the guidance node


SUPPORTED_FAMILIES = (
    "SD1.x, SD2.x, SDXL and other eps / v-prediction models; flow-matching models (SD3 / SD3.5, Flux, Chroma, "
    "Qwen-Image, Lumina2 / Z-Image, HiDream, AuraFlow, single-frame Wan); Cosmos Predict2"
)


# ComfyUI's Flux-architecture blocks add to their activations in place (`img += ...` in
# comfy/ldm/flux/layers.py and comfy/ldm/chroma), so autograd cannot go back through the denoiser.
IN_PLACE_FAMILIES = ("Flux", "Chroma", "HunyuanVideo")  # config-class prefixes: Flux2, ChromaRadiance, ...


def check_gradient_path(model, gradient: str) -> None:
    """Refuse the through-the-denoiser gradient up front on families whose blocks work in place."""
    name = config_name(model)
    if gradient == THROUGH_DENOISER and name.startswith(IN_PLACE_FAMILIES):
        raise ValueError(
            f"Loss Guidance: gradient = through the denoiser cannot run on this model ({name}): Flux-architecture "
            "blocks update their activations in place, which autograd cannot go back through. Choose gradient = "
            "x0 estimate (the default; it needs no backward pass through the model)."
        )


def check_model_family(model) -> None:
    """Loss guidance needs x = alpha x0 + sigma eps with a known alpha: eps / v / EDM (VE), CONST (flow)
    or Cosmos Predict2's RFLOW (a VE sigma)."""
    sampling = model.get_model_object("model_sampling")
    known = (comfy.model_sampling.EPS, comfy.model_sampling.CONST, comfy.model_sampling.COSMOS_RFLOW)
    if not isinstance(sampling, known):
        raise ValueError(
            f"Loss Guidance: this model is {model_family(model)}, whose sampling ({type(sampling).__name__}) "
            f"has no eps, v or flow parameterisation the guidance step can be written in. Supported: "
            f"{SUPPORTED_FAMILIES}."
        )


def check_image_latent(shape: tuple) -> None:
    """Loss guidance guides images: (B, C, H, W) latents, or (B, C, 1, H, W) single-frame video latents."""
    if len(shape) == 5 and shape[2] == 1:
        return
    if len(shape) != 4:
        what = f"a video latent with {shape[2]} frames" if len(shape) == 5 else f"a {len(shape)}-D latent"
        raise ValueError(
            f"Loss Guidance: the latent is {what} (shape {list(shape)}); loss guidance works on images. Generate a "
            "single frame (length 1), or remove Loss Guidance for video; DNS and CFG Schedule work on video."
        )


def as_image_latent(x0: torch.Tensor) -> torch.Tensor:
    """A single-frame video latent (B, C, 1, H, W) as an image latent (B, C, H, W); others unchanged."""
    return x0[:, :, 0] if x0.ndim == 5 else x0


def latent_ratio(model) -> int:
    """Pixels per latent cell of the model's VAE (8 for SD, SD3, Flux, Qwen-Image, Wan, Lumina2)."""
    return int(getattr(model.get_model_object("latent_format"), "spacial_downscale_ratio", LATENT_RATIO))


def vae_decoder(model, vae):
    """x0 (model space) -> RGB in [0, 1], through the VAE, differentiable."""
    latent_format = model.get_model_object("latent_format")

    video_vae = getattr(vae, "latent_dim", 2) == 3  # Wan / Qwen-Image VAEs decode (B, C, T, H, W)

    def decode(x0: torch.Tensor) -> torch.Tensor:
        module = vae.first_stage_model
        latent = latent_format.process_out(x0).to(vae.device, vae.vae_dtype)
        latent = latent.unsqueeze(2) if video_vae and latent.ndim == 4 else latent
        image = call_differentiably(module, module.decode, latent)
        image = image[:, :, 0] if image.ndim == 5 else image
        return (image.float() * 0.5 + 0.5).to(x0.device)

    return decode


def preview_decoder(model):
    """x0 (model space) -> RGB in [0, 1] at latent resolution through ComfyUI's linear preview factors
    (the live-preview approximation): cheap, no network."""
    latent_format = model.get_model_object("latent_format")
    if latent_format.latent_rgb_factors is None:
        raise ValueError("Loss Guidance: this model has no latent preview factors; choose decoder = vae.")
    factors = torch.tensor(latent_format.latent_rgb_factors, dtype=torch.float32)  # (C, 3)
    bias = torch.tensor(latent_format.latent_rgb_factors_bias or [0.0, 0.0, 0.0], dtype=torch.float32)

    def decode(x0: torch.Tensor) -> torch.Tensor:
        rgb = torch.einsum("bchw,cr->brhw", x0.float(), trackable(factors).to(x0.device))
        rgb = rgb + trackable(bias).to(x0.device).view(1, 3, 1, 1)
        return rgb * 0.5 + 0.5

    return decode


def _needs_image(losses: tuple) -> bool:
    return any(loss.space == loss_maths.IMAGE for loss in losses)


def _check_decoder(losses: tuple, decoder: str, vae) -> None:
    if _needs_image(losses) and decoder == VAE_DECODER and vae is None:
        raise ValueError(
            "Loss Guidance: image losses with decoder = vae need the vae input. Connect the checkpoint's VAE, or "
            "choose decoder = taesd (ComfyUI's tiny preview decoder) or latent preview (fast, approximate colours)."
        )


def image_decoder(model, losses: tuple, decoder: str, vae) -> tuple:
    """The x0 -> RGB function the image losses see, and the models it needs loaded with the MODEL."""
    _check_decoder(losses, decoder, vae)
    if decoder == VAE_DECODER:
        return vae_decoder(model, vae), [vae.patcher] if vae is not None else []
    if decoder == TAESD_DECODER:
        if not _needs_image(losses):
            return None, []  # latent losses only: nothing is decoded, no file is needed
        patcher = taesd.load_decoder(model)
        return taesd.taesd_decoder(patcher), [patcher]
    return preview_decoder(model), []


def _describe(losses: tuple, config: LossGuidanceConfig) -> str:
    names = " + ".join(f"{loss.weight:g}*{loss.name}" for loss in losses)
    return f"loss guidance ({names}; {config.rule}, scale {config.scale:g})"


def patch_loss_guidance(model, losses: tuple, config: LossGuidanceConfig, decoder: str, vae=None, observer=None):
    """A clone of `model` with loss guidance on its guidance stack."""
    if not losses:
        raise ValueError("Loss Guidance: losses is empty. Connect a loss node (e.g. CLIP Text Loss).")
    check_model_family(model)
    check_gradient_path(model, config.gradient)
    to_image, decoder_models = image_decoder(model, losses, decoder, vae)
    to_latent = model.get_model_object("latent_format").process_out

    ratio = latent_ratio(model)

    def objective(x0, augmentation):
        return loss_maths.objective(losses, as_image_latent(x0), augmentation, to_image, to_latent)

    def check_latent(shape) -> None:
        check_image_latent(shape)
        loss_maths.check_aspect(losses, shape[-2] * ratio, shape[-1] * ratio, ratio)

    term = loss_guidance_term(config, objective, observer, _describe(losses, config))
    term = dataclasses.replace(term, params={**term.params, "check_latent": check_latent})
    patched = add_guidance_term(model, term)
    helpers = [patcher for loss in losses for patcher in loss.models] + decoder_models
    patched.set_additional_models(ADDITIONAL_MODELS_KEY, list(dict.fromkeys(helpers)))
    return patched


def ordered_windows(values: dict) -> list:
    """Each window (guidance, time travel) has start <= end."""
    problems = []
    for start, end in (("start", "end"), ("time_travel_start", "time_travel_end")):
        if values[start] > values[end]:
            problems.append(f"{start} ({values[start]}) must not exceed {end} ({values[end]})")
    return problems


def _unit(tooltip: str, default: float) -> tuple:
    return ("FLOAT", {"default": default, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": tooltip})


class LossGuidance:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The model to patch. Stacks with CFG Schedule, S-CFG and DNS."}),
                "losses": (LOSS, {"tooltip": "The loss to minimise (from the loss nodes; chain several to add them)."}),
                "scale": (
                    "FLOAT",
                    {
                        "default": 0.05,
                        "min": 0.0,
                        "max": 1000.0,
                        "step": 0.001,
                        "tooltip": "eta, the step rule's scale (not a cfg scale). Polyak: the step is eta * ||eps|| / "
                        "||g||^2 * g (the paper's tasks use 0.001 to 2); fixed: eta * sqrt(alpha-bar) * g. Too high a "
                        "scale diverges: a result beyond 20x the model's own x0 prediction at the first step is an error.",
                    },
                ),
                "step_rule": (
                    list(STEP_RULES),
                    {"tooltip": "polyak: the paper's adaptive step (Alg. 2); fixed: a constant eta (FreeDoM-style)."},
                ),
                "gradient": (
                    list(GRADIENT_PATHS),
                    {
                        "tooltip": "x0 estimate (default): differentiate the loss of the x0 estimate only (fast, no "
                        "backward pass through the UNet). It needs a larger scale than 'through the denoiser' for "
                        "the same effect (about 3x in the lab), because the Polyak step's length depends on the "
                        "gradient's size; at each path's own best scale the lab's final losses do not differ. "
                        "through the denoiser: the paper's Eq. 5, backpropagating through the UNet too (about 3x "
                        "the cost of a plain step, and much more memory). Not on Flux-architecture models (Flux, "
                        "Chroma), whose blocks work in place, nor where ComfyUI runs the model in kernels without a "
                        "backward (Cosmos Predict2 on ComfyUI 0.33): use x0 estimate there."
                    },
                ),
                "decoder": (
                    [VAE_DECODER, TAESD_DECODER, PREVIEW_DECODER],
                    {
                        "tooltip": "How image losses see the x0 estimate: vae = exact decode (connect vae; the "
                        "costliest in time and memory). taesd = ComfyUI's tiny preview decoder for the model's "
                        "latents (taesd_decoder, taesdxl_decoder, taesd3_decoder or taef1_decoder in "
                        "models/vae_approx, from github.com/madebyollin/taesd): full resolution, close colours, "
                        "a fraction of the VAE's cost; the choice for CLIP losses. latent preview = ComfyUI's "
                        "linear preview colours (nearly free, approximate, at latent resolution): enough for "
                        "colour and brightness targets."
                    },
                ),
                "augmentations": (
                    "INT",
                    {
                        "default": 10,
                        "min": 0,
                        "max": 64,
                        "tooltip": "Random differentiable augmentations (shift, zoom, colour, cut-out) averaged per "
                        "step (the paper's Alg. 1 uses 10). 0 = none. Seeded from the sampler's seed.",
                    },
                ),
                "augmentation_strength": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": 0.0,
                        "max": 4.0,
                        "step": 0.05,
                        "tooltip": "Scales every augmentation range.",
                    },
                ),
                "start": _unit("Guide from this point of sampling (0 = first step).", 0.0),
                "end": _unit("Guide until this point of sampling (1 = last step).", 0.8),
                "time_travel_repeats": (
                    "INT",
                    {
                        "default": 1,
                        "min": 1,
                        "max": 20,
                        "tooltip": "Time travel (Alg. 3): repeat each guided step this many times, re-noising in "
                        "between. 1 = off; the paper uses 10. Costs one more model evaluation per repeat.",
                    },
                ),
                "time_travel_start": _unit("Time travel from this point of sampling.", 0.2),
                "time_travel_end": _unit("Time travel until this point of sampling.", 0.7),
                "progress_source": (
                    list(SOURCES),
                    {
                        "default": DEFAULT_SOURCE,
                        "tooltip": "How 'point of sampling' (the windows above) is measured. 'timestep' (default): "
                        "the model's time 1 - t/T, a function of the noise level alone, so chained "
                        "KSamplerAdvanced passes behave as one run. 'sigma position': position in this sampler "
                        "run's sigma list (every pass restarts at 0).",
                    },
                ),
            },
            "optional": {"vae": ("VAE", {"tooltip": "The checkpoint's VAE, for decoder = vae."})},
        }

    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The model whose sampler follows the loss gradient.",)

    @classmethod
    def defaults(cls) -> dict:
        """The node's default settings (every input but model, losses and vae), for scripts and tests."""
        settings = {}
        for name, spec in cls.INPUT_TYPES()["required"].items():
            if isinstance(spec[0], list):
                settings[name] = spec[0][0]
            elif "default" in spec[1]:
                settings[name] = spec[1]["default"]
        return settings

    FUNCTION = "patch"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Training-free loss-based guidance (Shen et al., NeurIPS 2024): at every step in the window the sampler's "
        "x0 estimate is nudged down the gradient of your losses, with random augmentation, the Polyak step size "
        "and time travel. Works with any KSampler sampler and stacks with the pack's other guidance nodes. "
        "Models: SD1.x, SD2.x, SDXL (eps / v), flow-matching models (SD3 / SD3.5, Flux, Chroma, Qwen-Image, "
        "Lumina2 / Z-Image, HiDream, AuraFlow, single-frame Wan) and Cosmos Predict2; video latents with more than "
        "one frame are refused. It needs no negative pass, so it also runs at cfg 1. "
        "A run whose result grows beyond 20x the model's own x0 prediction at the first step stops with an "
        "error (the scale is too high)."
    )

    @classmethod
    def VALIDATE_INPUTS(cls, scale, augmentation_strength, start, end, time_travel_start, time_travel_end):
        values = dict(
            scale=scale,
            augmentation_strength=augmentation_strength,
            start=start,
            end=end,
            time_travel_start=time_travel_start,
            time_travel_end=time_travel_end,
        )
        return validation.verdict(cls, ordered_windows, **values)

    def patch(
        self,
        model,
        losses,
        scale,
        step_rule,
        gradient,
        decoder,
        augmentations,
        augmentation_strength,
        start,
        end,
        time_travel_repeats,
        time_travel_start,
        time_travel_end,
        progress_source,
        vae=None,
    ):
        values = dict(
            scale=scale,
            augmentation_strength=augmentation_strength,
            start=start,
            end=end,
            time_travel_start=time_travel_start,
            time_travel_end=time_travel_end,
        )
        validation.require_valid(LossGuidance, ordered_windows, **values)
        config = LossGuidanceConfig(
            scale=scale,
            rule=step_rule,
            gradient=gradient,
            augmentations=augmentations,
            strength=augmentation_strength,
            start=start,
            end=end,
            travel_repeats=time_travel_repeats,
            travel_start=time_travel_start,
            travel_end=time_travel_end,
            progress_source=progress_source,
        )
        return (patch_loss_guidance(model, tuple(losses), config, decoder, vae),)


NODE_CLASS_MAPPINGS = {
    "DNPG_LossGuidance": LossGuidance,
    "DNPG_ColourTargetLoss": ColourTargetLoss,
    "DNPG_BrightnessTargetLoss": BrightnessTargetLoss,
    "DNPG_ReferenceImageLoss": ReferenceImageLoss,
    "DNPG_GuidanceClipLoader": GuidanceClipLoader,
    "DNPG_ClipTextLoss": ClipTextLoss,
    "DNPG_ClipImageLoss": ClipImageLoss,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "DNPG_LossGuidance": "Loss Guidance",
    "DNPG_ColourTargetLoss": "Colour Target Loss",
    "DNPG_BrightnessTargetLoss": "Brightness Target Loss",
    "DNPG_ReferenceImageLoss": "Reference Image Loss",
    "DNPG_GuidanceClipLoader": "Guidance CLIP Loader",
    "DNPG_ClipTextLoss": "CLIP Text Loss",
    "DNPG_ClipImageLoss": "CLIP Image Loss",
}
