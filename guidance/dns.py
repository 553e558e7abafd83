"""Diffusion-negative sampling, DNS (Desai & Vasconcelos, "Improving image synthesis with
diffusion-negative sampling", arXiv 2411.05473).

DNS samples the image the model finds least compliant with the prompt p, from the density
p(x) p(p|x)^(-w). Its score, in eps space (the reference's DNS rule):

    eps_DNS = e(x, empty) + w (e(x, empty) - e(x, p))                        (DNS)

which is ordinary CFG with positive = empty prompt and negative = p at s = w + 1:

    eps_DNS = e(x, p) + s (e(x, empty) - e(x, p)).

The weights sum to 1, so the same combination is exact in ComfyUI's x0 space (x0 = x - sigma eps,
or (x - sigma v) on flow models, is affine in the prediction at fixed x and sigma). On the guidance stack DNS is a DIRECTION term that
swaps what is guided towards (the empty prompt) and away from (p); s = 1 gives the plain
conditional-on-empty sample.
"""

import math

from .stack import PHASE_BASE, PHASE_DIRECTION, GuidanceState, GuidanceTerm


def _swap_direction(state: GuidanceState) -> GuidanceState:
    return state.edit(cond=state.uncond, uncond=state.cond)


def dns_terms(scale: float = 0.0) -> list:
    """The stack terms of DNS: the direction swap, and (scale > 0) its own base scale s.

    With scale 0 DNS uses the sampler's cfg (and any CFG schedule shapes it as usual); a positive
    scale replaces the sampler's cfg as s0 for this model, schedules included.
    """
    if not math.isfinite(scale) or scale < 0:
        raise ValueError(f"DNS scale must be >= 0 and finite (0 = use the sampler's cfg), got dns_scale = {scale}")
    terms = [
        GuidanceTerm(
            "dns",
            PHASE_DIRECTION,
            _swap_direction,
            "DNS (guide away from the positive prompt)",
            requires=("distinct_prompts",),
        )
    ]
    if scale > 0:
        terms.append(
            GuidanceTerm(
                "dns_scale",
                PHASE_BASE,
                lambda state: state.edit(base_scale=scale, scale=scale),
                f"DNS scale {scale:g}",
            )
        )
    return terms
