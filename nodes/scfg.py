"""S-CFG node (Shen et al., CVPR 2024, arXiv 2404.05384) and S-CFG Regions: inputs, the layer choice and
the guidance-stack term. The UNet attention capture is in nodes/attention_capture.py, the DiT capture in
nodes/scfg_dit.py; maths in guidance/scfg.py and guidance/attention_maps.py."""

import dataclasses

import nodes as comfy_nodes
import torch.nn.functional as F

from ..guidance import scfg
from ..guidance.progress import DEFAULT_SOURCE
from . import feedback, scfg_dit, validation
from .attention_capture import LAYER_CHOICES, attention_layers, is_unet, patch_capture, select_layers, unet_of
from .inputs import cfg_input, sampler_input, scheduler_input, seed_input, steps_input
from .patching import add_guidance_term, guidance_stack
from .plotting import regions_panel
from .scfg_capture import CAPTURE_KEY
from .token_labels import token_labels

CATEGORY = "DNP Guidance/S-CFG"


def ordered_ranges(values: dict) -> list:
    """rate_min <= rate_max and start <= end (the window includes both ends)."""
    problems = []
    if values["rate_min"] > values["rate_max"]:
        problems.append(f"rate_min ({values['rate_min']}) must not exceed rate_max ({values['rate_max']})")
    if values["start"] > values["end"]:
        problems.append(f"start ({values['start']}) must not exceed end ({values['end']})")
    return problems


