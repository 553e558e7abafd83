"""CFG weight schedules (Wang et al., "Analysis of Classifier-Free Guidance Weight Schedulers",
TMLR 2024, arXiv 2404.13040) and the guidance interval (Kynkaanniemi et al., NeurIPS 2024,
arXiv 2404.07724).

Conventions:
- tau in [0, 1] is sampling progress: 0 at the noisiest step, 1 at the clean end.
- The papers use w in the (1 + w) e_c - w e_u convention; ComfyUI's cfg is s = w + 1. The node's
  static cfg s0 therefore gives w0 = s0 - 1, and every function returns s(tau) = w(tau) + 1.
- The heuristic families are normalised so that mean_tau w(tau) = w0 (the paper's factor 2 in
  clamp-linear, w = max(1, 2 w0 tau)); pcs reduces to cosine at s = 1.

Every function takes a float or a tensor tau and returns the same kind, so the sampling path
stays on the device with no host sync.
"""

import math
from typing import Callable, Union

import torch

from .coordinates import edm_sigma
from .progress import SOURCES
from .stack import PHASE_SCALE, SCALE_ABOVE_ONE, GuidanceState, GuidanceTerm

Number = Union[float, torch.Tensor]

KNOWN_PARAMS = ("c", "s", "sigma", "sigma_lo", "sigma_hi")
DEFAULT_CLAMP = 2.0  # the paper's example clamp-linear max(1, 2 w0 tau) is a floor of s = 2
DEFAULT_PCS_POWER = 2.0  # [open] the paper's pcs exponent is not confirmed; switchable input


def _cos(x: Number) -> Number:
    return torch.cos(x) if isinstance(x, torch.Tensor) else math.cos(x)


def _abs(x: Number) -> Number:
    return x.abs() if isinstance(x, torch.Tensor) else abs(x)


def _floor_at(x: Number, c: float) -> Number:
    return x.clamp(min=c) if isinstance(x, torch.Tensor) else max(x, c)


def _w_linear(tau, w0, **_):
    """Increasing linear: w = 2 w0 tau."""
    return 2 * w0 * tau


def _w_cosine(tau, w0, **_):
    """Increasing cosine: w = w0 (1 - cos(pi tau))."""
    return w0 * (1 - _cos(math.pi * tau))


def _w_invlinear(tau, w0, **_):
    """Decreasing linear: w = 2 w0 (1 - tau)."""
    return 2 * w0 * (1 - tau)


def _w_sine(tau, w0, **_):
    """Decreasing cosine ("sine"): w = w0 (1 + cos(pi tau))."""
    return w0 * (1 + _cos(math.pi * tau))


def _w_v_shape(tau, w0, **_):
    """V: high at both ends, zero mid-way: w = 2 w0 |1 - 2 tau|."""
    return 2 * w0 * _abs(1 - 2 * tau)


def _w_lambda_shape(tau, w0, **_):
    """Lambda: zero at both ends, 2 w0 mid-way: w = 2 w0 (1 - |1 - 2 tau|)."""
    return 2 * w0 * (1 - _abs(1 - 2 * tau))


def _w_pcs(tau, w0, s=DEFAULT_PCS_POWER, **_):
    """Power-cosine: w = w0 (1 - cos(pi tau^s)); s = 1 is the cosine schedule."""
    return w0 * (1 - _cos(math.pi * tau**s))


W_SCHEDULES: dict[str, Callable] = {
    "linear": _w_linear,
    "cosine": _w_cosine,
    "invlinear": _w_invlinear,
    "sine": _w_sine,
    "v-shape": _w_v_shape,
    "lambda-shape": _w_lambda_shape,
    "pcs": _w_pcs,
}
CLAMPED = {"clamp-linear": "linear", "clamp-cosine": "cosine"}
KINDS = ("static", *W_SCHEDULES, *CLAMPED, "interval")
INCREASING = ("linear", "cosine", "pcs", "clamp-linear", "clamp-cosine")
DECREASING = ("invlinear", "sine")


def _check_params(kind: str, tau: Number, s0: float, params: dict) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown CFG schedule kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    unknown = sorted(set(params) - set(KNOWN_PARAMS))
    if unknown:
        raise ValueError(f"unknown schedule parameter(s) {unknown}; valid: {', '.join(KNOWN_PARAMS)}")
    if not math.isfinite(s0) or s0 < 0:
        raise ValueError(f"cfg scale s0 must be a finite number >= 0, got {s0}")
    if not isinstance(tau, torch.Tensor) and not 0.0 <= tau <= 1.0:
        raise ValueError(f"progress tau must lie in [0, 1], got {tau}")
    if "s" in params and not params["s"] > 0:
        raise ValueError(f"pcs power s must be > 0, got {params['s']}")
    if "c" in params and not math.isfinite(params["c"]):
        raise ValueError(f"clamp floor c must be a finite number, got {params['c']}")
    if kind == "interval":
        _check_interval(params)


