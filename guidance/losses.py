"""Losses for training-free guidance: residuals whose un-squared L2 norm is the loss, as in the
reference code of Shen et al. (l = ||residual||), evaluated on augmented views (Alg. 1).

A Loss works in the decoded image space (RGB in [0, 1], (B, 3, H, W)) or in the latent space
(ComfyUI's LATENT convention, (B, C, h, w)). Targets and masks are fitted to whatever size they are
compared at when their aspect ratio matches, and refused with a clear message otherwise. Tensors made
in inference mode (by ComfyUI nodes) enter the graph through `trackable`.
"""

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .loss_guidance import sample_norm, tile, trackable

IMAGE, LATENT = "image", "latent"
LUMA = (0.299, 0.587, 0.114)  # Rec. 601
ASPECT_TOLERANCE = 0.02


@dataclass(frozen=True)
class Loss:
    """One weighted loss. residual(views, augmentation, batch) -> (V, ...) for V = count * batch views.

    models: handles the glue loads with the sampler (e.g. a CLIP model), opaque here.
    spatial: named (C, H, W)-like tensors whose aspect ratio must match the image (checked up front).
    """

    name: str
    space: str
    residual: Callable
    weight: float = 1.0
    models: tuple = ()
    spatial: dict = field(default_factory=dict)


def aspect_mismatch(height: int, width: int, target_height: int, target_width: int) -> bool:
    return abs(height / width - target_height / target_width) > ASPECT_TOLERANCE * (target_height / target_width)


def fit(tensor: torch.Tensor, height: int, width: int, what: str) -> torch.Tensor:
    """(N, C, H0, W0) resized (bilinear) to (height, width) when the aspect ratios agree."""
    h0, w0 = tensor.shape[-2:]
    if aspect_mismatch(h0, w0, height, width):
        raise ValueError(
            f"{what} is {w0}x{h0} but the image being guided is {width}x{height} (or a multiple): the aspect "
            "ratios differ. Crop or resize it to the generated image's size."
        )
    if (h0, w0) == (height, width):
        return tensor
    return F.interpolate(tensor, size=(height, width), mode="bilinear", align_corners=False)


def per_batch(tensor: torch.Tensor, batch: int, what: str) -> torch.Tensor:
    """A target of batch 1 or `batch`, expanded to `batch`."""
    if tensor.shape[0] not in (1, batch):
        raise ValueError(f"{what} has a batch of {tensor.shape[0]} but {batch} images are generated; use 1 or {batch}.")
    return tensor.expand(batch, *tensor.shape[1:])


def _views_of(target: torch.Tensor, views: torch.Tensor, augmentation, batch: int, what: str, spatial: bool):
    fitted = fit(trackable(target).to(views), views.shape[-2], views.shape[-1], what)
    tiled = tile(per_batch(fitted, batch, what), augmentation.count)
    return augmentation.spatial(tiled) if spatial else augmentation.image(tiled)


def masked_mean(views: torch.Tensor, mask_views: Optional[torch.Tensor]) -> torch.Tensor:
    """Mean of each view over the pixels (weighted by the mask), (V, C)."""
    if mask_views is None:
        return views.mean(dim=(2, 3))
    weight = mask_views.clamp(0, 1)
    return (views * weight).sum(dim=(2, 3)) / weight.sum(dim=(2, 3)).clamp(min=1e-6)


def _mask_views(mask, views, augmentation, batch):
    return None if mask is None else _views_of(mask, views, augmentation, batch, "The mask", spatial=True)


def colour_target(rgb: tuple, mask: Optional[torch.Tensor] = None, weight: float = 1.0) -> Loss:
    """Mean colour of the (masked) image minus the target RGB in [0, 1]."""
    target = torch.tensor(rgb, dtype=torch.float32)

    def residual(views, augmentation, batch):
        return masked_mean(views, _mask_views(mask, views, augmentation, batch)) - trackable(target).to(views)

    return Loss("colour target", IMAGE, residual, weight, spatial=_spatial(mask=mask))


