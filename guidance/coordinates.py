"""Where x_t sits: the two noise spaces of ComfyUI's samplers, and the maps between them.

- VE (EPS, V_PREDICTION, EDM models and Cosmos Predict2's RFLOW sigma): x = x0 + sigma * eps,
  sigma in [0, inf). ComfyUI's sigma is the EDM noise level (Karras et al. 2022).
- FLOW (ComfyUI's CONST sampling: SD3 / SD3.5, Flux, Chroma, Qwen-Image, Wan, Lumina2, HiDream,
  AuraFlow): x = (1 - sigma) x0 + sigma * eps, sigma in [0, 1] (rectified flow, Esser et al. 2024,
  arXiv 2403.03206, Eq. 1 with t = sigma); the network predicts the velocity v = eps - x0 and
  ComfyUI hands the guidance hooks x0 = x - sigma * v.

Writing x = alpha * x0 + sigma * eps (alpha = 1 in VE, 1 - sigma in FLOW), the VP coordinates of the
DDPM papers are x_vp = x / c with c = sqrt(alpha^2 + sigma^2), alpha-bar = alpha^2 / c^2, and the
EDM noise level (noise-to-signal ratio) is sigma / alpha: sigma_flow = sigma_ve / (1 + sigma_ve).
"""

import torch

VE, FLOW = "ve", "flow"
SPACES = (VE, FLOW)


def _check(space: str) -> None:
    if space not in SPACES:
        raise ValueError(f"unknown noise space {space!r}; valid: {', '.join(SPACES)}")


def signal(sigma: torch.Tensor, space: str) -> torch.Tensor:
    """alpha, the weight of x0 in x: 1 (VE) or 1 - sigma (FLOW)."""
    _check(space)
    return torch.ones_like(sigma) if space == VE else 1 - sigma


def vp_norm(sigma: torch.Tensor, space: str) -> torch.Tensor:
    """c = sqrt(alpha^2 + sigma^2), with x = c * x_vp (VE: sqrt(1 + sigma^2))."""
    _check(space)
    if space == VE:
        return (1 + sigma**2).sqrt()
    return ((1 - sigma) ** 2 + sigma**2).sqrt()


def edm_sigma(sigma: torch.Tensor, space: str) -> torch.Tensor:
    """The EDM / VE noise level sigma / alpha of this sigma (infinite at sigma = 1 in FLOW)."""
    _check(space)
    if space == VE:
        return sigma
    return torch.where(sigma < 1, sigma / (1 - sigma).clamp(min=1e-12), torch.full_like(sigma, float("inf")))


def space_sigma(edm: float, space: str) -> float:
    """The inverse of edm_sigma for one number: the sigma of `space` at EDM noise level `edm`."""
    _check(space)
    return edm if space == VE else edm / (1 + edm)
