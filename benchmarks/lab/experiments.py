"""The lab's experiments: the pack's guidance code (guidance/) sampling the exact-score toy model.

Every guided prediction goes through `guidance.stack.apply_stack` with the same terms the ComfyUI
nodes put on a MODEL (`dns_terms`, `schedule_term`, `loss_guidance_term`); only the denoiser is the
toy's exact one instead of a UNet, and the sampler is Euler over Karras sigmas in VE space, as
ComfyUI's `euler` with the `karras` scheduler.
"""

import time
from dataclasses import dataclass, field
from functools import partial
from typing import Optional

import torch

from guidance import losses
from guidance.dns import dns_terms
from guidance.loss_guidance import (
    THROUGH_DENOISER,
    X0_ONLY,
    Identity,
    LossGuidanceConfig,
    euler_step,
    loss_guidance_term,
)
from guidance.progress import SIGMA_POSITION, TIMESTEP, progress_from_sigma_position
from guidance.schedules import schedule_term
from guidance.stack import GuidanceStack, GuidanceState, apply_stack, cfg_x0

from . import stats
from .stats import Measure
from .toy import Mixture, karras_sigmas

PROMPT = 0  # the prompt p is class 0 in every experiment


@dataclass
class Setting:
    """One way of sampling: the stack on the model, the prompt pair and the sampler's cfg."""

    name: str
    scale: float
    stack: GuidanceStack = field(default_factory=GuidanceStack)
    negative: Optional[int] = None  # None = the empty prompt (the marginal)


class ToyEvaluator:
    """GuidanceState.evaluator for the toy: exact predictions and the whole guided estimate."""

    def __init__(self, sampler: "Sampler", sigma, sigma_next, step_start: bool):
        self.sampler, self.sigma, self.sigma_next, self.step_start = sampler, sigma, sigma_next, step_start

    def predictions(self, x):
        return self.sampler.predictions(x, self.sigma)

    def guided(self, x):
        return self.sampler.guided(x, self.sigma, self.sigma_next, step_start=False)


class Sampler:
    def __init__(self, mixture: Mixture, setting: Setting, sample_sigmas: torch.Tensor, seed: int):
        self.mixture, self.setting, self.sample_sigmas, self.seed = mixture, setting, sample_sigmas, seed
        self.evaluations = 0

    def predictions(self, x, sigma) -> tuple:
        cond = self.mixture.denoise(x, sigma, PROMPT)
        return cond, self.mixture.denoise(x, sigma, self.setting.negative)

    def guided(self, x, sigma, sigma_next, step_start: bool = True) -> torch.Tensor:
        """One guided x0 prediction, exactly as nodes/patching.guidance_hook builds it."""
        self.evaluations += 1
        cond, uncond = self.predictions(x, sigma)
        tau = progress_from_sigma_position(sigma, self.sample_sigmas)
        state = GuidanceState(
            cond=cond,
            uncond=uncond,
            x=x,
            sigma=sigma,
            base_scale=self.setting.scale,
            progress={SIGMA_POSITION: tau, TIMESTEP: tau},
            scale=self.setting.scale,
            sigma_next=sigma_next,
            seed=self.seed * 1_000_003 + self.evaluations,
            evaluator=ToyEvaluator(self, sigma, sigma_next, step_start),
        )
        return apply_stack(self.setting.stack, cfg_x0(cond, uncond, self.setting.scale), state)


def sample(mixture: Mixture, setting: Setting, count: int, steps: int, seed: int) -> torch.Tensor:
    """Euler over Karras sigmas from pure noise; returns the clean samples (N, C, H, W)."""
    generator = torch.Generator().manual_seed(seed)
    sigmas = karras_sigmas(steps)
    sampler = Sampler(mixture, setting, sigmas, seed)
    x = torch.randn(count, *mixture.shape, generator=generator) * sigmas[0]
    for i in range(steps):
        sigma, sigma_next = sigmas[i].expand(count), sigmas[i + 1].expand(count)
        x = euler_step(x, sampler.guided(x, sigma, sigma_next), sigma, sigma_next).detach()
    return x


