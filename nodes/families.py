"""What the pack knows about ComfyUI's model families: their noise space, their names, and which
ones are guidance-distilled (run at cfg 1, where the pack's CFG methods have nothing to work on)."""

from typing import Optional

import comfy.model_sampling

from ..guidance.coordinates import FLOW, VE

# Families whose distilled and undistilled releases share one architecture, so a file cannot tell.
UNDETECTABLE_DISTILLED = "Z-Image-Turbo, HiDream dev / fast, SD3.5 Large Turbo"
FLOW_FAMILIES = "SD3 / SD3.5, Flux, Chroma, Qwen-Image, Wan 2.x, Lumina2 / Z-Image, HiDream, AuraFlow"
TRUE_CFG_COST = (
    "True CFG evaluates the model on the positive and the negative prompt at every step, about twice the time of cfg 1."
)


def noise_space(model_sampling) -> str:
    """FLOW for ComfyUI's CONST sampling (x = (1 - sigma) x0 + sigma eps), VE for the rest."""
    return FLOW if isinstance(model_sampling, comfy.model_sampling.CONST) else VE


def config_name(model) -> str:
    config = getattr(model.model, "model_config", None)
    return type(config).__name__ if config is not None else type(model.model).__name__


def model_family(model) -> str:
    """The model as ComfyUI names it: its config class and model type, e.g. 'SD3 (model type FLOW)'."""
    model_type = getattr(model.model, "model_type", None)
    family = config_name(model)
    return f"{family} (model type {model_type.name})" if model_type is not None else family


def guidance_distilled(model) -> Optional[str]:
    """A description of the model if its file shows that it is guidance-distilled, else None.

    Flux.1 dev / Kontext, Flux.2 dev and HunyuanVideo 1.0 carry a guidance embedding (the scale is a
    model input, FluxGuidance's value); Flux.1 schnell is step-distilled and has none.
    """
    name = config_name(model)
    config = getattr(model.model, "model_config", None)
    embedded = bool(getattr(config, "unet_config", {}).get("guidance_embed", False))
    if name == "FluxSchnell":
        return "Flux.1 schnell (step-distilled, made for cfg 1)"
    if embedded and name in ("Flux", "FluxInpaint", "Flux2"):
        return (
            f"{name} with a guidance embedding (Flux.1 dev / Kontext / Flux.2 dev: guidance-distilled, made for cfg 1)"
        )
    if embedded and name.startswith("HunyuanVideo"):
        return f"{name} with a guidance embedding (HunyuanVideo 1.0: guidance-distilled, made for cfg 1)"
    return None


def true_cfg_message(what: str, model) -> str:
    """Why `what` does nothing at cfg 1, for a model that may be guidance-distilled."""
    distilled = guidance_distilled(model)
    if distilled is not None:
        return (
            f"DNP Guidance: {what} needs true CFG, but this model is {distilled}, and at cfg 1 ComfyUI runs no "
            f"negative pass. Set the sampler's cfg above 1 (for example 3 to 5) to use it. {TRUE_CFG_COST}"
        )
    return (
        f"DNP Guidance: {what} works on the difference between the positive and negative predictions, which "
        f"plain CFG skips at cfg = 1. Set the sampler's cfg above 1 (for example 7; 3 to 5 on flow models). "
        f"Guidance-distilled models ({UNDETECTABLE_DISTILLED}, Flux dev / schnell) are made for cfg 1: "
        f"these methods need true CFG with them. {TRUE_CFG_COST}"
    )
