"""Which sampler step a model evaluation belongs to, for terms that act once per step.

ComfyUI hands a post-CFG function the sigma of each evaluation, not the step. Multi-evaluation
samplers evaluate inside a step (DPM-2's midpoint, dpmpp_sde / dpmpp_2s_ancestral / SEEDS stages),
at the step's own sigma again (SA-Solver PECE's corrected state), or at the *next* step sigmas
(Heun's corrector at sigma_{i+1}; Heun++ also at sigma_{i+2}; exponential Heun at sigma_{i+1}).
`StepLocator` follows one sampling run's evaluations in order and names, for each, the step
i it is in, the step's start sigma sigma_i, its landing sigma sigma_{i+1} and whether it is the
step's first evaluation:

- every sampler starts a step by evaluating at its sigma sigma_j. An evaluation at sigma_j is first
  claimed by the evaluations that earlier steps' correctors make there (`ENDPOINT_EVALUATIONS`, by
  k-diffusion sampler function), then it starts step j, and any further one belongs to step j;
- a sigma that is no step sigma belongs to the step in progress: a stage inside the step, or below
  its end (dpmpp_2s_ancestral's midpoint lies between sigma_i and the ancestral sigma_down, which
  is below sigma_{i+1}). The run's first evaluation starts step 0 wherever it is (samplers that
  shift the first sigma, e.g. SEEDS on flow models).

Sampling with churn (s_churn > 0, which no core node exposes) starts steps above their sigma and
is located as a sub-step of the previous step.
"""

import math
from dataclasses import dataclass

RTOL = 1e-4


def _heun_endpoints(sigmas: list, j: int, options: dict) -> int:
    """Heun: step j - 1 evaluates its corrector at sigma_j unless sigma_j = 0 (then it is an Euler step)."""
    return 1 if j >= 1 and sigmas[j] != 0 else 0


def _heunpp2_endpoints(sigmas: list, j: int, options: dict) -> int:
    """Heun++ (sample_heunpp2): step i evaluates at sigma_{i+1} unless sigma_{i+1} is the end, and at
    sigma_{i+2} unless sigma_{i+1} or sigma_{i+2} is the end."""
    end = sigmas[-1]
    from_previous = 1 if j >= 1 and sigmas[j] != end else 0
    from_two_back = 1 if j >= 2 and sigmas[j - 1] != end and sigmas[j] != end else 0
    return from_previous + from_two_back


def _ancestral_midpoint_endpoints(sigmas: list, j: int, options: dict) -> int:
    """DPM-2 / DPM++ 2S ancestral at eta = 1 on VE/VP models: sigma_down = sigma_{i+1}^2 / sigma_i
    exactly, so the log-midpoint sqrt(sigma_i * sigma_down) is sigma_{i+1}. Other eta values and the
    flow (RF) variants put it elsewhere (inside the step, found without this table)."""
    if options.get("eta", 1.0) != 1.0 or options.get("flow", False):
        return 0
    return _heun_endpoints(sigmas, j, options)


# k-diffusion sampler function -> how many evaluations earlier steps make at step sigma j.
ENDPOINT_EVALUATIONS = {
    "sample_heun": _heun_endpoints,
    "sample_heunpp2": _heunpp2_endpoints,
    "sample_exp_heun_2_x0": _heun_endpoints,  # SEEDS-2 with r = 1: its stage lands on sigma_{i+1}
    "sample_exp_heun_2_x0_sde": _heun_endpoints,
    "sample_dpm_2_ancestral": _ancestral_midpoint_endpoints,
    "sample_dpmpp_2s_ancestral": _ancestral_midpoint_endpoints,
    "sample_dpmpp_2s_ancestral_cfg_pp": _ancestral_midpoint_endpoints,
}


def sampler_function_name(sampler) -> str:
    """The k-diffusion function behind a ComfyUI KSAMPLER object ("" for other samplers)."""
    return getattr(getattr(sampler, "sampler_function", None), "__name__", "")


@dataclass(frozen=True)
class StepPlace:
    """Where one evaluation is: step `index`, its start and landing sigmas, first evaluation or not."""

    index: int
    sigma_start: float
    sigma_end: float
    is_start: bool


class StepLocator:
    """Follows one run's evaluations (host floats; call `locate` once per evaluation, in order)."""

    def __init__(self, sigmas: list, sampler_name: str = "", options: dict = None):
        """options: the sampler's extra options (eta, ...) and flow = the model samples as a flow (CONST)."""
        self.sigmas = [float(s) for s in sigmas]
        self.endpoints = ENDPOINT_EVALUATIONS.get(sampler_name, lambda sigmas, j, options: 0)
        self.options = options or {}
        self.seen_at = {}  # step sigma index -> evaluations there so far
        self.current = None  # the step in progress

    def _step_sigma_index(self, sigma: float):
        for j, step_sigma in enumerate(self.sigmas[:-1]):
            if math.isclose(sigma, step_sigma, rel_tol=RTOL, abs_tol=1e-12):
                return j
        return None

    def _place(self, index: int, is_start: bool) -> StepPlace:
        if is_start:
            self.current = index
        return StepPlace(index, self.sigmas[index], self.sigmas[index + 1], is_start)

    def locate(self, sigma: float) -> StepPlace:
        j = self._step_sigma_index(sigma)
        if j is None:
            return self._place(0, True) if self.current is None else self._place(self.current, False)
        before = self.seen_at.get(j, 0)
        self.seen_at[j] = before + 1
        ahead = self.endpoints(self.sigmas, j, self.options)
        if before < ahead:  # a corrector of step j - (ahead - before) evaluating at sigma_j
            return self._place(j - (ahead - before), False)
        return self._place(j, before == ahead)
