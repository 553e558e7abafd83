"""CFG weight schedule nodes (Wang et al., TMLR 2024, arXiv 2404.13040; guidance interval:
Kynkaanniemi et al., NeurIPS 2024, arXiv 2404.07724). Maths in guidance/schedules.py."""

import comfy.samplers
import torch

from ..guidance import schedules
from ..guidance.coordinates import FLOW, space_sigma
from ..guidance.progress import DEFAULT_SOURCE, SOURCES
from . import validation
from .families import noise_space
from .inputs import cfg_input, scheduler_input, steps_input
from .patching import add_guidance_term, guidance_stack, stack_scales
from .plotting import line_chart

CATEGORY = "DNP Guidance/CFG schedules"

KIND_TOOLTIP = (
    "How the guidance scale s changes over sampling progress tau (0 = first, noisiest step; 1 = last). "
    "s0 is the sampler's cfg; every schedule except pcs averages to s0 over the run. "
    "static: s0 always. linear / cosine: INCREASING from 1 to 2*s0-1 (the paper's recommendation). "
    "invlinear / sine: DECREASING from 2*s0-1 to 1. v-shape: high at both ends, 1 mid-way. "
    "lambda-shape: 1 at both ends, high mid-way. pcs: power-cosine, increasing, shaped by pcs_power. "
    "clamp-linear / clamp-cosine: linear / cosine but never below clamp_floor. "
    "interval: s0 only while sigma_lo < sigma <= sigma_hi, no guidance (s = 1) elsewhere."
)


def schedule_params(kind: str, clamp_floor: float, pcs_power: float, sigma_lo: float, sigma_hi: float) -> dict:
    """The cfg_scale parameters that `kind` uses, from the node's inputs."""
    if kind in schedules.CLAMPED:
        return {"c": clamp_floor}
    if kind == "pcs":
        return {"s": pcs_power}
    if kind == "interval":
        return {"sigma_lo": sigma_lo, "sigma_hi": sigma_hi}
    return {}


def schedule_problems(values: dict) -> list:
    """Why the chosen kind cannot use these parameters (e.g. an interval with sigma_lo >= sigma_hi)."""
    params = schedule_params(**values)
    try:
        schedules.validate_schedule(values["kind"], **params)
    except ValueError as error:
        return [str(error)]
    return []


class CFGSchedule:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The model to patch. Stacks with the pack's other guidance nodes."}),
                "kind": (list(schedules.KINDS), {"default": "linear", "tooltip": KIND_TOOLTIP}),
                "progress": (
                    list(SOURCES),
                    {
                        "default": DEFAULT_SOURCE,
                        "tooltip": "Where tau (0 = first, noisiest step; 1 = last) comes from. 'timestep' (default): the model's time, "
                        "tau = 1 - t/T, a function of the noise level alone, so a run split into chained "
                        "KSamplerAdvanced passes follows the unsplit run's curve and denoise < 1 starts partway. "
                        "'sigma position': position in this sampler run's own sigma list, so every pass (and a "
                        "denoise < 1 run) replays the whole curve from 0 to 1.",
                    },
                ),
                "clamp_floor": (
                    "FLOAT",
                    {
                        "default": schedules.DEFAULT_CLAMP,
                        "min": 0.0,
                        "max": 100.0,
                        "step": 0.1,
                        "tooltip": "clamp-linear / clamp-cosine only: the lowest guidance scale, in ComfyUI's cfg "
                        "convention (1 = no guidance). The paper's example max(1, 2*w0*tau) is 2.",
                    },
                ),
                "pcs_power": (
                    "FLOAT",
                    {
                        "default": schedules.DEFAULT_PCS_POWER,
                        "min": 0.01,
                        "max": 20.0,
                        "step": 0.05,
                        "tooltip": "pcs only: the power s in w0 * (1 - cos(pi * tau^s)). 1 is the cosine schedule; "
                        "larger values keep guidance low for longer, then rise late.",
                    },
                ),
                "sigma_lo": (
                    "FLOAT",
                    {
                        "default": 0.28,
                        "min": 0.0,
                        "max": 1000.0,
                        "step": 0.01,
                        "tooltip": "interval only: guidance is applied while sigma_lo < sigma <= sigma_hi, sigma being "
                        "the EDM noise level (noise / signal) on every model: on flow models (SD3, Flux, Qwen-Image, "
                        "Wan, Lumina2) the sampler's sigma s maps to s / (1 - s), so 0.28 to 5.42 is their 0.219 to "
                        "0.844. 0.28 is the EDM2 paper's lower end; must be below sigma_hi.",
                    },
                ),
                "sigma_hi": (
                    "FLOAT",
                    {
                        "default": 5.42,
                        "min": 0.0,
                        "max": 1000.0,
                        "step": 0.01,
                        "tooltip": "interval only: upper EDM sigma of the guidance interval (flow models: "
                        "sigma_hi / (1 + sigma_hi) on their own scale, 0.844 for 5.42). 5.42 is a community value "
                        "for SDXL (unconfirmed); SD1.5's first sigma is about 14.6, a flow model's first is infinite.",
                    },
                ),
            }
        }

    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The model with the schedule on its guidance stack; sample it with any sampler.",)
    FUNCTION = "patch"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Makes the guidance scale a function of sampling progress (Wang et al. 2024, CFG weight "
        "schedulers) or restricts guidance to a noise interval (Kynkaanniemi et al. 2024). The sampler's "
        "cfg becomes the schedule's mean s0; the scale actually used at each step is s(tau). Works with "
        "KSampler, KSamplerAdvanced and SamplerCustomAdvanced + CFGGuider, and stacks with the other "
        "DNP Guidance nodes. Works on every model ComfyUI runs with CFG, UNets and DiT / flow-matching models "
        "alike (video latents too); the interval is in EDM sigma on every family. Guidance-distilled models "
        "(Flux dev / schnell, Z-Image-Turbo) need true CFG: cfg above 1."
    )

    @classmethod
    def VALIDATE_INPUTS(cls, kind, clamp_floor, pcs_power, sigma_lo, sigma_hi):
        values = dict(kind=kind, clamp_floor=clamp_floor, pcs_power=pcs_power, sigma_lo=sigma_lo, sigma_hi=sigma_hi)
        return validation.verdict(cls, schedule_problems, **values)

    def patch(self, model, kind, progress, clamp_floor, pcs_power, sigma_lo, sigma_hi):
        values = dict(kind=kind, clamp_floor=clamp_floor, pcs_power=pcs_power, sigma_lo=sigma_lo, sigma_hi=sigma_hi)
        validation.require_valid(CFGSchedule, schedule_problems, **values)
        params = schedule_params(kind, clamp_floor, pcs_power, sigma_lo, sigma_hi)
        term = schedules.schedule_term(kind, progress, **params)
        return (add_guidance_term(model, term),)


