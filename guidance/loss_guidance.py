"""Training-free loss-based guidance (Shen et al., NeurIPS 2024, arXiv 2403.12404), in ComfyUI's VE space.

The paper works in VP coordinates x_vp with alpha-bar_t; ComfyUI's samplers work in VE coordinates
x = x0 + sigma * eps with x = x_vp / sqrt(abar) and sigma^2 = (1 - abar) / abar (Karras et al.,
EDM, arXiv 2206.00364, Table 1). Every formula below is the paper's, converted explicitly:

- Eq. 5: g_t = grad_{x_t} l(f(x0_hat(x_t)), y). In VE, g_vp = g_ve * sqrt(1 + sigma_t^2). With the
  cheap "x0 only" path the denoiser's Jacobian is dropped: g_ve = grad_{x0} l (d x0 / d x = I).
- Fixed step (the paper's theory step eta * sqrt(abar_t)): step_vp = eta * sqrt(abar_t) * g_vp.
- Alg. 2, Polyak step: step_vp = eta * ||eps|| / ||g_vp||^2 * g_vp, zero where ||g_vp|| < 1e-6.
  Norms are per sample (the paper's batch of one), so a batch gives the images N single runs give.
- The guided step x_{t-1} = step(x_t) - step_vp in VP lands in VE at sigma_{t-1} as
  x_next -= step_vp * sqrt(1 + sigma_next^2). A sampler step from the x0 estimate D moves x by
  (1 - sigma_next / sigma) * D (Euler / DDIM in VE), so the x0 correction that realises the shift is
  delta_x0 = -step_vp * sqrt(1 + sigma_next^2) * sigma / (sigma - sigma_next): exact for Euler and
  DDIM, the same direction for other samplers. sigma_next is the landing sigma of the sampler step
  the evaluation is in: an evaluation inside a step (Heun's corrector at sigma_{i+1}, DPM-2's
  midpoint) uses the step's sigma_i, sigma_{i+1} and the lever sigma / (sigma_i - sigma_{i+1})
  (exact for DPM-2's midpoint, which alone sets the update; half the shift per evaluation of Heun's
  average of two slopes; the same direction for DPM++ stages).
- Alg. 1, random augmentation: g is averaged over N differentiable augmentations of the estimate.
- Alg. 3, time travel: after the guided step to sigma_next, re-noise back to sigma,
  x_t = x_{t-1} + sqrt(sigma_t^2 - sigma_{t-1}^2) * n (the VP rule sqrt(beta) x + sqrt(1 - beta) n in
  VE), and step again; s repeats in all.

Flow-matching models (ComfyUI's CONST: SD3, Flux, Qwen-Image, Wan, Lumina2, ...) place
x = (1 - sigma) x0 + sigma eps, sigma in [0, 1]; with alpha = 1 - sigma and
c = sqrt(alpha^2 + sigma^2) (guidance.coordinates), x_vp = x / c and sqrt(abar) = alpha / c. The
same steps in those coordinates:

- eps = (x - alpha * x0_hat) / sigma (the network's output is the velocity eps - x0, not eps).
- Through the denoiser: g_vp = c * g_flow, so the fixed step is eta * alpha * g_flow and Polyak's is
  eta * ||eps|| / (c * ||g_flow||^2) * g_flow.
- x0 estimate: d x0 / d x_flow = I / alpha, so g_vp = (c / alpha) * grad_{x0} l. The fixed step is
  eta * grad_{x0} l (the VE code's step) and Polyak's eta * ||eps|| * alpha / (c * ||grad||^2) * grad,
  computed in this form so that it is finite (zero) at sigma = 1, never through 1 / alpha.
- Landing: x_next -= c(sigma_next) * step_vp; the Euler step of k-diffusion is the rectified-flow Euler
  step and DDIM for flow, so x0_correction's lever and euler_step / x0_reaching are unchanged.
- Time travel: x_sigma = (alpha / alpha_next) * x_next + sqrt(sigma^2 - sigma_next^2 alpha^2 / alpha_next^2) * n
  (the VE rule mapped through x = alpha * x_ve; ComfyUI's sample_euler_ancestral_RF re-noises the same way).

Cosmos Predict2 (COSMOS_RFLOW) hands ComfyUI a VE sigma (x = x0 + sigma eps), so it takes the VE steps.
"""

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .coordinates import FLOW, VE, signal, vp_norm
from .progress import DEFAULT_SOURCE
from .stack import PHASE_CORRECTION, SAMPLER_STEP, GuidanceState, GuidanceTerm, cfg_x0

