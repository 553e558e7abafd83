"""Diffusion-negative sampling nodes (Desai & Vasconcelos, arXiv 2411.05473). Maths in guidance/dns.py."""

from ..guidance import dns
from . import validation
from .patching import add_guidance_term

CATEGORY = "DNP Guidance/DNP"


def patch_dns(model, scale: float):
    """A clone of `model` that draws the diffusion-negative sample (shared by the DNS and Auto-DNP nodes)."""
    for term in dns.dns_terms(scale):
        model = add_guidance_term(model, term)
    return model


class DNSGuidance:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (
                    "MODEL",
                    {"tooltip": "The model to patch. Stacks with CFG Schedule and the pack's other nodes."},
                ),
                "dns_scale": (
                    "FLOAT",
                    {
                        "default": 0.0,
                        "min": 0.0,
                        "max": 100.0,
                        "step": 0.1,
                        "tooltip": "Guidance scale of DNS in ComfyUI's cfg convention (1 = the plain sample of the "
                        "empty prompt; the paper's w is this minus 1). 0 uses the sampler's cfg, so DNS runs at "
                        "the same scale as your final generation.",
                    },
                ),
            }
        }

    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The model that samples the diffusion-negative image of the positive prompt.",)
    FUNCTION = "patch"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Diffusion-negative sampling (Desai & Vasconcelos 2024): the sampler draws the image the model finds "
        "LEAST compliant with the positive prompt p, by guiding away from p towards the empty prompt. Put p in "
        "positive and an EMPTY prompt in negative, as usual. Caption or look at the result to write the "
        "diffusion-negative prompt n*, then generate with p and n*. Works on every model ComfyUI runs with CFG "
        "(SD1.x to SDXL, SD3 / SD3.5, Chroma, Qwen-Image, Wan (video too), Lumina2, AuraFlow, Cosmos ...); "
        "guidance-distilled models (Flux dev / schnell, Z-Image-Turbo) need true CFG: cfg above 1."
    )

    @classmethod
    def VALIDATE_INPUTS(cls, dns_scale):
        return validation.verdict(cls, dns_scale=dns_scale)

    def patch(self, model, dns_scale):
        validation.require_valid(DNSGuidance, dns_scale=dns_scale)
        return (patch_dns(model, dns_scale),)


class DNSConditioning:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "positive": ("CONDITIONING", {"tooltip": "The prompt p whose diffusion-negative image you want."}),
                "empty": (
                    "CONDITIONING",
                    {"tooltip": "The encoding of an empty prompt (CLIP Text Encode with no text)."},
                ),
            }
        }

    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    OUTPUT_TOOLTIPS = (
        "Connect to the KSampler's positive: the empty prompt.",
        "Connect to the KSampler's negative: the prompt p.",
    )
    FUNCTION = "swap"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "DNS for plain samplers: swaps p and the empty prompt, so an unpatched KSampler at cfg s draws the same "
        "diffusion-negative sample as DNS Guidance at scale s (eps = e_p + s (e_empty - e_p))."
    )

    def swap(self, positive, empty):
        check_batches(positive, empty)
        return (empty, positive)


def check_batches(positive, empty) -> None:
    """Conditionings of different batch sizes (neither 1) cannot be paired by the sampler."""
    sizes = {name: {c[0].shape[0] for c in cond} for name, cond in (("positive", positive), ("empty", empty))}
    batch_p, batch_e = max(sizes["positive"]), max(sizes["empty"])
    if batch_p != batch_e and 1 not in (batch_p, batch_e):
        raise ValueError(
            f"DNS Conditioning: positive has batch {batch_p} but empty has batch {batch_e}. Encode both with the "
            "same batch size, or one of them with batch 1."
        )


NODE_CLASS_MAPPINGS = {"DNPG_DNSGuidance": DNSGuidance, "DNPG_DNSConditioning": DNSConditioning}
NODE_DISPLAY_NAME_MAPPINGS = {"DNPG_DNSGuidance": "DNS Guidance", "DNPG_DNSConditioning": "DNS Conditioning (swap)"}