class SCFG:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (
                    "MODEL",
                    {
                        "tooltip": "An SD1.x / SD2.x / SDXL UNet, or a DiT: SD3 / SD3.5, Flux (true CFG), Chroma, "
                        "Qwen-Image, Lumina2, Z-Image, AuraFlow, Wan (one frame), Cosmos Predict2. Stacks with CFG "
                        "Schedule, DNS Guidance and Loss Guidance."
                    },
                ),
                "layers": (
                    "STRING",
                    {
                        "default": "auto",
                        "tooltip": "Which attention maps segment the image. UNets: by map side relative to the latent "
                        "side, 'auto' = '1/4 + 1/8' as the official code (SD1.5 at 512 px: the 16x16 and 8x8 layers; "
                        "falls back to the two coarsest sizes), or '1/4', '1/8', '1/2 + 1/4', 'all'. DiTs: 'auto' "
                        "(SD3: middle blocks around 9 of 24; Flux / Chroma: the last 4 double blocks; others: 4 "
                        "middle blocks), 'all', or block indices such as '8, 9, 10' or '8-11' (Flux counts its "
                        "single blocks after the double ones). More layers cost more time.",
                    },
                ),
                "rate_min": (
                    "FLOAT",
                    {
                        "default": scfg.RATE_MIN,
                        "min": 0.0,
                        "max": 10.0,
                        "step": 0.05,
                        "tooltip": "Lowest per-region factor on the guidance scale (code: 0.8).",
                    },
                ),
                "rate_max": (
                    "FLOAT",
                    {
                        "default": scfg.RATE_MAX,
                        "min": 0.0,
                        "max": 10.0,
                        "step": 0.05,
                        "tooltip": "Highest per-region factor (code: 3.0).",
                    },
                ),
                "scale_cap": (
                    "FLOAT",
                    {
                        "default": scfg.SCALE_CAP,
                        "min": 0.0,
                        "max": 100.0,
                        "step": 0.5,
                        "tooltip": "The factor never exceeds scale_cap / cfg, so no region is guided "
                        "above this scale (cfg convention; code: 15).",
                    },
                ),
                "start": (
                    "FLOAT",
                    {
                        "default": 0.0,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.01,
                        "tooltip": "Progress at which S-CFG starts (0 = first step).",
                    },
                ),
                "end": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.01,
                        "tooltip": "Progress after which plain CFG resumes (1 = last step).",
                    },
                ),
                "self_completion": (
                    "BOOLEAN",
                    {
                        "default": True,
                        "tooltip": "Complete the cross-attention maps with self-attention "
                        "(A C) before segmenting, as the paper does. Off: cheaper, coarser regions.",
                    },
                ),
                "completion": (
                    list(scfg.COMPLETIONS),
                    {
                        "default": "code",
                        "tooltip": "code: A = (S + 3 S^2)/4 as in the released code. "
                        "paper: A = (S + S^2 + S^3 + S^4)/4 (R = 4).",
                    },
                ),
                "reference": (
                    list(scfg.REFERENCES),
                    {
                        "default": "uncond",
                        "tooltip": "Which pass defines the reference region: uncond as in the released code, or cond.",
                    },
                ),
                "reference_token": (
                    list(scfg_dit.REFERENCE_TOKENS),
                    {
                        "default": "auto",
                        "tooltip": "What defines the reference region whose guidance strength every region gets. start "
                        "token: the pixels that attend less to the text's start token than to the other tokens "
                        "(the paper and code, with CLIP's BOS). whole image: the whole image (the code's DeepFloyd "
                        "IF path), for text encoders without a start token. auto: start token on UNets, SD3 / SD3.5 "
                        "(CLIP) and Lumina2 (Gemma); whole image on Flux, Chroma, Qwen-Image, Z-Image, AuraFlow, Wan "
                        "and Cosmos (T5 / Qwen text has no start token).",
                    },
                ),
            }
        }

    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The model with S-CFG on its guidance stack.",)
    FUNCTION = "patch"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Semantic-aware CFG (Shen et al., CVPR 2024): at every step, segments the image into the regions of the "
        "prompt's tokens from the model's cross- (or joint) and self-attention, and rescales the guidance per region so that "
        "every object gets the guidance strength of the main subject. Needs cfg > 1. UNets (SD1.x / SD2.x / SDXL: "
        "cross-attention) and DiTs (SD3 / SD3.5, Flux, Chroma, Qwen-Image, Lumina2, Z-Image, AuraFlow: joint "
        "attention; Wan, Cosmos Predict2: cross-attention)."
    )

    @classmethod
    def VALIDATE_INPUTS(cls, rate_min, rate_max, scale_cap, start, end, layers=None):
        values = dict(rate_min=rate_min, rate_max=rate_max, scale_cap=scale_cap, start=start, end=end)
        verdict = validation.verdict(cls, ordered_ranges, **values)
        problem = layers_problem(layers)
        if problem:
            return problem if verdict is True else f"{verdict}; {problem}"
        return verdict

    def patch(
        self,
        model,
        layers,
        rate_min,
        rate_max,
        scale_cap,
        start,
        end,
        self_completion,
        completion,
        reference,
        reference_token="auto",
    ):
        values = dict(rate_min=rate_min, rate_max=rate_max, scale_cap=scale_cap, start=start, end=end)
        validation.require_valid(SCFG, ordered_ranges, **values)
        problem = layers_problem(layers)
        if problem:
            raise ValueError(problem)
        options = dict(rate_min=rate_min, rate_max=rate_max, scale_cap=scale_cap, reference=reference)
        term = scfg.scfg_term(CAPTURE_KEY, start, end, DEFAULT_SOURCE, **options)
        if is_unet(model):
            start_token = scfg_dit.reference_from_start_token(True, reference_token)
            chosen = select_layers(attention_layers(unet_of(model)), unet_layer_choice(layers))
            patched = add_guidance_term(model, term)
            patch_capture(patched, chosen, completion, self_completion, start_token)
            return (patched,)
        layout = scfg_dit.dit_layout(model)
        blocks = scfg_dit.choose_blocks(model, layout, layers)
        start_token = scfg_dit.reference_from_start_token(layout.start_token, reference_token)
        chosen_by = f" ({layout.why})" if scfg_dit.is_auto(layers) else ""
        feedback.show(f"S-CFG reads {layout.family} blocks {', '.join(map(str, blocks))}{chosen_by}")
        term = dataclasses.replace(term, params={**term.params, "check_latent": scfg_dit.check_latent})
        patched = add_guidance_term(model, term)
        scfg_dit.patch_capture(patched, layout, blocks, completion, self_completion, start_token)
        return (patched,)


LAYERS_HELP = (
    "use 'auto', one of "
    + ", ".join(repr(choice) for choice in LAYER_CHOICES if choice != "auto (1/4 + 1/8)")
    + " (UNet map sizes), or DiT block indices such as '8, 9, 10' or '8-11'."
)


def unet_layer_choice(layers: str) -> str:
    """The LAYER_CHOICES key for a UNet `layers` text ('auto' is the official code's 1/4 + 1/8)."""
    text = layers.strip()
    if scfg_dit.is_auto(text):
        return "auto (1/4 + 1/8)"
    if text in LAYER_CHOICES:
        return text
    sizes = ", ".join(repr(choice) for choice in LAYER_CHOICES if choice != "auto (1/4 + 1/8)")
    raise ValueError(
        f"S-CFG layers = {layers!r}: on a UNet choose the maps by size: 'auto' or one of {sizes}. Block indices "
        "select DiT blocks."
    )


