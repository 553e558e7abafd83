"""guidance.schedules: every formula of Wang et al. (arXiv 2404.13040) and the guidance interval, in ComfyUI's s convention."""

import math

import pytest
import torch

from guidance.schedules import DECREASING, INCREASING, KINDS, cfg_scale, validate_schedule

S0 = 7.5
W0 = S0 - 1
TAUS = [0.0, 0.1, 0.25, 0.5, 0.6, 0.9, 1.0]

# The paper's w(tau), written out independently of the module (s = w + 1).
EXPECTED_W = {
    "static": lambda t: W0,
    "linear": lambda t: 2 * W0 * t,
    "cosine": lambda t: W0 * (1 - math.cos(math.pi * t)),
    "invlinear": lambda t: 2 * W0 * (1 - t),
    "sine": lambda t: W0 * (1 + math.cos(math.pi * t)),
    "v-shape": lambda t: 2 * W0 * abs(1 - 2 * t),
    "lambda-shape": lambda t: 2 * W0 * (1 - abs(1 - 2 * t)),
}


@pytest.mark.parametrize("tau", TAUS)
@pytest.mark.parametrize("kind", sorted(EXPECTED_W))
def test_heuristic_families_match_the_formulas(kind, tau):
    assert cfg_scale(kind, tau, S0) == pytest.approx(EXPECTED_W[kind](tau) + 1)


@pytest.mark.parametrize("tau", TAUS)
def test_pcs_is_power_cosine(tau):
    assert cfg_scale("pcs", tau, S0, s=3.0) == pytest.approx(W0 * (1 - math.cos(math.pi * tau**3.0)) + 1)


@pytest.mark.parametrize("tau", TAUS)
def test_pcs_with_power_one_is_cosine(tau):
    assert cfg_scale("pcs", tau, S0, s=1.0) == pytest.approx(cfg_scale("cosine", tau, S0))


@pytest.mark.parametrize("tau", TAUS)
def test_clamps_floor_the_returned_scale(tau):
    assert cfg_scale("clamp-linear", tau, S0, c=3.0) == pytest.approx(max(3.0, 2 * W0 * tau + 1))
    assert cfg_scale("clamp-cosine", tau, S0, c=3.0) == pytest.approx(max(3.0, W0 * (1 - math.cos(math.pi * tau)) + 1))


def test_paper_clamp_linear_example():
    """Wang et al.: w = max(1, 2 w0 tau) with w0 = 14, i.e. s0 = 15 and a floor of s = 2."""
    for tau in TAUS:
        assert cfg_scale("clamp-linear", tau, 15.0, c=2.0) == pytest.approx(max(1, 2 * 14 * tau) + 1)


def test_clamp_default_floor_is_two():
    assert cfg_scale("clamp-linear", 0.0, S0) == 2.0


@pytest.mark.parametrize("kind", sorted(EXPECTED_W))
def test_normalised_families_average_to_the_static_scale(kind):
    taus = torch.linspace(0, 1, 20001, dtype=torch.float64)
    mean_s = torch.trapezoid(cfg_scale(kind, taus, S0), taus).item()
    assert mean_s == pytest.approx(S0, rel=1e-6)


@pytest.mark.parametrize("kind", INCREASING)
def test_increasing_kinds_grow_with_progress(kind):
    values = cfg_scale(kind, torch.linspace(0, 1, 101, dtype=torch.float64), S0)
    assert torch.all(values[1:] >= values[:-1])
    assert values[-1] > values[0]


@pytest.mark.parametrize("kind", DECREASING)
def test_decreasing_kinds_fall_with_progress(kind):
    values = cfg_scale(kind, torch.linspace(0, 1, 101, dtype=torch.float64), S0)
    assert torch.all(values[1:] <= values[:-1])
    assert values[-1] < values[0]


def test_linear_runs_from_one_to_twice_w0_plus_one():
    assert cfg_scale("linear", 0.0, S0) == pytest.approx(1.0)
    assert cfg_scale("linear", 1.0, S0) == pytest.approx(2 * W0 + 1)


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "interval"])
def test_tensor_in_tensor_out_with_the_float_values(kind):
    taus = torch.tensor(TAUS)
    out = cfg_scale(kind, taus, S0)
    assert isinstance(out, torch.Tensor) and out.shape == taus.shape and out.dtype == taus.dtype
    assert torch.allclose(out, torch.tensor([cfg_scale(kind, t, S0) for t in TAUS]), atol=1e-5)


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "interval"])
def test_float_in_float_out(kind):
    assert isinstance(cfg_scale(kind, 0.3, S0), float)


def test_static_returns_s0_exactly():
    assert cfg_scale("static", 0.37, 7.3) == 7.3
    assert torch.equal(cfg_scale("static", torch.tensor([0.2, 0.9]), 7.3), torch.tensor([7.3, 7.3]))


@pytest.mark.parametrize(
    "sigma, expected",
    [(0.1, 1.0), (0.28, 1.0), (0.29, S0), (3.0, S0), (5.42, S0), (5.43, 1.0), (14.6, 1.0)],
)
def test_interval_guides_only_inside_lo_hi(sigma, expected):
    assert cfg_scale("interval", 0.5, S0, sigma=sigma, sigma_lo=0.28, sigma_hi=5.42) == expected


def test_interval_with_tensor_sigma():
    sigma = torch.tensor([0.1, 1.0, 9.0])
    out = cfg_scale("interval", torch.tensor([0.5, 0.5, 0.5]), S0, sigma=sigma, sigma_lo=0.28, sigma_hi=5.42)
    assert torch.equal(out, torch.tensor([1.0, S0, 1.0]))


def test_tensor_tau_outside_unit_interval_is_clamped():
    out = cfg_scale("linear", torch.tensor([-0.5, 1.5]), S0)
    assert torch.allclose(out, torch.tensor([1.0, 2 * W0 + 1]))


@pytest.mark.parametrize(
    "kind, tau, s0, params, fragment",
    [
        ("quadratic", 0.5, S0, {}, "valid kinds: static, linear"),
        ("linear", 0.5, -1.0, {}, "s0 must be"),
        ("linear", 0.5, float("nan"), {}, "s0 must be"),
        ("linear", 1.5, S0, {}, "tau must lie in [0, 1]"),
        ("linear", 0.5, S0, {"slope": 2}, "unknown schedule parameter"),
        ("pcs", 0.5, S0, {"s": 0.0}, "pcs power s must be > 0"),
        ("clamp-linear", 0.5, S0, {"c": float("inf")}, "clamp floor c"),
        ("interval", 0.5, S0, {"sigma": 1.0, "sigma_lo": 5.0, "sigma_hi": 1.0}, "sigma_lo < sigma_hi"),
        ("interval", 0.5, S0, {"sigma": 1.0, "sigma_lo": -1.0, "sigma_hi": 1.0}, "0 <= sigma_lo"),
        ("interval", 0.5, S0, {"sigma_lo": 0.2, "sigma_hi": 1.0}, "needs the parameter(s) ['sigma']"),
    ],
)
def test_invalid_input_raises_value_error_naming_the_problem(kind, tau, s0, params, fragment):
    with pytest.raises(ValueError) as error:
        cfg_scale(kind, tau, s0, **params)
    assert fragment in str(error.value)


def test_validate_schedule_checks_interval_bounds_without_sigma():
    validate_schedule("interval", sigma_lo=0.28, sigma_hi=5.42)
    with pytest.raises(ValueError, match="sigma_lo < sigma_hi"):
        validate_schedule("interval", sigma_lo=6.0, sigma_hi=5.42)
