"""A conditional diffusion model whose scores are exact: a mixture of Gaussians per class.

Data: class c has modes m with means mu_cm, weights w_cm (summing to 1 per class) and isotropic
standard deviation `spread`; the empty prompt is the marginal over equally likely classes. In
ComfyUI's VE parametrisation x = x0 + sigma * n, every class density stays a Gaussian mixture
with variance v = spread^2 + sigma^2, so the exact denoiser (Tweedie) is

    D(x, sigma | c) = E[x0 | x, c] = (spread^2 / v) x + (1 - spread^2 / v) * sum_m r_m(x) mu_m,

r_m the posterior responsibilities of the modes under N(mu_m, v I). Everything is differentiable
torch, so the pack's guidance code (which differentiates through the denoiser) runs on it unchanged.
Samples are (N, C, H, W): 2-D points are (N, 2, 1, 1), "images" (N, 1, 8, 8).
"""

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Mixture:
    means: torch.Tensor  # (K, M, C, H, W)
    weights: torch.Tensor  # (K, M), rows sum to 1
    spread: float

    @property
    def classes(self) -> int:
        return self.means.shape[0]

    @property
    def modes(self) -> int:
        return self.means.shape[1]

    @property
    def shape(self) -> tuple:
        return tuple(self.means.shape[2:])

    def components(self, prompt) -> tuple:
        """(means (J, D), log weights (J,)) of p(x0 | prompt); prompt None = the empty prompt (marginal)."""
        flat = self.means.flatten(2)  # (K, M, D)
        if prompt is None:
            log_w = (self.weights / self.classes).log()
            return flat.reshape(-1, flat.shape[-1]), log_w.reshape(-1)
        return flat[prompt], self.weights[prompt].log()

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, prompt) -> torch.Tensor:
        """The exact x0 prediction D(x, sigma | prompt), differentiable in x; x (N, C, H, W), sigma (N,)."""
        means, log_w = self.components(prompt)
        flat = x.flatten(1)
        variance = (self.spread**2 + sigma**2).view(-1, 1)  # (N, 1)
        sq = torch.cdist(flat, means).square()  # (N, J)
        resp = torch.softmax(log_w.view(1, -1) - sq / (2 * variance), dim=1)
        shrink = self.spread**2 / variance
        return (shrink * flat + (1 - shrink) * resp @ means).view_as(x)

    def sample_data(self, prompt, count: int, generator: torch.Generator) -> torch.Tensor:
        means, log_w = self.components(prompt)
        index = torch.multinomial(log_w.exp(), count, replacement=True, generator=generator)
        noise = torch.randn(count, means.shape[1], generator=generator)
        return (means[index] + self.spread * noise).view(count, *self.shape)

    def log_joint(self, x0: torch.Tensor) -> torch.Tensor:
        """log p(x0, class k, mode m) for clean samples, (N, K, M) (up to a shared constant)."""
        flat = x0.flatten(1)
        means = self.means.flatten(2).reshape(-1, flat.shape[1])
        sq = torch.cdist(flat, means).square().view(-1, self.classes, self.modes)
        return (self.weights / self.classes).log().unsqueeze(0) - sq / (2 * self.spread**2)

    def class_posterior(self, x0: torch.Tensor) -> torch.Tensor:
        """p(c | x0) under the clean data, (N, K)."""
        return torch.softmax(self.log_joint(x0).logsumexp(dim=2), dim=1)

    def nearest_mode(self, x0: torch.Tensor) -> tuple:
        """(class, mode, distance) of the nearest mode mean of each sample; the distance is the RMS
        per dimension in units of `spread` (about 1 for samples of the data, whatever the dimension)."""
        flat = x0.flatten(1)
        means = self.means.flatten(2).reshape(-1, flat.shape[1])
        distance, index = torch.cdist(flat, means).min(dim=1)
        return index // self.modes, index % self.modes, distance / (self.spread * flat.shape[1] ** 0.5)

    def log_density(self, x0: torch.Tensor) -> torch.Tensor:
        """log p(x0) of the clean marginal, including the Gaussian constant, (N,)."""
        dim = x0[0].numel()
        constant = -0.5 * dim * math.log(2 * math.pi * self.spread**2)
        return self.log_joint(x0).flatten(1).logsumexp(dim=1) + constant


def points_2d(spread: float = 0.5) -> Mixture:
    """Four overlapping classes of four modes each in the plane (a cross of modes around each class
    centre); mode weights 0.4 / 0.3 / 0.2 / 0.1 in every class. Class 0 (the prompt in the lab) sits
    on the left, class 2 opposite it. The classes overlap, so no method saturates adherence."""
    centres = torch.tensor([[-1.5, 0.0], [0.0, 1.5], [1.5, 0.0], [0.0, -1.5]])
    offsets = torch.tensor([[1.2, 0.0], [0.0, 1.2], [-1.2, 0.0], [0.0, -1.2]])
    means = (centres[:, None, :] + offsets[None, :, :]).view(4, 4, 2, 1, 1)
    weights = torch.tensor([0.4, 0.3, 0.2, 0.1]).repeat(4, 1)
    return Mixture(means, weights, spread=spread)


def images_8x8(spread: float = 0.15) -> Mixture:
    """Four classes of 8x8 one-channel "images" (horizontal bar, vertical bar, square, diagonal),
    each with four modes (the pattern at four positions), values 0 / 1, weights 0.4 / 0.3 / 0.2 / 0.1.
    With spread 2 (pixel noise larger than the patterns) the classes overlap like the 2-D ones."""
    means = torch.zeros(4, 4, 1, 8, 8)
    for m, shift in enumerate((0, 2, 4, 6)):
        means[0, m, 0, shift : shift + 2, :] = 1.0  # horizontal bar
        means[1, m, 0, :, shift : shift + 2] = 1.0  # vertical bar
        corner = (0, 0) if m == 0 else (0, 4) if m == 1 else (4, 0) if m == 2 else (4, 4)
        means[2, m, 0, corner[0] : corner[0] + 4, corner[1] : corner[1] + 4] = 1.0  # square
        for i in range(8):
            means[3, m, 0, i, (i + 2 * m) % 8] = 1.0  # diagonal
    weights = torch.tensor([0.4, 0.3, 0.2, 0.1]).repeat(4, 1)
    return Mixture(means, weights, spread=spread)


def karras_sigmas(steps: int, sigma_min: float = 0.01, sigma_max: float = 20.0, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022) noise levels, decreasing, with a final 0 (as ComfyUI's schedulers)."""
    ramp = torch.linspace(0, 1, steps)
    inverse = sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))
    return torch.cat([inverse**rho, torch.zeros(1)])