# ---------------------------------------------------------------- metrics


def noise_key(mixture: Mixture, count: int, seed: int) -> tuple:
    """What `sample` draws its initial noise from: equal keys = the same noise, sample by sample."""
    return (seed, count, mixture.shape)


def adherence(mixture: Mixture, x0: torch.Tensor, noise: tuple) -> dict:
    """Posterior mass of the prompt class, fraction assigned to it, diversity within it and distance
    to the data, each a Measure over the samples."""
    posterior = mixture.class_posterior(x0)
    assigned = posterior.argmax(dim=1) == PROMPT
    _, mode, distance = mixture.nearest_mode(x0)
    modes_of_assigned = torch.where(assigned, mode, torch.full_like(mode, -1))
    return {
        "posterior": Measure(posterior[:, PROMPT], stats.mean, noise),
        "assigned": Measure(assigned.float(), stats.mean, noise),
        "effective_modes": Measure(modes_of_assigned, partial(stats.effective_modes, modes=mixture.modes), noise),
        "off_manifold": Measure(distance, stats.median, noise),
    }


def most_frequent_class(mixture: Mixture, x0: torch.Tensor) -> int:
    return int(torch.bincount(mixture.class_posterior(x0).argmax(dim=1), minlength=mixture.classes).argmax())


# ---------------------------------------------------------------- claims 1-3: DNS, DNP, schedules


def guidance_settings(scale: float) -> list:
    """Plain conditional, CFG, DNS and the schedules at matched mean scale (the pack's terms)."""

    def scheduled(kind: str) -> GuidanceStack:
        return GuidanceStack().with_term(schedule_term(kind, SIGMA_POSITION))

    dns = GuidanceStack()
    for term in dns_terms():
        dns = dns.with_term(term)
    return [
        Setting("conditional (s = 1)", 1.0),
        Setting(f"CFG static (s = {scale:g})", scale),
        Setting("CFG increasing (linear)", scale, scheduled("linear")),
        Setting("CFG decreasing (invlinear)", scale, scheduled("invlinear")),
        Setting(f"DNS (s = {scale:g})", scale, dns),
    ]


def run_guidance(mixture: Mixture, scale: float, count: int, steps: int, seed: int) -> tuple:
    """Metrics per setting, and the DNS negative n* (the class most frequent among DNS samples)."""
    results, samples, noise = {}, {}, noise_key(mixture, count, seed)
    for setting in guidance_settings(scale):
        samples[setting.name] = sample(mixture, setting, count, steps, seed)
        results[setting.name] = adherence(mixture, samples[setting.name], noise)
    n_star = most_frequent_class(mixture, samples[f"DNS (s = {scale:g})"])
    dnp = Setting(f"DNP (s = {scale:g}, n* = class {n_star})", scale, negative=n_star)
    samples[dnp.name] = sample(mixture, dnp, count, steps, seed)
    results[dnp.name] = adherence(mixture, samples[dnp.name], noise)
    return results, samples, n_star


# ---------------------------------------------------------------- claim 4: loss guidance


TARGET_MODE = 3  # class 0's rarest mode (weight 0.1): the loss asks for it


def target_loss(mixture: Mixture) -> losses.Loss:
    """Distance to the rare mode's bar inside its rows (a masked reference target, the pack's loss)."""
    reference = mixture.means[PROMPT, TARGET_MODE].unsqueeze(0)  # (1, C, H, W)
    mask = torch.zeros_like(reference[:, :1])
    mask[..., 5:8, :] = 1.0  # rows 5-7 cover the rare bar (rows 6-7) and one row above it
    return losses.reference_target(reference, losses.LATENT, mask)


def loss_value(mixture: Mixture, x0: torch.Tensor) -> torch.Tensor:
    return target_loss(mixture).residual(x0, Identity(), x0.shape[0]).flatten(1).norm(dim=1)


