"""The pack's one patch on a MODEL: a guidance stack in model_options, run by one post-CFG hook.

Every node of the pack calls `add_guidance_term` on a clone of its input MODEL. The first one
registers `guidance_hook` in `sampler_post_cfg_function` (a list, so other packs' post-CFG
functions keep running and nobody clobbers anybody) and a per-run OUTER_SAMPLE wrapper; later
ones only add their term to the stack stored under `model_options["dnp_guidance"]`.
"""

import hashlib
import math
import struct
from dataclasses import dataclass, field
from typing import Optional

import comfy.model_sampling
import comfy.patcher_extension
import comfy.samplers
import torch

from ..guidance.progress import (
    SIGMA_POSITION,
    TIMESTEP,
    next_sigma,
    progress_from_sigma_position,
    progress_from_timestep,
)
from ..guidance.stack import (
    PHASE_SCALE,
    SAMPLER_STEP,
    SCALE_ABOVE_ONE,
    GuidanceStack,
    GuidanceState,
    GuidanceTerm,
    apply_stack,
)
from . import feedback
from .differentiable import call_differentiably, differentiable_kernels
from .families import guidance_distilled, noise_space, true_cfg_message
from .sampler_steps import StepLocator, StepPlace, sampler_function_name

STACK_KEY = "dnp_guidance"
RUN_KEY = "dnp_guidance_run"
WRAPPER_KEY = "dnp_guidance"
# A run diverged when its result grows beyond this factor of the model's own x0 scale: the largest
# |x0| of the CFG result (without the pack's terms) at the run's first evaluation, before any guided
# step has moved x. Measured on the tiny random SD1.5 checkpoint: plain CFG and sane loss guidance end
# at about 5x it, loss guidance at scale 1000 at about 1200x.
DIVERGENCE_RATIO = 20.0


@dataclass
class RunState:
    """Per-sampling-run bookkeeping, created by the OUTER_SAMPLE wrapper and dropped after it.

    captures: collectors that model patches (attention capture) fill during one evaluation; the hook
    finalizes them into GuidanceState.captures and empties them, so nothing outlives the step.
    seed: the sampler's seed (terms draw their random numbers from it); travelling: a time-travel
    re-evaluation is in progress (it must not travel again). locator: which sampler step each
    evaluation is in, for stacks with a term that requires it (place: the current evaluation's;
    calls_in_step: evaluations of the stack in that step so far, time travel included).
    """

    hook_calls: int = 0
    captures: dict = field(default_factory=dict)
    seed: int = 0
    travelling: bool = False
    locator: Optional[StepLocator] = None
    place: Optional[StepPlace] = None
    calls_in_step: int = 0
    x0_scale: Optional[torch.Tensor] = None  # max |CFG x0| at the first evaluation (stays on the device)

    def note_x0_scale(self, unguided: torch.Tensor) -> None:
        if self.x0_scale is None:
            self.x0_scale = unguided.detach().abs().amax().float()

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
        feedback.warn(
            f"this MODEL already has a {term.name} term ({stack.get(term.name).description}); the new one "
            f"({term.description}) replaces it."
        )
    patched.model_options[STACK_KEY] = stack.with_term(term)
    if guidance_hook not in patched.model_options.get("sampler_post_cfg_function", []):
        _register_hook(patched)
    if term.needs_uncond:
        # The stack needs the unconditional prediction even where the sampler's cfg is 1 (a schedule
        # can move s away from 1, DNS guides towards it), so ComfyUI's cfg = 1 shortcut is switched
        # off for this MODEL. Loss guidance alone keeps it: at cfg 1 it costs no negative pass.
        patched.model_options["disable_cfg1_optimization"] = True
    return patched


def _register_hook(patched) -> None:
    foreign_cfg = patched.model_options.get("sampler_cfg_function")
    if foreign_cfg is not None:
        feedback.show(
            f"the MODEL already has a cfg function ({getattr(foreign_cfg, '__qualname__', repr(foreign_cfg))}); DNP "
            "Guidance adds its own change on top of that function's result (additive composition)."
        )
    patched.set_model_sampler_post_cfg_function(guidance_hook)
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY, run_wrapper)


def run_wrapper(executor, noise, latent_image, *args, **kwargs):
    """Wraps exactly one sampling run: checks, fresh per-run state, and a warning if the stack never ran."""
    guider = executor.class_obj
    options = guider.model_options
    stack = options.get(STACK_KEY)
    if stack is not None and stack.terms:
        check_run(stack, guider, latent_image, kwargs.get("sigmas", args[1] if len(args) > 1 else None))
    run = RunState(seed=_sampler_seed(args, kwargs))
    if stack is not None and SAMPLER_STEP in stack.requirements():
        run.locator = _step_locator(guider, args, kwargs)
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


