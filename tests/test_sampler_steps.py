"""StepLocator on the evaluation sequences of ComfyUI's multi-evaluation samplers (no model needed;
the in-process test in test_loss_guidance_inprocess.py checks the same on real sampling)."""

import importlib.util
import os

import pytest
from conftest import PACK_DIR


def _load_sampler_steps():
    """nodes/sampler_steps.py imports nothing from ComfyUI; load it by path (ComfyUI owns `nodes`)."""
    path = os.path.join(PACK_DIR, "nodes", "sampler_steps.py")
    spec = importlib.util.spec_from_file_location("dnpg_sampler_steps", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


StepLocator = _load_sampler_steps().StepLocator

SIGMAS = [14.6, 7.0, 3.0, 1.2, 0.4, 0.0]


def places(sampler, evaluations, sigmas=SIGMAS):
    locator = StepLocator(sigmas, sampler)
    return [(p.index, p.is_start, p.sigma_start, p.sigma_end) for p in map(locator.locate, evaluations)]


def step(i, start, sigmas=SIGMAS):
    return (i, start, sigmas[i], sigmas[i + 1])


def test_euler_every_evaluation_starts_its_step():
    assert places("sample_euler", SIGMAS[:-1]) == [step(i, True) for i in range(5)]


def test_heun_corrector_at_the_next_sigma_belongs_to_the_step():
    evaluations, expected = [], []
    for i in range(5):
        evaluations.append(SIGMAS[i])
        expected.append(step(i, True))
        if SIGMAS[i + 1] != 0:
            evaluations.append(SIGMAS[i + 1])
            expected.append(step(i, False))
    assert places("sample_heun", evaluations) == expected


def test_heunpp2_evaluates_one_and_two_sigmas_ahead():
    end = SIGMAS[-1]
    evaluations, expected = [], []
    for i in range(5):
        evaluations.append(SIGMAS[i])
        expected.append(step(i, True))
        if SIGMAS[i + 1] != end:
            evaluations.append(SIGMAS[i + 1])
            expected.append(step(i, False))
            if SIGMAS[i + 2] != end:
                evaluations.append(SIGMAS[i + 2])
                expected.append(step(i, False))
    assert places("sample_heunpp2", evaluations) == expected


def test_interior_sub_steps_belong_to_their_step():
    """DPM-2 / dpmpp_sde / dpmpp_2s_ancestral: one evaluation between sigma_i and sigma_{i+1}."""
    evaluations, expected = [], []
    for i in range(5):
        evaluations.append(SIGMAS[i])
        expected.append(step(i, True))
        if SIGMAS[i + 1] != 0:
            evaluations.append((SIGMAS[i] * SIGMAS[i + 1]) ** 0.5)
            expected.append(step(i, False))
    assert places("sample_dpm_2", evaluations) == expected


def test_a_stage_below_the_steps_end_stays_in_the_step():
    """An ancestral stage can lie below sigma_{i+1} (between it and sigma_down): still step i."""
    assert places("an_ancestral_sampler", [14.6, 2.65, 7.0]) == [step(0, True), step(0, False), step(1, True)]


@pytest.mark.parametrize("sampler", ["sample_dpm_2_ancestral", "sample_dpmpp_2s_ancestral"])
def test_ancestral_midpoint_at_eta_one_is_the_next_sigma(sampler):
    """eta = 1: sigma_down = sigma_{i+1}^2 / sigma_i, so the midpoint sqrt(sigma_i sigma_down) = sigma_{i+1}."""
    sigma_i, sigma_next = 14.6, 7.0
    sigma_up = (sigma_next**2 * (sigma_i**2 - sigma_next**2) / sigma_i**2) ** 0.5  # get_ancestral_step
    midpoint = (sigma_i * (sigma_next**2 - sigma_up**2) ** 0.5) ** 0.5
    assert midpoint == pytest.approx(sigma_next, rel=1e-9)
    assert places(sampler, [14.6, midpoint, 7.0]) == [step(0, True), step(0, False), step(1, True)]
    other_eta = StepLocator(SIGMAS, sampler, {"eta": 0.5})
    assert [p.is_start for p in map(other_eta.locate, [14.6, 9.0, 7.0])] == [True, False, True]


def test_a_second_evaluation_at_the_steps_sigma_stays_in_the_step():
    """SA-Solver PECE re-evaluates the corrected state at sigma_i."""
    evaluations = [s for s in SIGMAS[:-1] for _ in range(2)]
    expected = [step(i, first) for i in range(5) for first in (True, False)]
    assert places("sample_sa_solver_pece", evaluations) == expected


def test_a_shifted_first_sigma_still_starts_step_zero():
    assert places("sample_seeds_2", [13.9, 7.0])[:2] == [step(0, True), step(1, True)]


def test_a_split_pass_ending_above_zero_keeps_the_last_corrector_in_the_last_step():
    first_pass = SIGMAS[:4]  # 14.6 .. 1.2, returned with leftover noise
    evaluations = [14.6, 7.0, 7.0, 3.0, 3.0, 1.2]
    expected = [step(0, True, first_pass), step(0, False, first_pass), step(1, True, first_pass)]
    expected += [step(1, False, first_pass), step(2, True, first_pass), step(2, False, first_pass)]
    assert places("sample_heun", evaluations, first_pass) == expected


@pytest.mark.parametrize("sampler", ["sample_euler", "sample_dpmpp_2m", "an_unknown_sampler", ""])
def test_unknown_or_single_evaluation_samplers_need_no_table(sampler):
    assert [p[1] for p in places(sampler, [14.6, 7.0, 3.0])] == [True, True, True]