def loss_setting(mixture: Mixture, scale: float, config: Optional[LossGuidanceConfig], name: str) -> Setting:
    if config is None:
        return Setting(name, scale)
    objective_losses = (target_loss(mixture),)

    def objective(x0, augmentation):
        return losses.objective(objective_losses, x0, augmentation, lambda v: v, lambda v: v)

    return Setting(name, scale, GuidanceStack().with_term(loss_guidance_term(config, objective)))


def loss_metrics(mixture: Mixture, x0: torch.Tensor, noise: tuple) -> dict:
    """Final loss, distance to the data and the share of samples in the target mode, as Measures."""
    cls, mode, distance = mixture.nearest_mode(x0)
    hit = (cls == PROMPT) & (mode == TARGET_MODE)
    return {
        "loss": Measure(loss_value(mixture, x0), stats.mean, noise),
        "off_manifold": Measure(distance, stats.median, noise),
        "log_density": Measure(mixture.log_density(x0), stats.median, noise),
        "target_mode": Measure(hit.float(), stats.mean, noise),
    }


def sampled_loss_metrics(mixture: Mixture, setting: Setting, count: int, steps: int, seed: int) -> dict:
    x0 = sample(mixture, setting, count, steps, seed)
    return loss_metrics(mixture, x0, noise_key(mixture, count, seed))


def loss_config(scale: float, rule: str, **changes) -> LossGuidanceConfig:
    settings = dict(scale=scale, rule=rule, gradient=THROUGH_DENOISER, augmentations=0, end=1.0)
    settings.update(changes)
    return LossGuidanceConfig(**settings)


def run_loss_grid(
    mixture: Mixture,
    cfg: float,
    scales: tuple,
    count: int,
    steps: int,
    seed: int,
    rules: tuple = ("fixed", "polyak"),
    gradient: str = THROUGH_DENOISER,
) -> dict:
    """Loss metrics for each step rule over the same grid of scales, plus no guidance at (none, 0)."""
    grid = {("none", 0.0): sampled_loss_metrics(mixture, loss_setting(mixture, cfg, None, "none"), count, steps, seed)}
    for rule in rules:
        for scale in scales:
            config = loss_config(scale, rule, gradient=gradient)
            setting = loss_setting(mixture, cfg, config, f"{rule} {scale:g}")
            grid[(rule, scale)] = sampled_loss_metrics(mixture, setting, count, steps, seed)
    return grid


ON_MANIFOLD = 3.0  # median distance to the nearest mode, in units of the modes' spread


def best_scale(grid: dict, rule: str) -> float:
    """The pre-declared choice: lowest loss among the scales whose samples stay on the data."""
    candidates = [
        (m["loss"].estimate, scale)
        for (r, scale), m in grid.items()
        if r == rule and m["off_manifold"].estimate <= ON_MANIFOLD
    ]
    return min(candidates)[1] if candidates else min(scale for r, scale in grid if r == rule)


POLYAK_PLAIN, AUGMENTED, TRAVELLED, X0_GRADIENT = (
    "polyak",
    "polyak + 10 augmentations",
    "polyak + time travel x3",
    "polyak, x0-estimate gradient",
)


def run_loss_variants(mixture: Mixture, cfg: float, scale: float, count: int, steps: int, seed: int) -> tuple:
    """At Polyak's chosen scale: plain (through the denoiser), with 10 augmentations, with time travel
    (3 repeats in 0.2-0.7), and with the x0-estimate gradient. Returns (metrics, seconds) by variant."""
    variants = {
        POLYAK_PLAIN: loss_config(scale, "polyak"),
        AUGMENTED: loss_config(scale, "polyak", augmentations=10),
        TRAVELLED: loss_config(scale, "polyak", travel_repeats=3),
        X0_GRADIENT: loss_config(scale, "polyak", gradient=X0_ONLY),
    }
    metrics, seconds = {}, {}
    for name, config in variants.items():
        start = time.perf_counter()
        metrics[name] = sampled_loss_metrics(mixture, loss_setting(mixture, cfg, config, name), count, steps, seed)
        seconds[name] = time.perf_counter() - start
    return metrics, seconds