TERM_NAME = "loss guidance"
POLYAK, FIXED = "polyak", "fixed"
STEP_RULES = (POLYAK, FIXED)
X0_ONLY, THROUGH_DENOISER = "x0 estimate", "through the denoiser"
GRADIENT_PATHS = (X0_ONLY, THROUGH_DENOISER)
TINY_GRADIENT = 1e-6


def trackable(tensor):
    """`tensor` usable in an autograd graph: a plain copy of an inference-mode tensor (ComfyUI runs
    nodes and samplers in inference mode, and such tensors cannot be saved for backward). Call
    inside torch.inference_mode(False); anything else passes through."""
    if isinstance(tensor, torch.Tensor) and tensor.is_inference():
        return tensor.clone()
    return tensor


def per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) values as (B, 1, ..., 1) to scale a (B, ...) tensor."""
    return values.reshape(-1, *([1] * (like.ndim - 1)))


def sample_norm(tensor: torch.Tensor) -> torch.Tensor:
    """L2 norm of each batch entry, (B,)."""
    return tensor.flatten(1).norm(dim=1)


def vp_gradient(grad_ve: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """g_vp = g_ve * sqrt(1 + sigma^2) (chain rule through x_ve = x_vp / sqrt(abar))."""
    return grad_ve * per_sample((1 + sigma**2).sqrt(), grad_ve)


def fixed_step(grad_vp: torch.Tensor, sigma: torch.Tensor, scale: float) -> torch.Tensor:
    """The paper's fixed step eta * sqrt(abar_t) * g_vp, with sqrt(abar) = 1 / sqrt(1 + sigma^2)."""
    return scale * grad_vp / per_sample((1 + sigma**2).sqrt(), grad_vp)


def polyak_step(grad_vp: torch.Tensor, eps: torch.Tensor, scale: float, tiny: float = TINY_GRADIENT) -> torch.Tensor:
    """Alg. 2: eta * ||eps|| / ||g||^2 * g per sample, and no step where ||g|| < tiny."""
    grad_norm = sample_norm(grad_vp)
    factor = sample_norm(eps) / grad_norm.clamp(min=tiny) ** 2
    factor = torch.where(grad_norm < tiny, torch.zeros_like(factor), factor)
    return scale * per_sample(factor, grad_vp) * grad_vp


def flow_polyak_step(
    grad: torch.Tensor, eps: torch.Tensor, inverse_gain: torch.Tensor, scale: float, tiny: float = TINY_GRADIENT
) -> torch.Tensor:
    """Alg. 2 for g_vp = grad / inverse_gain (per sample): eta * ||eps|| * inverse_gain / ||grad||^2 * grad,
    and no step where ||g_vp|| < tiny. inverse_gain is finite where g_vp is not (alpha / c at sigma = 1)."""
    grad_norm = sample_norm(grad)
    factor = sample_norm(eps) * inverse_gain / grad_norm.clamp(min=1e-30) ** 2
    vanishing = grad_norm < tiny * inverse_gain
    factor = torch.where(vanishing, torch.zeros_like(factor), factor)
    return scale * per_sample(factor, grad) * grad


def flow_step(rule: str, gradient: str, grad: torch.Tensor, eps: torch.Tensor, sigma: torch.Tensor, scale: float):
    """The VP step for a flow model from `grad` (g_flow through the denoiser, grad_{x0} l for the x0
    estimate), in the finite forms of the module doc."""
    alpha, norm = signal(sigma, FLOW), vp_norm(sigma, FLOW)
    through = gradient == THROUGH_DENOISER
    if rule == FIXED:
        return scale * grad * per_sample(alpha, grad) if through else scale * grad
    inverse_gain = 1 / norm if through else alpha / norm
    return flow_polyak_step(grad, eps, inverse_gain, scale)