def layers_problem(layers) -> str:
    """Why the `layers` text names no layers ('' if it does, or if it is linked: None)."""
    if layers is None:
        return ""
    if not isinstance(layers, str):
        return f"S-CFG: layers = {layers!r}: must be text"
    text = layers.strip()
    if scfg_dit.is_auto(text) or text in LAYER_CHOICES or scfg_dit.parse_blocks(text) is not None:
        return ""
    return f"S-CFG: layers = {layers!r}: {LAYERS_HELP}"


class SCFGRegions:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "A model patched by S-CFG."}),
                "positive": ("CONDITIONING", {"tooltip": "The sampler's positive."}),
                "negative": ("CONDITIONING", {"tooltip": "The sampler's negative."}),
                "latent_image": ("LATENT", {"tooltip": "The sampler's latent."}),
                "seed": seed_input("The sampler's seed.", control=True),
                "steps": steps_input("The sampler's steps."),
                "cfg": cfg_input("The sampler's cfg (ComfyUI convention, 1 = no guidance)."),
                "sampler_name": sampler_input("The sampler's sampler."),
                "scheduler": scheduler_input("The sampler's scheduler."),
                "step": (
                    "INT",
                    {
                        "default": 10,
                        "min": 0,
                        "max": 10000,
                        "tooltip": "Which step to show (0 = first); clamped to the last step.",
                    },
                ),
            },
            "optional": {
                "clip": ("CLIP", {"tooltip": "Optional: the text encoder, to name the tokens in the legend."}),
                "prompt": (
                    "STRING",
                    {
                        "default": "",
                        "multiline": True,
                        "tooltip": "Optional: the positive prompt's text, for the legend.",
                    },
                ),
            },
        }

    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("Regions of the first image (colour per token, reference lighter) and its rate map.",)
    FUNCTION = "show"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Shows what S-CFG does at one step: runs the sampler up to that step and draws the semantic regions "
        "(one colour per prompt token, the reference region lighter) and the per-pixel guidance rate. Give it "
        "the same inputs as your KSampler."
    )

    @classmethod
    def VALIDATE_INPUTS(cls, cfg):
        return validation.verdict(cls, cfg=cfg)

    def show(
        self,
        model,
        positive,
        negative,
        latent_image,
        seed,
        steps,
        cfg,
        sampler_name,
        scheduler,
        step,
        clip=None,
        prompt="",
    ):
        validation.require_valid(SCFGRegions, cfg=cfg)
        stack = guidance_stack(model)
        if not stack.has("scfg"):
            raise ValueError("S-CFG Regions: the model has no S-CFG. Connect the MODEL output of an S-CFG node.")
        seen = {}

        def observe(state, uncond_maps, cond_maps, rate):
            seen.update(
                cond=cond_maps, uncond=uncond_maps, rate=rate[0, 0].reshape(rate.shape[-2:]), sigma=state.sigma[0]
            )

        params = {key: value for key, value in stack.get("scfg").params.items() if key != "check_latent"}
        observed = add_guidance_term(model, scfg.scfg_term(observer=observe, **params), replacing=True)
        last = min(step, steps - 1)
        comfy_nodes.common_ksampler(
            observed,
            seed,
            steps,
            cfg,
            sampler_name,
            scheduler,
            positive,
            negative,
            latent_image,
            last_step=last + 1,
            force_full_denoise=False,
        )
        size = tuple(seen["rate"].shape)
        masks = scfg.region_masks(seen["cond"][0][:1])
        reference_pass = seen["uncond"] if params.get("reference", "uncond") == "uncond" else seen["cond"]
        reference = scfg.reference_mask(reference_pass[1][:1])
        token_index = F.interpolate(masks, size=size, mode="nearest")[0].argmax(dim=0).cpu().numpy()
        reference = F.interpolate(reference, size=size, mode="nearest")[0, 0].cpu().numpy()
        title = f"S-CFG step {last} of {steps} (sigma {float(seen['sigma']):.3f})"
        rate = seen["rate"].float().cpu().numpy()
        return (regions_panel(token_index, reference, rate, token_labels(clip, prompt), title),)


NODE_CLASS_MAPPINGS = {"DNPG_SCFG": SCFG, "DNPG_SCFGRegions": SCFGRegions}
NODE_DISPLAY_NAME_MAPPINGS = {"DNPG_SCFG": "S-CFG", "DNPG_SCFGRegions": "S-CFG Regions"}
