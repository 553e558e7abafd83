"""guidance.progress: tau from the sampler's sigma list and from the model's timestep."""

import math

import pytest
import torch

from guidance.progress import progress_from_sigma_position, progress_from_timestep

SIGMAS = torch.tensor([14.6, 8.0, 4.0, 2.0, 1.0, 0.0])  # 5 steps, last entry is the target


@pytest.mark.parametrize("k", range(5))
def test_each_evaluated_sigma_has_tau_k_over_n_minus_one(k):
    assert progress_from_sigma_position(SIGMAS[k : k + 1], SIGMAS).item() == pytest.approx(k / 4)


def test_geometric_midpoint_between_steps_is_half_a_step():
    """DPM-2 evaluates at exp(mean(log sigma_k, log sigma_k+1)): tau lies half-way."""
    mid = torch.tensor([math.sqrt(8.0 * 4.0)])
    assert progress_from_sigma_position(mid, SIGMAS).item() == pytest.approx(1.5 / 4)


def test_sigmas_outside_the_evaluated_range_clamp():
    out = progress_from_sigma_position(torch.tensor([20.0, 0.5, 0.0]), SIGMAS)
    assert torch.allclose(out, torch.tensor([0.0, 1.0, 1.0]))


def test_batch_of_sigmas():
    out = progress_from_sigma_position(torch.tensor([8.0, 8.0, 1.0]), SIGMAS)
    assert torch.allclose(out, torch.tensor([0.25, 0.25, 1.0]))


def test_single_step_run_is_at_tau_zero():
    assert progress_from_sigma_position(torch.tensor([14.6]), torch.tensor([14.6, 0.0])).item() == 0.0


def test_timestep_progress():
    out = progress_from_timestep(torch.tensor([999.0, 499.5, 0.0]), torch.tensor(999.0))
    assert torch.allclose(out, torch.tensor([0.0, 0.5, 1.0]))
