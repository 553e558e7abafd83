"""Sampling progress tau in [0, 1] (0 = noisiest step), from where ComfyUI's sampler is.

Two sources (shared/reference/conventions.md, "Time and noise"):
- sigma position: where the current sigma lies in the sampler's own sigma list, interpolated in
  log-sigma between entries. Intermediate evaluations of multi-evaluation samplers (Heun, DPM-2)
  get fractional positions, and a run with denoise < 1 or a partial step range spans 0 -> 1.
- timestep: tau = 1 - t(sigma) / t(sigma_max), the model's own time; the same sigma gives the same
  tau in every run (split KSamplerAdvanced passes continue one curve; denoise < 1 starts partway).
"""

import torch

SIGMA_POSITION = "sigma position"
TIMESTEP = "timestep"
SOURCES = (SIGMA_POSITION, TIMESTEP)
_TINY = 1e-12


def progress_from_sigma_position(sigma: torch.Tensor, sample_sigmas: torch.Tensor) -> torch.Tensor:
    """tau of each entry of `sigma` (shape (B,)) within the run's decreasing `sample_sigmas`.

    The model is evaluated at sample_sigmas[0 .. n-1] (the last entry is the target, usually 0),
    so step k has tau = k / (n - 1); sigmas between two entries interpolate in log-sigma and sigmas
    outside the evaluated range clamp to 0 or 1. A single-step run has tau = 0.
    """
    evaluated = sample_sigmas[:-1] if sample_sigmas.numel() > 1 else sample_sigmas
    n = evaluated.numel()
    sigma = sigma.to(evaluated)
    if n < 2:
        return torch.zeros_like(sigma)
    ascending = evaluated.flip(0).clamp(min=_TINY).log()  # (n,)
    log_sigma = sigma.clamp(min=_TINY).log()
    upper = torch.searchsorted(ascending, log_sigma).clamp(1, n - 1)
    lo, hi = ascending[upper - 1], ascending[upper]
    gap = hi - lo
    frac = torch.where(gap > 0, (log_sigma - lo) / gap.clamp(min=_TINY), torch.zeros_like(gap))
    ascending_position = ((upper - 1) + frac).clamp(0, n - 1)
    return (n - 1 - ascending_position) / (n - 1)


def progress_from_timestep(timestep: torch.Tensor, timestep_max: torch.Tensor) -> torch.Tensor:
    """tau = 1 - t / t_max, clamped to [0, 1] (t from the model's sigma -> timestep map)."""
    return (1 - timestep / timestep_max).clamp(0.0, 1.0)


def next_sigma(sigma: torch.Tensor, sample_sigmas: torch.Tensor) -> torch.Tensor:
    """The sampler's next step sigma after each entry of `sigma` (B,): the largest entry of the
    decreasing `sample_sigmas` below it (0 past the end). Sub-step sigmas of multi-evaluation
    samplers get the end of the step they are in."""
    sigma = sigma.to(sample_sigmas)
    below = sample_sigmas.view(1, -1) < sigma.view(-1, 1) * (1 - 1e-4)  # (B, n)
    return torch.where(below, sample_sigmas.view(1, -1), torch.zeros_like(below, dtype=sample_sigmas.dtype)).amax(dim=1)
