"""The Loss Guidance node (Shen et al., NeurIPS 2024): model checks, the x0 -> image decoders the image
losses see, and the guidance-stack patch. Maths in guidance/loss_guidance.py and guidance/losses.py;
the loss nodes in nodes/loss_nodes.py, the CLIP models in nodes/guidance_clip.py."""

import dataclasses

import comfy.model_sampling
import torch

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
from . import taesd, validation
from .differentiable import call_differentiably
from .families import config_name, model_family
from .loss_nodes import CATEGORY, LOSS
from .patching import add_guidance_term

VAE_DECODER, TAESD_DECODER, PREVIEW_DECODER = "vae", "taesd", "latent preview"
ADDITIONAL_MODELS_KEY = "dnp_guidance_losses"
LATENT_RATIO = 8  # pixels per latent cell in the SD1.x / SD2.x / SDXL VAEs


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


NODE_CLASS_MAPPINGS = {"DNPG_LossGuidance": LossGuidance}
NODE_DISPLAY_NAME_MAPPINGS = {"DNPG_LossGuidance": "Loss Guidance"}
