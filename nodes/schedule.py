"""CFG weight schedule nodes (Wang et al., TMLR 2024, arXiv 2404.13040; guidance interval:
Kynkaanniemi et al., NeurIPS 2024, arXiv 2404.07724). Maths in guidance/schedules.py."""

import comfy.samplers
import torch

from ..guidance import schedules
from ..guidance.progress import DEFAULT_SOURCE, SOURCES
from ..guidance.stack import PHASE_SCALE, GuidanceState
from . import validation
from .inputs import cfg_input, scheduler_input, steps_input
from .patching import add_guidance_term, guidance_stack, progress_by_source
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
                        "tooltip": "interval only: guidance is applied while sigma_lo < sigma <= sigma_hi. "
                        "0.28 is the EDM2 paper's lower end; must be below sigma_hi.",
                    },
                ),
                "sigma_hi": (
                    "FLOAT",
                    {
                        "default": 5.42,
                        "min": 0.0,
                        "max": 1000.0,
                        "step": 0.01,
                        "tooltip": "interval only: upper sigma of the guidance interval. 5.42 is a community "
                        "value for SDXL (unconfirmed); SD1.5's first sigma is about 14.6.",
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
        "DNP Guidance nodes."
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
    evaluated = sigmas[:-1].float()
    model_sampling = model.get_model_object("model_sampling")
    options = {"transformer_options": {"sample_sigmas": sigmas.float()}}
    blank = torch.zeros(evaluated.shape[0], 1, 1, 1)
    state = GuidanceState(
        cond=blank,
        uncond=blank,
        x=blank,
        sigma=evaluated,
        base_scale=cfg,
        progress=progress_by_source(evaluated, options, model_sampling),
        scale=cfg,
    )
    scale = guidance_stack(model).run(state, up_to_phase=PHASE_SCALE).scale
    return torch.as_tensor(scale, dtype=torch.float32).expand(evaluated.shape[0]).clone()


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
        title = f"CFG schedule: {stack.get('cfg_schedule').description}, s0 = {cfg:g}, {len(scales)} steps"
        return (line_chart(scales, title, "step (sigma at first / last step)", "s", ticks),)


NODE_CLASS_MAPPINGS = {"DNPG_CFGSchedule": CFGSchedule, "DNPG_CFGSchedulePlot": CFGSchedulePlot}
NODE_DISPLAY_NAME_MAPPINGS = {"DNPG_CFGSchedule": "CFG Schedule", "DNPG_CFGSchedulePlot": "CFG Schedule Plot"}
