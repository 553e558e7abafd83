"""Loss guidance maths (guidance/loss_guidance.py, guidance/losses.py), plain torch."""

import math

import pytest
import torch

from guidance import loss_guidance as lg
from guidance import losses
from guidance.progress import SOURCES, next_sigma
from guidance.stack import GuidanceStack, GuidanceState, apply_stack

SIGMA, SIGMA_NEXT = 3.0, 2.0


def sigmas(value, batch=2):
    return torch.full((batch,), value)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_polyak_step_is_eta_eps_norm_over_squared_gradient_norm():
    grad, eps = torch.randn(2, 4, 8, 8, generator=gen(1)), torch.randn(2, 4, 8, 8, generator=gen(2))
    step = lg.polyak_step(grad, eps, 0.3)
    for b in range(2):
        expected = 0.3 * eps[b].norm() / grad[b].norm() ** 2 * grad[b]
        assert torch.allclose(step[b], expected, rtol=1e-5)


def test_polyak_step_is_zero_for_a_vanishing_gradient():
    grad = torch.stack([torch.full((4, 8, 8), 1e-9), torch.ones(4, 8, 8)])
    step = lg.polyak_step(grad, torch.ones(2, 4, 8, 8), 1.0)
    assert torch.equal(step[0], torch.zeros(4, 8, 8)) and step[1].abs().sum() > 0


def test_fixed_step_is_eta_sqrt_alpha_bar_times_the_vp_gradient():
    grad = torch.randn(2, 4, 4, 4, generator=gen(3))
    abar = 1 / (1 + SIGMA**2)
    assert torch.allclose(lg.fixed_step(grad, sigmas(SIGMA), 0.5), 0.5 * math.sqrt(abar) * grad)


def test_vp_gradient_follows_the_chain_rule_of_the_ve_vp_map():
    # l(x_vp) = <w, x_vp / sqrt(abar)>: its VP gradient is w / sqrt(abar), its VE gradient w.
    w = torch.randn(1, 4, 4, 4, generator=gen(4))
    abar = 1 / (1 + SIGMA**2)
    assert torch.allclose(lg.vp_gradient(w, sigmas(SIGMA, 1)), w / math.sqrt(abar))


def test_x0_correction_moves_the_euler_step_by_the_vp_step_in_ve_units():
    x, x0 = torch.randn(2, 4, 8, 8, generator=gen(5)), torch.randn(2, 4, 8, 8, generator=gen(6))
    step_vp = torch.randn(2, 4, 8, 8, generator=gen(7))
    sigma, sigma_next = sigmas(SIGMA), sigmas(SIGMA_NEXT)
    moved = lg.euler_step(x, x0 + lg.x0_correction(step_vp, sigma, sigma_next), sigma, sigma_next)
    expected_shift = -step_vp * math.sqrt(
        1 + SIGMA_NEXT**2
    )  # x_next_vp -= step  <=>  x_next_ve -= step / sqrt(abar_next)
    assert torch.allclose(moved - lg.euler_step(x, x0, sigma, sigma_next), expected_shift, atol=1e-5)


def test_x0_reaching_inverts_the_euler_step():
    x, x_next = torch.randn(2, 4, 8, 8, generator=gen(8)), torch.randn(2, 4, 8, 8, generator=gen(9))
    sigma, sigma_next = sigmas(SIGMA), sigmas(SIGMA_NEXT)
    x0 = lg.x0_reaching(x, x_next, sigma, sigma_next)
    assert torch.allclose(lg.euler_step(x, x0, sigma, sigma_next), x_next, atol=1e-5)


def test_renoising_restores_the_variance_of_the_higher_sigma():
    # x_{t-1} = x0 + sigma_{t-1} n1 re-noised to sigma_t must be x0 + sigma_t n (variance sigma_t^2 around x0).
    x0 = torch.full((20000, 1, 4, 4), 0.7)
    x_prev = x0 + SIGMA_NEXT * torch.randn(x0.shape, generator=gen(10))
    x_t = lg.renoise(x_prev, sigmas(SIGMA, 20000), sigmas(SIGMA_NEXT, 20000), torch.randn(x0.shape, generator=gen(11)))
    assert abs((x_t - x0).var().item() - SIGMA**2) < 0.05 * SIGMA**2
    assert abs((x_t - x0).mean().item()) < 0.02


def test_augmentations_are_seeded():
    first = lg.draw_augmentation(2, 5, gen(12))
    again = lg.draw_augmentation(2, 5, gen(12))
    other = lg.draw_augmentation(2, 5, gen(13))
    image = torch.rand(10, 3, 16, 16, generator=gen(14))
    assert torch.equal(first.image(image), again.image(image))
    assert not torch.allclose(first.image(image), other.image(image))


