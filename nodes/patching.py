"""The pack's one patch on a MODEL: a guidance stack in model_options, run by one post-CFG hook.

Every node of the pack calls `add_guidance_term` on a clone of its input MODEL. The first one
registers `guidance_hook` in `sampler_post_cfg_function` (a list, so other packs' post-CFG
functions keep running and nobody clobbers anybody) and a per-run OUTER_SAMPLE wrapper; later
ones only add their term to the stack stored under `model_options["dnp_guidance"]`.
"""

import logging
import math
from dataclasses import dataclass, field

import comfy.patcher_extension
import torch

from ..guidance.progress import SIGMA_POSITION, TIMESTEP, progress_from_sigma_position, progress_from_timestep
from ..guidance.stack import GuidanceStack, GuidanceState, GuidanceTerm, apply_stack

log = logging.getLogger("dnp_guidance")

STACK_KEY = "dnp_guidance"
RUN_KEY = "dnp_guidance_run"
WRAPPER_KEY = "dnp_guidance"


@dataclass
class RunState:
    """Per-sampling-run bookkeeping, created by the OUTER_SAMPLE wrapper and dropped after it.

    captures: collectors that model patches (attention capture) fill during one evaluation; the hook
    finalizes them into GuidanceState.captures and empties them, so nothing outlives the step.
    """

    hook_calls: int = 0
    captures: dict = field(default_factory=dict)

    def take_captures(self) -> dict:
        taken = {key: collector.finalize() for key, collector in self.captures.items()}
        self.captures.clear()
        return taken


def guidance_stack(model) -> GuidanceStack:
    """The stack on a MODEL (empty when none of our nodes patched it)."""
    return model.model_options.get(STACK_KEY, GuidanceStack())


def add_guidance_term(model, term: GuidanceTerm, replacing: bool = False):
    """A clone of `model` whose guidance stack also holds `term`, replacing one of the same name
    (with a warning, unless the caller means to: `replacing`)."""
    patched = model.clone()
    stack = guidance_stack(patched)
    if stack.has(term.name) and not replacing:
        log.warning(
            "DNP Guidance: this MODEL already has a %s term (%s); the new one (%s) replaces it.",
            term.name,
            stack.get(term.name).description,
            term.description,
        )
    patched.model_options[STACK_KEY] = stack.with_term(term)
    if guidance_hook not in patched.model_options.get("sampler_post_cfg_function", []):
        _register_hook(patched)
    return patched


def _register_hook(patched) -> None:
    foreign_cfg = patched.model_options.get("sampler_cfg_function")
    if foreign_cfg is not None:
        log.info(
            "DNP Guidance: the MODEL already has a cfg function (%s); DNP Guidance adds its own change "
            "on top of that function's result (additive composition).",
            getattr(foreign_cfg, "__qualname__", repr(foreign_cfg)),
        )
    # The stack needs the unconditional prediction even where the sampler's cfg is 1 (a schedule
    # can move s away from 1), so ComfyUI's cfg = 1 shortcut is switched off for this MODEL.
    patched.set_model_sampler_post_cfg_function(guidance_hook, disable_cfg1_optimization=True)
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY, run_wrapper)


def run_wrapper(executor, noise, latent_image, *args, **kwargs):
    """Wraps exactly one sampling run: checks, fresh per-run state, and a warning if the stack never ran."""
    guider = executor.class_obj
    options = guider.model_options
    stack = options.get(STACK_KEY)
    if stack is not None and stack.terms:
        check_run(stack, guider, latent_image)
    run = RunState()
    options[RUN_KEY] = run
    transformer_options = options.setdefault("transformer_options", {})
    transformer_options[RUN_KEY] = run  # reaches attention patches as extra_options[RUN_KEY]
    try:
        result = executor(noise, latent_image, *args, **kwargs)
    finally:
        options.pop(RUN_KEY, None)
        transformer_options.pop(RUN_KEY, None)
    if stack is not None and stack.terms:
        check_result(stack, run, result)
    return result


def _describe(stack: GuidanceStack) -> str:
    return ", ".join(term.description for term in stack.terms)


