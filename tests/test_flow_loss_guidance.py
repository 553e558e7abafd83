"""Loss guidance in both noise spaces against the paper's VP / DDIM step, on an exact Gaussian denoiser
(float64): the pack's x0 correction, stepped by the sampler's Euler step, lands where Shen et al.'s
guided DDIM step lands in VP coordinates."""

import pytest
import torch

from guidance import loss_guidance as lg
from guidance.coordinates import FLOW, VE, edm_sigma, signal, space_sigma, vp_norm
from guidance.progress import SOURCES
from guidance.stack import GuidanceStack, GuidanceState

MEAN, VARIANCE = 0.3, 0.7  # the data: x0 ~ N(MEAN, VARIANCE I)
SHAPE = (2, 4, 3, 5)


@pytest.fixture(autouse=True)
def float64():
    """Every tensor of these tests in float64 (restored afterwards for the other test modules)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def per_sample(values, like):
    return values.view(-1, *([1] * (like.ndim - 1)))


def gaussian_denoiser(sigma, space):
    """E[x0 | x] for x = alpha x0 + sigma eps and Gaussian data: exact, differentiable."""
    alpha = signal(sigma, space)

    def denoise(x):
        a, s = per_sample(alpha, x), per_sample(sigma, x)
        return MEAN + a * VARIANCE / (a**2 * VARIANCE + s**2) * (x - a * MEAN)

    return denoise


def distance_loss(target):
    def objective(x0, augmentation):
        return (x0 - target).flatten(1).norm(dim=1)

    return objective


class ExactEvaluator:
    step_start = True

    def __init__(self, denoise):
        self.denoise = denoise

    def predictions(self, x):
        x0 = self.denoise(x)
        return x0, x0

    def guided(self, x):
        return self.denoise(x)


def pack_landing(space, rule, gradient, sigma, sigma_next, x, target, scale):
    """Where the sampler's Euler step from x lands with the pack's correction, in VP coordinates."""
    denoise = gaussian_denoiser(sigma, space)
    x0 = denoise(x)
    state = GuidanceState(
        cond=x0,
        uncond=x0,
        x=x,
        sigma=sigma,
        base_scale=3.0,
        progress={source: torch.full((x.shape[0],), 0.5) for source in SOURCES},
        scale=3.0,
        sigma_next=sigma_next,
        evaluator=ExactEvaluator(denoise),
        space=space,
    )
    config = lg.LossGuidanceConfig(scale=scale, rule=rule, gradient=gradient, augmentations=0)
    out = GuidanceStack().with_term(lg.loss_guidance_term(config, distance_loss(target))).run(state)
    landed = lg.euler_step(x, x0 + out.correction, sigma, sigma_next)
    return landed / per_sample(vp_norm(sigma_next, space), landed)


def paper_landing(space, rule, gradient, sigma, sigma_next, x, target, scale):
    """Shen et al. (arXiv 2403.12404) Alg. 1-2 with a DDIM step, written in VP coordinates."""
    norm, norm_next = vp_norm(sigma, space), vp_norm(sigma_next, space)
    root_abar = signal(sigma, space) / norm
    root_abar_next = signal(sigma_next, space) / norm_next
    denoise = gaussian_denoiser(sigma, space)

    def x0_of_vp(x_vp):
        return denoise(x_vp * per_sample(norm, x_vp))

    x_vp = x / per_sample(norm, x)
    x0 = x0_of_vp(x_vp)
    eps = (x_vp - per_sample(root_abar, x) * x0) / per_sample((1 - root_abar**2).sqrt(), x)
    loss = lambda x0: distance_loss(target)(x0, None).sum()  # noqa: E731
    if gradient == lg.THROUGH_DENOISER:
        leaf = x_vp.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(loss(x0_of_vp(leaf)), leaf)
    else:  # Tweedie's estimate with the denoiser's Jacobian dropped: d x0 / d x_vp = I / sqrt(abar)
        leaf = x0.clone().requires_grad_(True)
        (grad_x0,) = torch.autograd.grad(loss(leaf), leaf)
        grad = grad_x0 / per_sample(root_abar, grad_x0)
    if rule == lg.FIXED:
        step = scale * per_sample(root_abar, grad) * grad
    else:
        norms = grad.flatten(1).norm(dim=1)
        step = scale * per_sample(eps.flatten(1).norm(dim=1) / norms**2, grad) * grad
    ddim = per_sample(root_abar_next, x) * x0 + per_sample((1 - root_abar_next**2).sqrt(), x) * eps
    return ddim - step


@pytest.mark.parametrize("space", [VE, FLOW])
@pytest.mark.parametrize("rule", lg.STEP_RULES)
@pytest.mark.parametrize("gradient", lg.GRADIENT_PATHS)
@pytest.mark.parametrize("edm_level, edm_next", [(5.0, 2.0), (0.8, 0.3), (0.3, 0.0)])
def test_the_packs_step_is_the_papers_vp_ddim_step(space, rule, gradient, edm_level, edm_next):
    sigma = torch.full((SHAPE[0],), space_sigma(edm_level, space))
    sigma_next = torch.full((SHAPE[0],), space_sigma(edm_next, space))
    x = MEAN * signal(sigma, space)[0] + torch.randn(SHAPE, generator=gen(1)) * 1.2
    target = torch.randn(SHAPE, generator=gen(2))
    scale = 0.3 if rule == lg.POLYAK else 0.5
    ours = pack_landing(space, rule, gradient, sigma, sigma_next, x, target, scale)
    paper = paper_landing(space, rule, gradient, sigma, sigma_next, x, target, scale)
    unguided = paper_landing(space, rule, gradient, sigma, sigma_next, x, target, 0.0)
    assert (paper - unguided).abs().max() > 1e-4  # the guidance moves the landing point
    assert torch.allclose(ours, paper, rtol=0, atol=1e-12)


@pytest.mark.parametrize("gradient", lg.GRADIENT_PATHS)
def test_polyak_step_of_a_flow_model_is_finite_and_zero_at_sigma_one(gradient):
    x = torch.randn(SHAPE, generator=gen(3))
    target = torch.randn(SHAPE, generator=gen(4))
    ones = torch.ones(SHAPE[0])
    for rule in lg.STEP_RULES:
        landed = pack_landing(FLOW, rule, gradient, ones, ones * 0.9, x, target, 0.5)
        unguided = pack_landing(FLOW, rule, gradient, ones, ones * 0.9, x, target, 0.0)
        assert torch.isfinite(landed).all()
        if rule == lg.POLYAK:
            assert torch.equal(landed, unguided)


def test_flow_time_travel_renoising_restores_sigma_and_scales_the_signal():
    sigma, sigma_next = torch.tensor([0.7]), torch.tensor([0.4])
    x0 = torch.randn(1, 200_000, generator=gen(5))
    x_next = signal(sigma_next, FLOW) * x0 + sigma_next * torch.randn(x0.shape, generator=gen(6))
    back = lg.renoise(x_next, sigma, sigma_next, torch.randn(x0.shape, generator=gen(7)), FLOW)
    residual = back - signal(sigma, FLOW) * x0
    assert residual.std().item() == pytest.approx(0.7, rel=0.01)
    silent = lg.renoise(signal(sigma_next, FLOW) * x0, sigma, sigma_next, torch.zeros_like(x0), FLOW)
    assert torch.allclose(silent, signal(sigma, FLOW) * x0)


def test_edm_sigma_maps_flow_sigma_to_the_noise_to_signal_ratio():
    sigma = torch.tensor([0.0, 0.219, 0.5, 0.844, 1.0])
    edm = edm_sigma(sigma, FLOW)
    assert edm[:4].tolist() == pytest.approx([0.0, 0.219 / 0.781, 1.0, 0.844 / 0.156])
    assert edm[4] == float("inf")
    assert space_sigma(0.28, FLOW) == pytest.approx(0.21875) and space_sigma(5.42, FLOW) == pytest.approx(0.84424, 1e-4)
    assert torch.equal(edm_sigma(sigma, VE), sigma)
