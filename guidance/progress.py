"""Sampling progress tau in [0, 1] (0 = noisiest), from where ComfyUI's sampler is.

Two sources:
- timestep (the default): tau = 1 - t(sigma) / t(sigma_max), the model's own time, as Wang et al.
  (arXiv 2404.13040) define their schedules over t / T. It is a function of the noise level alone,
  so the guided ODE is the same field in every run: a run split into chained KSamplerAdvanced
  passes gives every step the tau of the unsplit run, a run with denoise < 1 starts partway along
  the curve (where its first sigma is), and every sub-step of a multi-evaluation sampler (Heun,
  DPM-2) gets the tau of its own sigma.
- sigma position: where the current sigma lies in this sampler run's own sigma list, interpolated
  in log-sigma between entries (0 at the run's first step, 1 at its last). Every run spans 0 -> 1:
  a second chained pass or a denoise < 1 run replays the curve from its start, which is what a
  user wants only to stretch a schedule over a partial run on purpose.
For the "normal" scheduler the two agree; on others they differ by the scheduler's warp of time
(benchmarks/progress_sources.py measures it per scheduler).
"""

import torch

SIGMA_POSITION = "sigma position"
TIMESTEP = "timestep"
SOURCES = (TIMESTEP, SIGMA_POSITION)
DEFAULT_SOURCE = TIMESTEP
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
