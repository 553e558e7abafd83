"""The guidance stack: one ordered list of guidance terms applied by one hook.

Every method of the pack is a term that edits a GuidanceState; the hook runs the terms in phase
order (whatever order the nodes were applied in) and combines the result as classifier-free
guidance in ComfyUI's x0 space (affine combinations with weights summing to 1 are identical in eps,
v / velocity and x0 space, since each is an affine map of the others at fixed x and sigma):

    guided = uncond + (cond - uncond) * scale + correction

Phases: BASE replaces the static scale s0 (DNS's own scale), SCALE sets the scalar s (CFG
schedules, from s0), DIRECTION chooses what is guided towards and away
from (DNS), RATE multiplies s per pixel (S-CFG), CORRECTION adds an x0 term (loss guidance).

The stack composes additively with whatever else changed the CFG result: it adds its own deviation
from plain CFG at the sampler's scale, `out = guided + (denoised_in - plain)`. With nothing else on
the model `denoised_in == plain` bit for bit, so `out == guided`; a stack that changes nothing
returns `denoised_in` unchanged.
"""

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional, Union

import torch

from .coordinates import VE

Scale = Union[float, torch.Tensor]

PHASE_BASE = -1
PHASE_SCALE = 0
PHASE_DIRECTION = 1
PHASE_RATE = 2
PHASE_CORRECTION = 3

SAMPLER_STEP = "sampler_step"  # a term requirement: the glue fills in the step fields of GuidanceState
SCALE_ABOVE_ONE = "scale_above_one"  # a term requirement: the run's scale s exceeds 1 at some step


@dataclass(frozen=True)
class GuidanceState:
    """One denoiser evaluation, as the terms see and edit it.

    cond / uncond: x0 predictions guided towards / away from, (B, C, H, W).
    x: the sampler's input; sigma: (B,) noise levels; base_scale: the sampler's cfg s0.
    progress: tau in [0, 1] per batch entry, (B,), keyed by source (guidance.progress.SOURCES).
    scale: s as a float, (B,) or (B, 1, H, W); correction: additive x0 term (0 or like cond).
    captures: what the glue captured from the model in this evaluation (attention maps), by key.
    sigma_step, sigma_next: (B,) start and landing sigma of the sampler step this evaluation is in
    (sigma_i and sigma_{i+1}; a sub-step of Heun, DPM-2 or dpmpp_sde is inside [sigma_{i+1}, sigma_i]).
    seed: for terms that draw random numbers (derived from the sampler's seed, the step's sigma and
    the evaluation's place in the step, so runs, and runs split into chained passes, repeat).
    evaluator: the glue's access to the model for terms that re-evaluate it (loss guidance):
    `.predictions(x)` -> (cond, uncond) at sigma (differentiable when grad is on), `.guided(x)`
    -> the whole guided x0 at (x, sigma), `.step_start` (the first evaluation of a sampler step,
    not a sub-step and not inside time travel).
    deviation: what other packs' cfg / post-CFG functions added to plain CFG (apply_stack adds it).
    space: where x sits (guidance.coordinates): VE, x = x0 + sigma eps, or FLOW, x = (1 - sigma) x0 +
    sigma eps (ComfyUI's CONST models: SD3, Flux, Qwen-Image, Wan, Lumina2, ...).
    """

    cond: torch.Tensor
    uncond: torch.Tensor
    x: torch.Tensor
    sigma: torch.Tensor
    base_scale: float
    progress: dict
    scale: Scale
    correction: Union[float, torch.Tensor] = 0.0
    captures: dict = None
    sigma_next: Optional[torch.Tensor] = None
    sigma_step: Optional[torch.Tensor] = None
    seed: int = 0
    evaluator: Any = None
    deviation: Union[float, torch.Tensor] = 0.0
    space: str = VE

    def edit(self, **changes) -> "GuidanceState":
        return replace(self, **changes)


@dataclass(frozen=True)
class GuidanceTerm:
    """A named edit of the state.

    `requires` names run-level preconditions the ComfyUI glue checks once before sampling:
    "uncond_pass" (a sampler cfg of 1 would make the term meaningless) and "distinct_prompts"
    (the positive and negative conditioning must differ), "scale_above_one" (a run whose scale is 1 at
    every step, e.g. a schedule at cfg 1, would do nothing), and state the glue fills in only for terms
    that ask: "sampler_step" (GuidanceState.sigma_step, sigma_next, evaluator.step_start). `params` are the arguments the term was
    built with, so a node can rebuild it (e.g. with an observer).
    """

    name: str
    phase: int
    apply: Callable[[GuidanceState], GuidanceState]
    description: str = ""
    requires: tuple = ()
    params: dict = field(default_factory=dict)
    needs_uncond: bool = True  # False: the term works without the unconditional pass (cfg = 1 stays cheap)


@dataclass(frozen=True)
class GuidanceStack:
    """An immutable set of terms, at most one per name, run in phase order."""

    terms: tuple = field(default_factory=tuple)

    def names(self) -> list:
        return [term.name for term in self.terms]

    def has(self, name: str) -> bool:
        return name in self.names()

    def get(self, name: str) -> GuidanceTerm:
        for term in self.terms:
            if term.name == name:
                return term
        raise KeyError(name)

    def with_term(self, term: GuidanceTerm) -> "GuidanceStack":
        """A new stack with `term` added, replacing a term of the same name."""
        kept = tuple(t for t in self.terms if t.name != term.name)
        return GuidanceStack(kept + (term,))

    def ordered(self) -> list:
        return sorted(self.terms, key=lambda term: term.phase)

    def requirements(self) -> dict:
        """requirement -> descriptions of the terms that have it."""
        needed = {}
        for term in self.terms:
            for requirement in term.requires:
                needed.setdefault(requirement, []).append(term.description)
        return needed

    def run(self, state: GuidanceState, up_to_phase: int = PHASE_CORRECTION) -> GuidanceState:
        for term in self.ordered():
            if term.phase <= up_to_phase:
                state = term.apply(state)
        return state


def broadcast_scale(scale: Scale, like: torch.Tensor) -> Scale:
    """A (B,) scale as (B, 1, ..., 1) so it multiplies a (B, C, ...) tensor per batch entry."""
    if isinstance(scale, torch.Tensor) and scale.ndim == 1:
        return scale.view(-1, *([1] * (like.ndim - 1)))
    return scale


def cfg_x0(cond: torch.Tensor, uncond: torch.Tensor, scale: Scale) -> torch.Tensor:
    """CFG in x0 space, in ComfyUI's own operation order: uncond + (cond - uncond) * s."""
    return uncond + (cond - uncond) * broadcast_scale(scale, cond)


def apply_stack(stack: GuidanceStack, denoised: torch.Tensor, state: GuidanceState) -> torch.Tensor:
    """Run the stack on one evaluation and compose with the incoming CFG result (see module doc)."""
    plain = cfg_x0(state.cond, state.uncond, state.base_scale)
    deviation = denoised - plain
    out = stack.run(state.edit(deviation=deviation))
    guided = cfg_x0(out.cond, out.uncond, out.scale) + out.correction
    return guided + deviation