def brightness_target(value: float, mask: Optional[torch.Tensor] = None, weight: float = 1.0) -> Loss:
    """Mean luma (Rec. 601) of the (masked) image minus the target in [0, 1]."""
    luma = torch.tensor(LUMA, dtype=torch.float32)

    def residual(views, augmentation, batch):
        mean = masked_mean(views, _mask_views(mask, views, augmentation, batch))
        return (mean * trackable(luma).to(views)).sum(dim=1, keepdim=True) - value

    return Loss("brightness target", IMAGE, residual, weight, spatial=_spatial(mask=mask))


def reference_target(
    reference: torch.Tensor, space: str, mask: Optional[torch.Tensor] = None, weight: float = 1.0
) -> Loss:
    """(view - reference) inside the mask: similarity to a reference image (space IMAGE) or latent."""

    def residual(views, augmentation, batch):
        target = _views_of(reference, views, augmentation, batch, "The reference", spatial=False)
        difference = views - target
        mask_views = _mask_views(mask, views, augmentation, batch)
        return difference if mask_views is None else difference * mask_views

    return Loss(f"reference {space}", space, residual, weight, spatial=_spatial(reference=reference, mask=mask))


def embedding_target(name: str, embed: Callable, target: torch.Tensor, weight: float = 1.0, models: tuple = ()) -> Loss:
    """normalize(embed(image)) - normalize(target): CLIP image-text or image-image similarity
    (the norm is sqrt(2 - 2 cos), a monotone function of the cosine similarity)."""
    target = F.normalize(target.float(), dim=-1)

    def residual(views, augmentation, batch):
        embedded = F.normalize(embed(views).float(), dim=-1)
        return embedded - tile(per_batch(trackable(target).to(embedded), batch, name), augmentation.count)

    return Loss(name, IMAGE, residual, weight, models)


def _spatial(**tensors) -> dict:
    return {name: tensor for name, tensor in tensors.items() if tensor is not None}


def shown_size(loss: Loss, what: str, tensor: torch.Tensor, pixels_per_latent: int) -> str:
    """'WxH px' of a target or mask; a latent-space reference also in latent cells (masks are images)."""
    h0, w0 = tensor.shape[-2:]
    if loss.space == LATENT and what == "reference":
        return f"{w0 * pixels_per_latent}x{h0 * pixels_per_latent} px ({w0}x{h0} latent cells)"
    return f"{w0}x{h0} px"


def check_aspect(losses: tuple, height: int, width: int, pixels_per_latent: int = 8) -> None:
    """Before sampling: every target and mask has the generated image's aspect ratio (height and width
    in pixels; a latent cell is pixels_per_latent pixels)."""
    for loss in losses:
        for what, tensor in loss.spatial.items():
            h0, w0 = tensor.shape[-2:]
            if aspect_mismatch(h0, w0, height, width):
                size = shown_size(loss, what, tensor, pixels_per_latent)
                raise ValueError(
                    f"{loss.name} loss: the {what} is {size} but the image being generated is {width}x{height} px; "
                    "the aspect ratios differ. Resize or crop the "
                    f"{what} to {width}x{height} px (e.g. with Upscale Image / Crop), or generate at its size."
                )


def objective(losses: tuple, x0: torch.Tensor, augmentation, to_image: Callable, to_latent: Callable) -> torch.Tensor:
    """The weighted sum of the losses of x0 (B,), each the mean over the augmented views (Alg. 1)."""
    batch, count = x0.shape[0], augmentation.count
    sources = {}
    total = torch.zeros(batch, device=x0.device, dtype=torch.float32)
    for loss in losses:
        if loss.space not in sources:
            source = to_image(x0) if loss.space == IMAGE else to_latent(x0)
            sources[loss.space] = augmentation.image(tile(source, count))
        per_view = sample_norm(loss.residual(sources[loss.space], augmentation, batch).float())
        total = total + loss.weight * per_view.view(count, batch).mean(dim=0).to(total.device)
    return total