def estimated_eps(x: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor, space: str = VE) -> torch.Tensor:
    """eps = (x - alpha * x0) / sigma (VE: alpha = 1)."""
    if space == VE:
        return (x - x0) / per_sample(sigma, x)
    return (x - per_sample(signal(sigma, space), x) * x0) / per_sample(sigma, x)


def x0_correction(
    step_vp: torch.Tensor,
    sigma: torch.Tensor,
    sigma_next: torch.Tensor,
    sigma_start: Optional[torch.Tensor] = None,
    space: str = VE,
) -> torch.Tensor:
    """The x0 change whose Euler / DDIM step moves x_next by -step_vp in VP (see module doc).

    An evaluation inside a step (Heun's corrector, DPM-2's midpoint) at sigma, of the step from
    sigma_start to sigma_next, moves x_next through its derivative (x - x0) / sigma times the
    step's length: the lever is sigma / (sigma_start - sigma_next). VP lands at sigma_next scaled by
    c(sigma_next): sqrt(1 + sigma_next^2) in VE, sqrt((1 - sigma_next)^2 + sigma_next^2) in flow.
    """
    sigma_start = sigma if sigma_start is None else sigma_start
    lands = vp_norm(sigma_next, space)
    lever = sigma / (sigma_start - sigma_next).clamp(min=1e-12)
    return -step_vp * per_sample(lands * lever, step_vp)