def sampler_sigmas(model, scheduler: str, steps: int, denoise: float) -> torch.Tensor:
    """The sigmas KSampler uses for these settings (same truncation rule for denoise < 1)."""
    model_sampling = model.get_model_object("model_sampling")
    if denoise >= 0.9999:
        return comfy.samplers.calculate_sigmas(model_sampling, scheduler, steps).cpu()
    total = int(steps / denoise)
    return comfy.samplers.calculate_sigmas(model_sampling, scheduler, total).cpu()[-(steps + 1) :]


def scales_over(model, sigmas: torch.Tensor, cfg: float) -> torch.Tensor:
    """The scale the MODEL's guidance stack uses at each evaluated sigma (the last is the target)."""
    return stack_scales(guidance_stack(model), model.get_model_object("model_sampling"), sigmas, cfg)


class CFGSchedulePlot:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (
                    "MODEL",
                    {"tooltip": "A model patched by CFG Schedule (the curve is read from its guidance stack)."},
                ),
                "cfg": cfg_input("The sampler's cfg (ComfyUI convention, 1 = no guidance): the schedule's s0."),
                "scheduler": scheduler_input("The sampler's scheduler."),
                "steps": steps_input("The sampler's steps."),
                "denoise": (
                    "FLOAT",
                    {"default": 1.0, "min": 0.01, "max": 1.0, "step": 0.01, "tooltip": "The sampler's denoise."},
                ),
            },
            "optional": {
                "sigmas": (
                    "SIGMAS",
                    {
                        "tooltip": "Optional: the exact sigmas of a custom sampler (overrides scheduler, steps, denoise)."
                    },
                ),
            },
        }

    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("A chart of the guidance scale s at every sampling step.",)
    FUNCTION = "plot"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Draws the guidance scale that the model's CFG Schedule gives at each step of a sampler with these "
        "settings, so you can see the schedule you chose. Connect it to Preview Image."
    )

    @classmethod
    def VALIDATE_INPUTS(cls, cfg, denoise):
        return validation.verdict(cls, cfg=cfg, denoise=denoise)

    def plot(self, model, cfg, scheduler, steps, denoise, sigmas=None):
        validation.require_valid(CFGSchedulePlot, cfg=cfg, denoise=denoise)
        stack = guidance_stack(model)
        if not stack.has("cfg_schedule"):
            raise ValueError(
                "CFG Schedule Plot: the model has no CFG schedule. Connect the MODEL output of a CFG Schedule node."
            )
        if sigmas is None:
            sigmas = sampler_sigmas(model, scheduler, steps, denoise)
        if sigmas.numel() < 2:
            raise ValueError("CFG Schedule Plot: the sigmas hold no sampling step (need at least two values).")
        scales = scales_over(model, sigmas.cpu(), cfg).tolist()
        last = len(scales) - 1
        ticks = {0: f"{sigmas[0].item():.2f}", last: f"{sigmas[last].item():.2f}"}
        term = stack.get("cfg_schedule")
        title = f"CFG schedule: {term.description}, s0 = {cfg:g}, {len(scales)} steps"
        x_label = "step (sigma at first / last step)"
        band = interval_band(term, noise_space(model.get_model_object("model_sampling")))
        if band:
            ticks.update({i: f"{sigmas[i].item():.3g}" for i in band_edges(scales)})
            title, x_label = f"{title}; {band}", "step (sigma where the band starts and ends)"
        return (line_chart(scales, title, x_label, "s", ticks),)


def interval_band(term, space: str) -> str:
    """The guidance interval in this model's own sigma (flow models: EDM sigma / (1 + EDM sigma)), or ''."""
    params = term.params
    if "sigma_lo" not in params:
        return ""
    lo, hi = params["sigma_lo"], params["sigma_hi"]
    if space == FLOW:
        return f"EDM sigma ({lo:g}, {hi:g}] = flow sigma ({space_sigma(lo, FLOW):.3f}, {space_sigma(hi, FLOW):.3f}]"
    return f"sigma ({lo:g}, {hi:g}]"


def band_edges(scales: list) -> list:
    """Steps where the scale changes (the first and last step inside the band)."""
    edges = []
    for i in range(1, len(scales)):
        if abs(scales[i] - scales[i - 1]) > 1e-6:
            edges += [i - 1, i]
    return edges


NODE_CLASS_MAPPINGS = {"DNPG_CFGSchedule": CFGSchedule, "DNPG_CFGSchedulePlot": CFGSchedulePlot}
NODE_DISPLAY_NAME_MAPPINGS = {"DNPG_CFGSchedule": "CFG Schedule", "DNPG_CFGSchedulePlot": "CFG Schedule Plot"}