def test_augmented_views_differ_from_the_input_and_pass_gradients():
    image = torch.rand(2, 3, 16, 16, generator=gen(15)).requires_grad_(True)
    augmentation = lg.draw_augmentation(2, 4, gen(16))
    views = augmentation.image(lg.tile(image, 4))
    assert views.shape == (8, 3, 16, 16)
    assert not torch.allclose(views, lg.tile(image, 4).detach(), atol=1e-3)
    (grad,) = torch.autograd.grad(views.square().sum(), image)
    assert torch.isfinite(grad).all() and (grad.abs().sum(dim=(1, 2, 3)) > 0).all()


def test_zero_augmentations_is_the_identity():
    augmentation = lg.draw_augmentation(2, 0, gen())
    image = torch.rand(2, 3, 8, 8)
    assert augmentation.count == 1 and torch.equal(augmentation.image(image), image)


def test_cutout_zeroes_a_square_of_the_drawn_side():
    augmentation = lg.draw_augmentation(1, 1, gen(17), strength=2.0)  # side 1/2 of the image
    mask = augmentation.cutout_mask(32, 32, torch.zeros(1))
    zeros = (mask == 0).sum().item()
    assert 12 * 12 <= zeros <= 16 * 16


def test_loss_gradient_of_a_quadratic_is_its_analytic_gradient():
    x0, target = torch.randn(2, 4, 8, 8, generator=gen(18)), torch.randn(1, 4, 8, 8, generator=gen(19))
    grad, value = lg.loss_gradient(lambda x: (x - target).flatten(1).norm(dim=1), x0)
    residual = x0 - target
    expected = residual / residual.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    assert torch.allclose(grad, expected, atol=1e-6)
    assert torch.allclose(value, residual.flatten(1).norm(dim=1))


def test_loss_gradient_works_inside_inference_mode_and_leaves_it_on():
    with torch.inference_mode():
        x0 = torch.randn(1, 4, 4, 4)
        grad, _ = lg.loss_gradient(lambda x: x.square().sum(dim=(1, 2, 3)), x0)
        assert torch.is_inference_mode_enabled() and not torch.is_grad_enabled()
    assert torch.allclose(grad, 2 * x0) and grad.grad_fn is None


def test_gradient_through_the_denoiser_includes_its_jacobian():
    # D(x) = a * x: d l(D(x)) / dx = a * (dl/dx0).
    x = torch.randn(1, 4, 4, 4, generator=gen(20))
    objective = lambda x0: x0.square().sum(dim=(1, 2, 3))  # noqa: E731
    through, _ = lg.loss_gradient(objective, x, lambda v: 0.5 * v)
    x0_only, _ = lg.loss_gradient(objective, 0.5 * x)
    assert torch.allclose(through, 0.5 * x0_only)


class LinearEvaluator:
    """D(x) = a * x for both passes; counts the guided re-evaluations."""

    step_start = True

    def __init__(self, a=0.5):
        self.a, self.guided_calls = a, 0

    def predictions(self, x):
        return self.a * x, self.a * x

    def guided(self, x):
        self.guided_calls += 1
        return self.a * x


def state_for(x, tau=0.5, evaluator=None, seed=0):
    batch = x.shape[0]
    return GuidanceState(
        cond=0.5 * x,
        uncond=0.5 * x,
        x=x,
        sigma=sigmas(SIGMA, batch),
        base_scale=7.0,
        progress={source: torch.full((batch,), tau) for source in SOURCES},
        scale=7.0,
        sigma_next=sigmas(SIGMA_NEXT, batch),
        seed=seed,
        evaluator=evaluator,
    )


def mean_objective(target):
    """|mean(view) - target| averaged over the views: a loss with a known gradient."""

    def objective(x0, augmentation):
        views = augmentation.image(lg.tile(x0, augmentation.count))
        return (views.mean(dim=(1, 2, 3)) - target).abs().view(augmentation.count, -1).mean(0)

    return objective


def test_term_outside_its_window_changes_nothing():
    config = lg.LossGuidanceConfig(scale=1.0, augmentations=0, start=0.6, end=1.0)
    stack = GuidanceStack().with_term(lg.loss_guidance_term(config, mean_objective(1.0)))
    x = torch.randn(1, 4, 8, 8, generator=gen(21))
    state = state_for(x, tau=0.5)
    plain = 0.5 * x
    assert torch.equal(apply_stack(stack, plain, state), plain)