def check_run(stack: GuidanceStack, guider, latent_image: torch.Tensor) -> None:
    """Once per run, before sampling: the preconditions the stack's terms declare, and the input."""
    needed = stack.requirements()
    if "uncond_pass" in needed and math.isclose(float(guider.cfg), 1.0):
        raise ValueError(
            f"DNP Guidance: {', '.join(needed['uncond_pass'])} works on the difference between the positive "
            "and negative predictions, which plain CFG skips at cfg = 1. Set the sampler's cfg above 1 "
            "(for example 7)."
        )
    if "distinct_prompts" in needed:
        _check_distinct_prompts(guider, needed["distinct_prompts"])
    if torch.isnan(latent_image).any():
        raise ValueError("DNP Guidance: the input latent contains NaN values. Check the node that made it.")


def _cross_attn(guider, key: str):
    conds = getattr(guider, "original_conds", {}).get(key) or []
    return [cond.get("cross_attn") for cond in conds if cond.get("cross_attn") is not None]


def _check_distinct_prompts(guider, descriptions: list) -> None:
    positive, negative = _cross_attn(guider, "positive"), _cross_attn(guider, "negative")
    what = ", ".join(descriptions)
    if not negative:
        raise ValueError(f"DNP Guidance: {what} needs a negative conditioning (the empty prompt). Connect one.")
    same = len(positive) == len(negative) and all(
        p.shape == n.shape and torch.equal(p, n) for p, n in zip(positive, negative)
    )
    if same:
        raise ValueError(
            f"DNP Guidance: {what} needs a prompt p in positive that differs from the negative (empty) prompt, "
            "but both encode to the same conditioning. Type the prompt p into the positive text box."
        )


def check_result(stack: GuidanceStack, run: RunState, result: torch.Tensor) -> None:
    """Once per run, after sampling: the stack ran, and produced finite values."""
    if run.hook_calls == 0:
        log.warning(
            "DNP Guidance: %s was on this MODEL but never ran in this sampling run. A node applied after "
            "the DNP Guidance nodes removed ComfyUI's post-CFG hooks, or the guider does not call them. "
            "Apply the DNP Guidance nodes last, or use KSampler / CFGGuider.",
            _describe(stack),
        )
    if not torch.isfinite(result).all():
        raise ValueError(
            f"DNP Guidance: sampling with {_describe(stack)} produced NaN or infinite values. "
            "Lower the guidance scale (cfg, DNS scale, or the schedule's peak)."
        )


def progress_by_source(sigma: torch.Tensor, model_options: dict, model_sampling) -> dict:
    """tau for every progress source at `sigma` (see guidance.progress).

    Without the sampler's sigma list (a caller outside CFGGuider), sigma position falls back to the
    timestep source.
    """
    timestep = model_sampling.timestep(sigma)
    timestep_max = model_sampling.timestep(model_sampling.sigma_max.to(sigma))
    by_timestep = progress_from_timestep(timestep.to(sigma), timestep_max.to(sigma))
    sample_sigmas = model_options.get("transformer_options", {}).get("sample_sigmas")
    if sample_sigmas is None:
        return {SIGMA_POSITION: by_timestep, TIMESTEP: by_timestep}
    return {SIGMA_POSITION: progress_from_sigma_position(sigma, sample_sigmas), TIMESTEP: by_timestep}


def guidance_hook(args: dict) -> torch.Tensor:
    """ComfyUI post-CFG function: run the MODEL's guidance stack on this evaluation."""
    options = args["model_options"]
    denoised = args["denoised"]
    stack = options.get(STACK_KEY)
    if stack is None or not stack.terms:
        return denoised
    run = options.get(RUN_KEY)
    captures = {}
    if run is not None:
        run.hook_calls += 1
        captures = run.take_captures()
    sigma = args["sigma"]
    state = GuidanceState(
        cond=args["cond_denoised"],
        uncond=args["uncond_denoised"],
        x=args["input"],
        sigma=sigma,
        base_scale=float(args["cond_scale"]),
        progress=progress_by_source(sigma, options, args["model"].model_sampling),
        scale=float(args["cond_scale"]),
        captures=captures,
    )
    return apply_stack(stack, denoised, state)