def _sampler_seed(args: tuple, kwargs: dict) -> int:
    """The seed argument of CFGGuider.outer_sample (after sampler, sigmas, denoise_mask, callback, disable_pbar)."""
    seed = kwargs.get("seed", args[5] if len(args) > 5 else None)
    return int(seed or 0)


def _step_locator(guider, args: tuple, kwargs: dict) -> Optional[StepLocator]:
    """A locator over the run's sigmas (CFGGuider.outer_sample's sampler and sigmas arguments);
    one host copy of the sigma list per run."""
    sampler = kwargs.get("sampler", args[0] if args else None)
    sigmas = kwargs.get("sigmas", args[1] if len(args) > 1 else None)
    if sigmas is None or sigmas.numel() < 2:
        return None
    sampling = guider.model_patcher.get_model_object("model_sampling")
    options = {**getattr(sampler, "extra_options", {}), "flow": isinstance(sampling, comfy.model_sampling.CONST)}
    return StepLocator(sigmas.detach().float().cpu().tolist(), sampler_function_name(sampler), options)


def _describe(stack: GuidanceStack) -> str:
    return ", ".join(term.description for term in stack.terms)


def check_run(stack: GuidanceStack, guider, latent_image: torch.Tensor, sigmas: Optional[torch.Tensor] = None) -> None:
    """Once per run, before sampling: the preconditions the stack's terms declare, and the input."""
    needed = stack.requirements()
    at_cfg_one = math.isclose(float(guider.cfg), 1.0)
    model = guider.model_patcher
    guiding = [term.description for term in stack.terms if term.needs_uncond]
    if at_cfg_one and guiding and guidance_distilled(model) is not None:
        raise ValueError(true_cfg_message(", ".join(guiding), model))
    if "uncond_pass" in needed and at_cfg_one:
        raise ValueError(true_cfg_message(", ".join(needed["uncond_pass"]), model))
    if SCALE_ABOVE_ONE in needed and sigmas is not None and sigmas.numel() > 1:
        scales = stack_scales(
            stack, model.get_model_object("model_sampling"), sigmas.detach().float().cpu(), guider.cfg
        )
        if bool((scales - 1).abs().max() < 1e-6):
            raise ValueError(
                f"{true_cfg_message(', '.join(needed[SCALE_ABOVE_ONE]), model)} (At cfg {float(guider.cfg):g} the "
                "schedule gives s = 1, no guidance, at every step.)"
            )
    if "distinct_prompts" in needed:
        _check_distinct_prompts(guider, needed["distinct_prompts"])
    for term in stack.terms:
        check_latent = term.params.get("check_latent")
        if check_latent is not None:
            check_latent(tuple(latent_image.shape))
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
    """Once per run, after sampling: the stack ran, and produced finite values of a sane size."""
    if run.hook_calls == 0:
        feedback.warn(
            f"{_describe(stack)} was on this MODEL but never ran in this sampling run. A node applied after the DNP "
            "Guidance nodes removed ComfyUI's post-CFG hooks, or the guider does not call them. Apply the DNP "
            "Guidance nodes last, or use KSampler / CFGGuider."
        )
    advice = "Lower the guidance scale (cfg, DNS scale, the schedule's peak, or the loss guidance scale)."
    if not bool(torch.isfinite(result).all()):
        raise ValueError(f"DNP Guidance: sampling with {_describe(stack)} produced NaN or infinite values. {advice}")
    if run.x0_scale is not None and result.numel():
        ratio = float(result.abs().max() / run.x0_scale.clamp(min=1e-6))
        if ratio > DIVERGENCE_RATIO:
            raise ValueError(
                f"DNP Guidance: sampling with {_describe(stack)} diverged: the result reached {ratio:.3g} times "
                f"the size of the model's own x0 prediction at the first step (limit {DIVERGENCE_RATIO:g}). {advice}"
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


def stack_scales(stack: GuidanceStack, model_sampling, sigmas: torch.Tensor, cfg: float) -> torch.Tensor:
    """The scale s the stack uses at each evaluated sigma of a run (the last sigma is the target)."""
    evaluated = sigmas[:-1].float()
    options = {"transformer_options": {"sample_sigmas": sigmas.float()}}
    blank = torch.zeros(evaluated.shape[0], 1, 1, 1)
    state = GuidanceState(
        cond=blank,
        uncond=blank,
        x=blank,
        sigma=evaluated,
        base_scale=float(cfg),
        progress=progress_by_source(evaluated, options, model_sampling),
        scale=float(cfg),
        space=noise_space(model_sampling),
    )
    scale = stack.run(state, up_to_phase=PHASE_SCALE).scale
    return torch.as_tensor(scale, dtype=torch.float32).expand(evaluated.shape[0]).clone()


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
    step = _step_fields(stack, run, sigma, options)
    state = GuidanceState(
        cond=args["cond_denoised"],
        uncond=args["uncond_denoised"],
        x=args["input"],
        sigma=sigma,
        base_scale=float(args["cond_scale"]),
        progress=progress_by_source(sigma, options, args["model"].model_sampling),
        scale=float(args["cond_scale"]),
        captures=captures,
        evaluator=SamplerEvaluator(args, run, step.pop("step_start")),
        space=noise_space(args["model"].model_sampling),
        **step,
    )
    if run is not None:
        run.note_x0_scale(denoised)
    return apply_stack(stack, denoised, state)


def _step_fields(stack: GuidanceStack, run: Optional[RunState], sigma: torch.Tensor, options: dict) -> dict:
    """GuidanceState's sampler-step fields (sigma_step, sigma_next, seed) and the evaluator's step_start.

    With a locator (a term requires SAMPLER_STEP), the step comes from the run's evaluation order:
    one host read of sigma per evaluation, only for such stacks (their terms sync anyway). Time-travel
    re-evaluations stay in their step and never start one.
    """
    if run is None:
        return dict(seed=0, step_start=False)
    if run.locator is None:
        sample_sigmas = options.get("transformer_options", {}).get("sample_sigmas")
        wants_next = SAMPLER_STEP in stack.requirements() and sample_sigmas is not None
        seed = (run.seed * 1_000_003 + run.hook_calls) % 2**63
        return dict(sigma_next=next_sigma(sigma, sample_sigmas) if wants_next else None, seed=seed, step_start=False)
    if not run.travelling or run.place is None:
        run.place = run.locator.locate(float(sigma.max()))
        if run.place.is_start:
            run.calls_in_step = 0
    run.calls_in_step += 1
    place = run.place
    return dict(
        sigma_step=torch.full_like(sigma, place.sigma_start),
        sigma_next=torch.full_like(sigma, place.sigma_end),
        seed=_step_seed(run.seed, place.sigma_start, run.calls_in_step),
        step_start=place.is_start and not run.travelling,
    )


def _step_seed(seed: int, sigma_start: float, call: int) -> int:
    """A seed for the call-th evaluation of the step that starts at sigma_start: the same in a run split
    into chained passes as in the single run (the step is named by its sigma, not its index)."""
    digest = hashlib.blake2b(struct.pack("<Qdq", seed % 2**64, sigma_start, call), digest_size=8).digest()
    return int.from_bytes(digest, "little") % 2**63


def _without_run(model_options: dict) -> dict:
    """model_options for an extra model call whose attention must not be captured for the step."""
    options = dict(model_options)
    options["transformer_options"] = {
        key: value for key, value in model_options.get("transformer_options", {}).items() if key != RUN_KEY
    }
    options.pop(RUN_KEY, None)
    return options


class SamplerEvaluator:
    """GuidanceState.evaluator: the sampler's model at this evaluation's sigma, for terms that call it again."""

    def __init__(self, args: dict, run: RunState, step_start: bool = False):
        self.args = args
        self.run = run
        self.step_start = step_start  # the first evaluation of a sampler step (see _step_fields)

    def predictions(self, x: torch.Tensor) -> tuple:
        """(cond, uncond) x0 predictions at x, differentiable in x (call with grad enabled)."""
        model, args = self.args["model"], self.args
        options = _without_run(args["model_options"])

        def both(values):
            return comfy.samplers.calc_cond_batch(model, [args["cond"], args["uncond"]], values, args["sigma"], options)

        with differentiable_kernels():
            cond, uncond = call_differentiably(model, both, x)
        return cond, uncond

    def guided(self, x: torch.Tensor) -> torch.Tensor:
        """The whole guided x0 (every pack's cfg and post-CFG functions) at (x, sigma), no time travel."""
        args = self.args
        self.run.travelling = True
        try:
            return comfy.samplers.sampling_function(
                args["model"], x, args["sigma"], args["uncond"], args["cond"], args["cond_scale"], args["model_options"]
            )
        finally:
            self.run.travelling = False