def test_term_inside_its_window_applies_the_polyak_correction():
    config = lg.LossGuidanceConfig(scale=0.2, augmentations=0)
    x = torch.randn(1, 4, 8, 8, generator=gen(22))
    state = state_for(x)
    out = GuidanceStack().with_term(lg.loss_guidance_term(config, mean_objective(1.0))).run(state)
    x0 = 0.5 * x
    grad, _ = lg.loss_gradient(lambda v: (v.mean(dim=(1, 2, 3)) - 1.0).abs(), x0)
    eps = (x - x0) / SIGMA
    step = lg.polyak_step(lg.vp_gradient(grad, state.sigma), eps, 0.2)
    assert torch.allclose(out.correction, lg.x0_correction(step, state.sigma, state.sigma_next), atol=1e-6)


def test_guidance_lowers_the_loss_of_the_next_estimate():
    config = lg.LossGuidanceConfig(scale=0.05, augmentations=0)
    x = torch.randn(1, 4, 8, 8, generator=gen(23))
    term = lg.loss_guidance_term(config, mean_objective(2.0))
    out = GuidanceStack().with_term(term).run(state_for(x))
    before = (0.5 * x).mean() - 2.0
    after = (0.5 * x + out.correction).mean() - 2.0
    assert abs(after) < abs(before)


def test_time_travel_re_evaluates_repeats_minus_one_times_and_is_seeded():
    x = torch.randn(1, 4, 8, 8, generator=gen(24))
    config = lg.LossGuidanceConfig(scale=0.05, augmentations=0, travel_repeats=4, travel_start=0.0, travel_end=1.0)
    term = lg.loss_guidance_term(config, mean_objective(1.0))
    evaluator = LinearEvaluator()
    first = GuidanceStack().with_term(term).run(state_for(x, evaluator=evaluator, seed=5))
    assert evaluator.guided_calls == 3
    again = GuidanceStack().with_term(term).run(state_for(x, evaluator=LinearEvaluator(), seed=5))
    other = GuidanceStack().with_term(term).run(state_for(x, evaluator=LinearEvaluator(), seed=6))
    assert torch.equal(first.correction, again.correction) and not torch.allclose(first.correction, other.correction)


def test_time_travel_lands_where_the_last_repeat_stepped():
    x = torch.randn(1, 4, 8, 8, generator=gen(25))
    state = state_for(x, evaluator=LinearEvaluator())
    travelled = lg.time_travel(state, 3, gen(26))
    generator = gen(26)
    x_next = lg.euler_step(x, 0.5 * x, state.sigma, state.sigma_next)
    for _ in range(2):
        back = lg.renoise(x_next, state.sigma, state.sigma_next, torch.randn(x.shape, generator=generator))
        x_next = lg.euler_step(back, 0.5 * back, state.sigma, state.sigma_next)
    landed = lg.euler_step(x, lg.guided_x0(travelled), state.sigma, state.sigma_next)
    assert torch.allclose(landed, x_next, atol=1e-5)


def test_time_travel_outside_its_window_or_in_a_sub_step_does_not_run():
    x = torch.randn(1, 4, 8, 8, generator=gen(27))
    config = lg.LossGuidanceConfig(scale=0.05, augmentations=0, travel_repeats=3, travel_start=0.8, travel_end=1.0)
    evaluator = LinearEvaluator()
    GuidanceStack().with_term(lg.loss_guidance_term(config, mean_objective(1.0))).run(state_for(x, 0.5, evaluator))
    sub_step = LinearEvaluator()
    sub_step.step_start = False
    config = lg.LossGuidanceConfig(scale=0.05, augmentations=0, travel_repeats=3, travel_start=0.0, travel_end=1.0)
    GuidanceStack().with_term(lg.loss_guidance_term(config, mean_objective(1.0))).run(state_for(x, 0.5, sub_step))
    assert evaluator.guided_calls == 0 and sub_step.guided_calls == 0


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"rule": "adam"}, "step rule"),
        ({"scale": -1.0}, "scale must be >= 0"),
        ({"travel_repeats": 0}, "repeats >= 1"),
        ({"start": 0.9, "end": 0.1}, "start <= end"),
    ],
)
def test_bad_settings_are_refused_by_name(changes, fragment):
    with pytest.raises(ValueError, match=fragment):
        lg.LossGuidanceConfig(**{"scale": 1.0, **changes})