def _check_interval(params: dict) -> None:
    missing = [name for name in ("sigma", "sigma_lo", "sigma_hi") if name not in params]
    if missing:
        raise ValueError(f"the 'interval' schedule needs the parameter(s) {missing}")
    lo, hi = params["sigma_lo"], params["sigma_hi"]
    if not 0 <= lo < hi:
        raise ValueError(f"guidance interval needs 0 <= sigma_lo < sigma_hi, got sigma_lo={lo}, sigma_hi={hi}")


def guidance_interval(sigma: Number, s0: float, sigma_lo: float, sigma_hi: float) -> Number:
    """Kynkaanniemi et al.: guide with s0 while sigma_lo < sigma <= sigma_hi, else s = 1 (no guidance).

    sigma is the EDM noise level (noise-to-signal ratio) the paper defines the interval in, for every
    model: a flow model's sigma_flow maps to sigma_flow / (1 - sigma_flow) (guidance.coordinates), so
    the band 0.28-5.42 is sigma_flow 0.219-0.844 there."""
    if isinstance(sigma, torch.Tensor):
        inside = (sigma > sigma_lo) & (sigma <= sigma_hi)
        return torch.where(inside, torch.full_like(sigma, s0), torch.ones_like(sigma))
    return s0 if sigma_lo < sigma <= sigma_hi else 1.0


def cfg_scale(kind: str, tau: Number, s0: float, **params) -> Number:
    """The ComfyUI-convention scale s(tau) = w(tau) + 1 of schedule `kind` for a static cfg s0.

    params: `c` floors the returned s for clamp-linear / clamp-cosine (default 2.0); `s` is the
    pcs power (default 2.0); "interval" takes `sigma`, `sigma_lo`, `sigma_hi` and returns s0 when
    sigma_lo < sigma <= sigma_hi, else 1.0. Float in, float out; tensor in, tensor out (a tensor
    tau is clamped to [0, 1] rather than checked, to stay free of host syncs).
    """
    _check_params(kind, tau, s0, params)
    if kind == "interval":
        return guidance_interval(params["sigma"], s0, params["sigma_lo"], params["sigma_hi"])
    if kind == "static":  # s0 itself, so static guidance is bit-identical to plain CFG
        return torch.full_like(tau, s0) if isinstance(tau, torch.Tensor) else float(s0)
    if isinstance(tau, torch.Tensor):
        tau = tau.clamp(0.0, 1.0)
    w0 = s0 - 1.0
    base = CLAMPED.get(kind, kind)
    s = W_SCHEDULES[base](tau, w0, **{k: v for k, v in params.items() if k == "s"}) + 1.0
    if kind in CLAMPED:
        s = _floor_at(s, params.get("c", DEFAULT_CLAMP))
    return s


def validate_schedule(kind: str, **params) -> None:
    """Raise ValueError for an unknown kind or invalid parameters (no sigma needed for "interval")."""
    if kind == "interval":
        params = {"sigma": 0.0, **params}
    _check_params(kind, 0.0, 1.0, params)


def schedule_term(kind: str, source: str, **params) -> GuidanceTerm:
    """The guidance-stack term that sets s = cfg_scale(kind, tau, s0, **params) at each step.

    tau comes from `source` (guidance.progress.SOURCES); s0 is the sampler's cfg.
    """
    validate_schedule(kind, **params)
    if source not in SOURCES:
        raise ValueError(f"unknown progress source {source!r}; valid: {', '.join(SOURCES)}")

    def apply(state: GuidanceState) -> GuidanceState:
        extra = {"sigma": edm_sigma(state.sigma, state.space)} if kind == "interval" else {}
        return state.edit(scale=cfg_scale(kind, state.progress[source], state.base_scale, **params, **extra))

    shown = ", ".join(f"{k}={v:g}" for k, v in params.items())
    return GuidanceTerm(
        name="cfg_schedule",
        phase=PHASE_SCALE,
        apply=apply,
        description=f"{kind}({shown}) over {source}" if shown else f"{kind} over {source}",
        requires=(SCALE_ABOVE_ONE,),
        params={"kind": kind, "source": source, **params},
    )