def euler_step(x: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    """x_next = x + (sigma_next - sigma) * (x - x0) / sigma (Euler in VE; DDIM for eps models)."""
    return x + per_sample((sigma_next - sigma) / sigma, x) * (x - x0)


def x0_reaching(x: torch.Tensor, x_next: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    """The x0 estimate whose Euler step from x lands on x_next (inverse of euler_step)."""
    return x - (x_next - x) * per_sample(sigma / (sigma_next - sigma), x)


def renoise(
    x_prev: torch.Tensor, sigma: torch.Tensor, sigma_prev: torch.Tensor, noise: torch.Tensor, space: str = VE
) -> torch.Tensor:
    """Alg. 3: VE x_t = x_{t-1} + sqrt(sigma_t^2 - sigma_{t-1}^2) * n; flow
    x_t = r x_{t-1} + sqrt(sigma_t^2 - r^2 sigma_{t-1}^2) * n with r = (1 - sigma_t) / (1 - sigma_{t-1})."""
    if space == VE:
        return x_prev + per_sample((sigma**2 - sigma_prev**2).clamp(min=0).sqrt(), noise) * noise
    ratio = signal(sigma, space) / signal(sigma_prev, space).clamp(min=1e-12)
    spread = (sigma**2 - (ratio * sigma_prev) ** 2).clamp(min=0).sqrt()
    return per_sample(ratio, x_prev) * x_prev + per_sample(spread, noise) * noise


@dataclass(frozen=True)
class Augmentation:
    """One draw of DiffAugment-style differentiable transforms per view (Alg. 1), size-independent.

    translate (V, 2) in fractions of the side, zoom (V,), brightness (V,), contrast (V,),
    saturation (V,), cutout centre (V, 2) in [0, 1] and cutout side (fraction). V = count * batch,
    view-major (view k of sample b is row k * B + b, as `tile` lays them out).
    """

    translate: torch.Tensor
    zoom: torch.Tensor
    brightness: torch.Tensor
    contrast: torch.Tensor
    saturation: torch.Tensor
    cutout_centre: torch.Tensor
    cutout_side: float
    count: int

    def geometric(self, t: torch.Tensor) -> torch.Tensor:
        """Translation and resize/crop (zoom about the centre), reflection padding; (V, C, H, W)."""
        theta = torch.zeros(t.shape[0], 2, 3, device=t.device, dtype=t.dtype)
        inverse_zoom = (1 / self.zoom).to(t)
        theta[:, 0, 0] = inverse_zoom
        theta[:, 1, 1] = inverse_zoom
        theta[:, :, 2] = 2 * self.translate.to(t)
        grid = F.affine_grid(theta, list(t.shape), align_corners=False)
        return F.grid_sample(t, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    def colour(self, t: torch.Tensor) -> torch.Tensor:
        """Brightness (added), contrast (about each view's mean), saturation (RGB only)."""
        mean = t.mean(dim=(1, 2, 3), keepdim=True)
        t = (t - mean) * per_sample(self.contrast.to(t), t) + mean + per_sample(self.brightness.to(t), t)
        if t.shape[1] == 3:
            grey = t.mean(dim=1, keepdim=True)
            t = (t - grey) * per_sample(self.saturation.to(t), t) + grey
        return t

    def cutout_mask(self, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
        """1 outside each view's cut-out square, 0 inside; (V, 1, H, W)."""
        ys = (torch.arange(height, device=like.device, dtype=like.dtype) + 0.5) / height
        xs = (torch.arange(width, device=like.device, dtype=like.dtype) + 0.5) / width
        centre = self.cutout_centre.to(like)
        half = self.cutout_side / 2
        inside_y = (ys.view(1, -1) - centre[:, 1:2]).abs() < half  # (V, H)
        inside_x = (xs.view(1, -1) - centre[:, 0:1]).abs() < half  # (V, W)
        inside = inside_y[:, None, :, None] & inside_x[:, None, None, :]
        return (~inside).to(like.dtype)

    def image(self, t: torch.Tensor) -> torch.Tensor:
        """The full transform for images, latents and reference targets: geometric, colour, cutout."""
        t = self.colour(self.geometric(t))
        return t * self.cutout_mask(t.shape[-2], t.shape[-1], t)

    def spatial(self, t: torch.Tensor) -> torch.Tensor:
        """Only the geometric part (for masks, which must stay aligned with the image)."""
        return self.geometric(t)


class Identity:
    """No augmentation: one view per sample (what `draw_augmentation` gives for count 0)."""

    count = 1

    def image(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def spatial(self, t: torch.Tensor) -> torch.Tensor:
        return t


def draw_augmentation(batch: int, count: int, generator: torch.Generator, strength: float = 1.0):
    """`count` random views per sample, drawn on the generator's device (seeded: reproducible).

    strength 1: translation up to 1/8 of the side, zoom 0.8-1.2, brightness +-0.1, contrast and
    saturation 0.8-1.2, a cut-out square of 1/4 of the side; strength scales every range.
    """
    if count == 0:
        return Identity()
    views = batch * count
    device = generator.device

    def uniform(*shape, spread: float, centre: float = 0.0) -> torch.Tensor:
        return centre + spread * (2 * torch.rand(shape, generator=generator, device=device) - 1)

    return Augmentation(
        translate=uniform(views, 2, spread=0.125 * strength),
        zoom=uniform(views, spread=0.2 * strength, centre=1.0),
        brightness=uniform(views, spread=0.1 * strength),
        contrast=uniform(views, spread=0.2 * strength, centre=1.0),
        saturation=uniform(views, spread=0.2 * strength, centre=1.0),
        cutout_centre=uniform(views, 2, spread=0.5, centre=0.5),
        cutout_side=min(0.25 * strength, 1.0),
        count=count,
    )


def tile(tensor: torch.Tensor, count: int) -> torch.Tensor:
    """(B, ...) -> (count * B, ...), view-major (the layout of Augmentation rows)."""
    return tensor.repeat(count, *([1] * (tensor.ndim - 1)))


IN_PLACE_DENOISER = (
    "Loss Guidance: gradient = through the denoiser cannot differentiate this model: its network updates its "
    "activations in place (as Flux-architecture blocks do), which autograd cannot go back through. Choose "
    "gradient = x0 estimate."
)


NO_BACKWARD_KERNEL = (
    "Loss Guidance: gradient = through the denoiser cannot differentiate this model in this ComfyUI: part of "
    "its network runs in a fused kernel that has no backward pass (autograd: 'no autograd formula was "
    "registered'). Choose gradient = x0 estimate."
)


def _undifferentiable(message: str) -> Optional[str]:
    """The advice for an autograd failure that comes from the model's code, not the pack's."""
    if "inplace operation" in message:
        return IN_PLACE_DENOISER
    if "no autograd formula" in message:
        return NO_BACKWARD_KERNEL
    return None


def loss_gradient(objective: Callable, point: torch.Tensor, to_x0: Optional[Callable] = None) -> tuple:
    """Eq. 5: (grad of the summed per-sample losses w.r.t. `point`, the losses (B,)).

    Gradients are enabled only inside this call (ComfyUI samples in inference mode); the graph is
    freed when it returns and both results are detached. `to_x0` maps the point to the x0 estimate
    (the denoiser, for the full gradient); None means the point is the estimate (x0-only path).
    """
    with torch.inference_mode(False), torch.enable_grad():
        leaf = point.detach().clone().requires_grad_(True)
        losses = objective(leaf if to_x0 is None else to_x0(leaf))
        try:
            (grad,) = torch.autograd.grad(losses.sum(), leaf)
        except RuntimeError as error:
            reason = _undifferentiable(str(error)) if to_x0 is not None else None
            if reason is None:
                raise
            raise ValueError(reason) from error
    return grad.detach(), losses.detach()


@dataclass(frozen=True)
class LossGuidanceConfig:
    """The node's settings. scale is eta (the step rule's scale); windows are in progress tau."""

    scale: float
    rule: str = POLYAK
    gradient: str = X0_ONLY
    augmentations: int = 10
    strength: float = 1.0
    start: float = 0.0
    end: float = 1.0
    travel_repeats: int = 1
    travel_start: float = 0.2
    travel_end: float = 0.7
    progress_source: str = DEFAULT_SOURCE

    def __post_init__(self):
        if self.rule not in STEP_RULES:
            raise ValueError(f"Loss guidance: step rule must be one of {STEP_RULES}, got {self.rule!r}.")
        if self.gradient not in GRADIENT_PATHS:
            raise ValueError(f"Loss guidance: gradient must be one of {GRADIENT_PATHS}, got {self.gradient!r}.")
        if self.scale < 0:
            raise ValueError(f"Loss guidance: scale must be >= 0, got {self.scale}.")
        if self.augmentations < 0 or self.travel_repeats < 1:
            raise ValueError("Loss guidance: augmentations must be >= 0 and time-travel repeats >= 1.")
        if not (self.start <= self.end and self.travel_start <= self.travel_end):
            raise ValueError("Loss guidance: each window needs start <= end (progress 0 = first step, 1 = last).")


def guided_x0(state: GuidanceState) -> torch.Tensor:
    """The stack's x0 estimate so far (CFG with the current scale, plus earlier corrections)."""
    return cfg_x0(state.cond, state.uncond, state.scale) + state.correction


def _gradient(config: LossGuidanceConfig, state: GuidanceState, objective: Callable) -> tuple:
    if config.gradient == X0_ONLY:
        return loss_gradient(objective, guided_x0(state))
    if state.evaluator is None:
        raise ValueError("Loss guidance through the denoiser needs the sampler's model (no evaluator given).")

    def denoise(x: torch.Tensor) -> torch.Tensor:
        cond, uncond = state.evaluator.predictions(x)
        return cfg_x0(cond, uncond, trackable(state.scale)) + trackable(state.correction)

    return loss_gradient(objective, state.x, denoise)


def guidance_step(config: LossGuidanceConfig, grad_ve: torch.Tensor, state: GuidanceState) -> torch.Tensor:
    """The step in VP coordinates (fixed or Polyak) from the gradient in the sampler's space."""
    if state.space == FLOW:
        eps = estimated_eps(state.x, guided_x0(state), state.sigma, FLOW)
        return flow_step(config.rule, config.gradient, grad_ve, eps, state.sigma, config.scale)
    grad_vp = vp_gradient(grad_ve, state.sigma)
    if config.rule == FIXED:
        return fixed_step(grad_vp, state.sigma, config.scale)
    eps = (state.x - guided_x0(state)) / per_sample(state.sigma, state.x)
    return polyak_step(grad_vp, eps, config.scale)


def _in_window(tau: torch.Tensor, start: float, end: float) -> torch.Tensor:
    return (tau >= start - 1e-6) & (tau <= end + 1e-6)


def time_travel(state: GuidanceState, repeats: int, generator: torch.Generator) -> GuidanceState:
    """Alg. 3 from x at sigma: step to sigma_next with the guided estimate, then `repeats - 1` times
    re-noise to sigma, re-evaluate the whole guided denoiser and step again. The result is the x0
    estimate whose Euler step from the original x lands on the last x_next (sampler-independent)."""
    x, sigma, sigma_next = state.x, state.sigma, state.sigma_next
    denoised = guided_x0(state) + state.deviation  # what the sampler will receive
    x_next = euler_step(x, denoised, sigma, sigma_next)
    for _ in range(repeats - 1):
        noise = torch.randn(x.shape, generator=generator, device=generator.device).to(x)
        back = renoise(x_next, sigma, sigma_next, noise, state.space)
        x_next = euler_step(back, state.evaluator.guided(back), sigma, sigma_next)
    target = x0_reaching(x, x_next, sigma, sigma_next)
    return state.edit(correction=target - cfg_x0(state.cond, state.uncond, state.scale) - state.deviation)


def _travels(config: LossGuidanceConfig, state: GuidanceState, tau: torch.Tensor) -> bool:
    if config.travel_repeats <= 1 or state.evaluator is None or state.sigma_next is None:
        return False
    return state.evaluator.step_start and bool(_in_window(tau, config.travel_start, config.travel_end).all())


def loss_guidance_term(
    config: LossGuidanceConfig, objective: Callable, observer: Optional[Callable] = None, description: str = ""
) -> GuidanceTerm:
    """The stack term (phase CORRECTION, after scale, direction and per-pixel rate).

    objective(x0, augmentation) -> per-sample loss (B,), differentiable in x0. observer, if given,
    receives (sigma, losses) at every guided evaluation. The window test is one host sync per
    evaluation: it skips the backward pass where guidance is off; all maths stays on the device.
    """

    def apply(state: GuidanceState) -> GuidanceState:
        if config.scale == 0 and config.travel_repeats <= 1:
            return state  # nothing to add: skip the backward pass
        tau = state.progress[config.progress_source]
        active = _in_window(tau, config.start, config.end)
        if not bool(active.any()):
            return state
        generator = torch.Generator(device=state.x.device).manual_seed(state.seed)
        with torch.inference_mode(False):  # its tensors enter the autograd graph
            augmentation = draw_augmentation(state.x.shape[0], config.augmentations, generator, config.strength)
        grad_ve, losses = _gradient(config, state, lambda x0: objective(x0, augmentation))
        if observer is not None:
            observer(state.sigma, losses)
        sigma_next = state.sigma_next if state.sigma_next is not None else torch.zeros_like(state.sigma)
        step_vp = guidance_step(config, grad_ve, state)
        delta = x0_correction(step_vp, state.sigma, sigma_next, state.sigma_step, state.space)
        state = state.edit(correction=state.correction + delta * per_sample(active.to(delta), delta))
        if _travels(config, state, tau):
            state = time_travel(state, config.travel_repeats, generator)
        return state

    return GuidanceTerm(
        name=TERM_NAME,
        phase=PHASE_CORRECTION,
        apply=apply,
        description=description or f"loss guidance ({config.rule}, scale {config.scale:g})",
        requires=(SAMPLER_STEP,),
        params={"config": config, "objective": objective},
        needs_uncond=False,
    )