def test_next_sigma_is_the_following_step_and_zero_after_the_last():
    schedule = torch.tensor([10.0, 5.0, 2.0, 0.0])
    assert torch.equal(next_sigma(torch.tensor([10.0, 5.0, 2.0]), schedule), torch.tensor([5.0, 2.0, 0.0]))
    assert torch.equal(next_sigma(torch.tensor([7.0]), schedule), torch.tensor([5.0]))  # a Heun sub-step


def test_colour_target_residual_is_mean_colour_minus_target():
    image = torch.zeros(1, 3, 4, 4)
    image[:, 0] = 1.0
    loss = losses.colour_target((0.5, 0.0, 0.25))
    residual = loss.residual(image, lg.Identity(), 1)
    assert torch.allclose(residual, torch.tensor([[0.5, 0.0, -0.25]]))


def test_masked_colour_target_only_sees_the_masked_pixels():
    image = torch.zeros(1, 3, 4, 4)
    image[..., :2] = 1.0  # left half white
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4] = 1.0  # left half, at twice the size (resized to the image)
    loss = losses.colour_target((1.0, 1.0, 1.0), mask)
    assert torch.allclose(loss.residual(image, lg.Identity(), 1), torch.zeros(1, 3), atol=1e-6)


def test_brightness_target_uses_rec601_luma():
    image = torch.zeros(1, 3, 2, 2)
    image[:, 1] = 1.0  # pure green: luma 0.587
    residual = losses.brightness_target(0.5).residual(image, lg.Identity(), 1)
    assert torch.allclose(residual, torch.tensor([[0.087]]), atol=1e-6)


def test_reference_of_another_aspect_ratio_is_refused_with_sizes():
    loss = losses.reference_target(torch.zeros(1, 3, 10, 20), losses.IMAGE)
    with pytest.raises(ValueError, match="20x10 .* 8x8"):
        loss.residual(torch.zeros(1, 3, 8, 8), lg.Identity(), 1)
    with pytest.raises(ValueError, match="mask is 16x8 px but the image being generated is 512x512 px"):
        losses.check_aspect((losses.colour_target((0, 0, 0), torch.ones(1, 1, 8, 16)),), 512, 512)


def test_reference_batch_must_be_one_or_the_batch():
    loss = losses.reference_target(torch.zeros(3, 3, 8, 8), losses.IMAGE)
    with pytest.raises(ValueError, match="batch of 3 but 2"):
        loss.residual(torch.zeros(2, 3, 8, 8), lg.Identity(), 2)


def test_embedding_target_norm_is_the_chordal_distance_of_unit_vectors():
    loss = losses.embedding_target("emb", lambda views: views.flatten(1)[:, :2], torch.tensor([[1.0, 0.0]]))
    image = torch.zeros(1, 3, 2, 2)
    image[0, 0, 0, 1] = 1.0  # embedding (0, 1): orthogonal to the target
    residual = loss.residual(image, lg.Identity(), 1)
    assert torch.allclose(residual.norm(dim=1), torch.tensor([math.sqrt(2.0)]))


def test_objective_averages_views_and_weights_losses():
    x0 = torch.zeros(2, 3, 4, 4)
    first = losses.colour_target((1.0, 0.0, 0.0), weight=2.0)
    second = losses.brightness_target(1.0, weight=0.5)
    value = losses.objective((first, second), x0, lg.Identity(), lambda v: v, lambda v: v)
    assert torch.allclose(value, torch.full((2,), 2.0 * 1.0 + 0.5 * 1.0))


def test_term_asks_the_glue_for_the_sampler_step():
    from guidance.stack import SAMPLER_STEP

    term = lg.loss_guidance_term(lg.LossGuidanceConfig(scale=1.0), mean_objective(1.0))
    assert SAMPLER_STEP in GuidanceStack().with_term(term).requirements()


def test_correction_inside_a_step_uses_the_steps_interval():
    """An evaluation at sigma inside the step sigma_start -> sigma_next: the lever is
    sigma / (sigma_start - sigma_next), so a midpoint evaluation whose slope alone moves x (DPM-2)
    shifts x_next by the requested amount."""
    step_vp = torch.randn(2, 4, 8, 8)
    start, mid, end = sigmas(2.0), sigmas(1.0), sigmas(0.5)
    delta = lg.x0_correction(step_vp, mid, end, start)
    # DPM-2's update x_next = x + (end - start) * (x_mid - x0_mid) / mid: a change of x0_mid by delta
    shift = -((end - start) / mid).view(-1, 1, 1, 1) * delta
    assert torch.allclose(shift, -step_vp * (1 + 0.5**2) ** 0.5, atol=1e-5)
    assert torch.equal(lg.x0_correction(step_vp, start, end, start), lg.x0_correction(step_vp, start, end))
