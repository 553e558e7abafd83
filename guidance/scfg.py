"""S-CFG: semantic-aware classifier-free guidance (Shen et al., "Rethinking the Spatial
Inconsistency in Classifier-Free Diffusion Guidance", CVPR 2024, arXiv 2404.05384).
Defaults follow the released code (SmilesDZgk/S-CFG, sd/utils.py
get_mask and sd/sd.py), step for step.

With the classifier score eta = e(x, c) - e(x, empty) (any space: `delta`), S-CFG replaces
e = e_u + g eta by

    e = e_u + sum_i g_i m_i . eta,   g_i = g * mean_{p in b} |eta_p| / mean_{p in i} |eta_p|

where the regions m_i come from the UNet's attention maps at the current step. Per layer and pass:
1. self-attention completion  C <- A C,  A = (S + 3 S^2) / 4 (released code; the paper's
   (S + S^2 + S^3 + S^4) / 4 with R = 4 is completion="paper");
2. coarser maps upsampled bilinearly to the finest used side;
3. 3x3 Gaussian smoothing (reflect padding, sigma 0.5, kernel exp(-((x - mu) / (2 sigma))^2));
4. token maps: each divided by its spatial mean (+1e-8); reference maps: the start token's map and
   the sum of all other tokens' maps, each divided by its spatial mean;
then both are averaged over layers with equal weight, and
5. each pixel belongs to the argmax token over ALL tokens of the cond pass (regions m_i);
6. the reference region b: pixels where the start token's reference map is below the others', from
   the uncond pass in the released code (reference="cond" is the alternative);
7. masks nearest-upsampled to the latent; rate_i painted per pixel (regions without pixels get 0;
   an empty reference region gives 0, i.e. the lower clamp, as in the code), clamped to [0.8, 3.0]
   and to at most 15 / g, then smoothed again (step 3's kernel).
|eta_p| is the L2 norm over channels at pixel p. The rate is a ratio of norms and the combination
is affine per pixel, so it is identical in eps and x0 space (x0 = x - sigma eps is affine in eps
with x fixed, and affine combinations whose weights sum to 1 commute with affine maps).

Shapes: cross maps (N, h, w, T), self maps (N, h*w, h*w); processed per pass: token maps
(N, T, H, W) and reference maps (N, 2, H, W) at the finest side; N is the batch of one pass; index
0 / 1 of a stacked pair is the uncond / cond pass.
"""

import math

import torch
import torch.nn.functional as F

from .progress import DEFAULT_SOURCE
from .stack import PHASE_RATE, GuidanceState, GuidanceTerm, broadcast_scale

RATE_MIN, RATE_MAX, SCALE_CAP = 0.8, 3.0, 15.0
COMPLETIONS = ("code", "paper")
REFERENCES = ("uncond", "cond")
EPS = 1e-8


def gaussian_kernel(sigma: float = 0.5, size: int = 3) -> torch.Tensor:
    """The code's 2-D kernel: outer product of exp(-((x - mu) / (2 sigma))^2), normalised to sum 1."""
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    k1 = torch.exp(-((x / (2 * sigma)) ** 2))
    k2 = torch.outer(k1, k1)
    return k2 / k2.sum()


def smooth(maps: torch.Tensor) -> torch.Tensor:
    """3x3 Gaussian smoothing of every channel of (N, K, h, w), reflect padding (replicate if a side < 2)."""
    n, k, h, w = maps.shape
    kernel = gaussian_kernel().to(maps).view(1, 1, 3, 3).expand(k, 1, 3, 3)
    mode = "reflect" if min(h, w) > 1 else "replicate"
    return F.conv2d(F.pad(maps, (1, 1, 1, 1), mode=mode), kernel, groups=k)


def completed(self_attn: torch.Tensor, maps: torch.Tensor, completion: str = "code") -> torch.Tensor:
    """A C for the completion matrix A of S (N, hw, hw) and maps C (N, hw, T): A = (S + 3 S^2) / 4
    ("code") or (S + S^2 + S^3 + S^4) / 4 ("paper"), applied as products of S with C (S C, S (S C),
    ...), without the (hw)^3 matrix products."""
    if completion not in COMPLETIONS:
        raise ValueError(f"unknown completion {completion!r}; valid: {', '.join(COMPLETIONS)}")
    powers = [self_attn @ maps]
    powers.append(self_attn @ powers[-1])
    if completion == "code":
        return (powers[0] + 3 * powers[1]) / 4
    powers += [self_attn @ powers[-1]]
    powers += [self_attn @ powers[-1]]
    return sum(powers) / 4


def process_layer(
    cross: torch.Tensor, self_attn=None, completion: str = "code", size: tuple = None, valid=None, start_token=True
) -> tuple:
    """Steps 1-4 for one layer and pass: (N, h, w, T) cross [+ (N, hw, hw) self] -> (token maps
    (N, T, H, W), reference maps (N, 2, H, W)) at `size` (default: the layer's own h, w).

    valid: (N, T) bool, the tokens that may own a region (DiTs: not padding); the others get token
    maps of -1 (never the argmax) and leave the reference's "other tokens" sum. start_token: token 0
    is a start token whose map defines the reference region (step 6; CLIP's BOS, the released code);
    False makes the reference region the whole image, as the released code's DeepFloyd-IF path does
    (sd/IF: the whole-image mean of |eta| as the reference), for text encoders without a start token.
    """
    n, h, w, t = cross.shape
    maps = cross.reshape(n, h * w, t).float()
    if self_attn is not None:
        maps = completed(self_attn.float(), maps, completion)
    maps = maps.transpose(1, 2).reshape(n, t, h, w)
    if size is not None and tuple(size) != (h, w):
        maps = F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False)
    maps = smooth(maps)
    tokens = maps / (maps.mean(dim=(2, 3), keepdim=True) + EPS)
    if valid is not None:
        keep = valid.to(torch.bool).view(n, t, 1, 1)
        tokens = torch.where(keep, tokens, torch.full_like(tokens, -1.0))
        maps = maps * keep
    if not start_token:
        whole = torch.ones_like(maps[:, :1])
        return tokens, torch.cat([torch.zeros_like(whole), whole], dim=1)  # start below the rest everywhere
    fore = torch.stack([maps[:, 0], maps[:, 1:].sum(dim=1)], dim=1)
    return tokens, fore / fore.mean(dim=(2, 3), keepdim=True).clamp(min=EPS)


def region_masks(tokens: torch.Tensor) -> torch.Tensor:
    """Step 5: one-hot argmax over all tokens, (N, T, H, W) -> (N, T, H, W) in {0, 1}."""
    return F.one_hot(tokens.argmax(dim=1), tokens.shape[1]).permute(0, 3, 1, 2).to(tokens.dtype)


def reference_mask(fore: torch.Tensor) -> torch.Tensor:
    """Step 6: the start token's reference map below the others', (N, 2, H, W) -> (N, 1, H, W)."""
    return (fore[:, :1] < fore[:, 1:2]).to(fore.dtype)


def rate_from_maps(
    delta: torch.Tensor,
    uncond_maps: tuple,
    cond_maps: tuple,
    cfg_scale,
    rate_min: float = RATE_MIN,
    rate_max: float = RATE_MAX,
    scale_cap: float = SCALE_CAP,
    reference: str = "uncond",
) -> torch.Tensor:
    """Steps 5-7: the per-pixel rate (B, 1, H, W) from each pass's layer-averaged (tokens, fore) maps."""
    if reference not in REFERENCES:
        raise ValueError(f"unknown reference pass {reference!r}; valid: {', '.join(REFERENCES)}")
    size = delta.shape[-2:]
    masks = F.interpolate(region_masks(cond_maps[0]), size=size, mode="nearest")  # (B, T, H, W)
    fore = (uncond_maps if reference == "uncond" else cond_maps)[1]
    ref = F.interpolate(reference_mask(fore), size=size, mode="nearest")  # (B, 1, H, W)
    norm = delta.float().norm(dim=1, keepdim=True)  # |eta_p|, (B, 1, H, W)
    ref_mean = (norm * ref).sum(dim=(2, 3)) / (ref.sum(dim=(2, 3)) + EPS)  # (B, 1)
    region_count = masks.sum(dim=(2, 3))  # (B, T)
    region_mean = (norm * masks).sum(dim=(2, 3)) / (region_count + EPS)
    rates = ref_mean * (region_count > 0).to(norm.dtype) / (region_mean + EPS)
    rate = (rates[:, :, None, None] * masks).sum(dim=1, keepdim=True)
    rate = rate.clamp(rate_min, rate_max)
    rate = torch.minimum(rate, _cap(scale_cap, cfg_scale, rate))
    return smooth(rate).to(delta.dtype)


def _cap(scale_cap: float, cfg_scale, like: torch.Tensor) -> torch.Tensor:
    """15 / g per batch entry (g a float or a (B,) tensor), broadcastable to (B, 1, H, W)."""
    if isinstance(cfg_scale, torch.Tensor):
        g = cfg_scale.to(like).reshape(-1, *([1] * (like.ndim - 1))) if cfg_scale.ndim else cfg_scale.to(like)
        return scale_cap / g.clamp(min=EPS)
    return torch.full_like(like, scale_cap / max(cfg_scale, EPS))


def average_layers(processed: list) -> tuple:
    """Equal-weight mean over layers of (tokens, fore) pairs already at one size."""
    return (
        sum(tokens for tokens, _ in processed) / len(processed),
        sum(fore for _, fore in processed) / len(processed),
    )


def scfg_rate(delta: torch.Tensor, layers: list, cfg_scale, **options) -> torch.Tensor:
    """The S-CFG rate (B, 1, H, W) with guided = uncond + cfg_scale * rate * delta.

    delta: (B, C, H, W) = cond - uncond in any space. layers: [(cross, self_attn)] per attention
    layer, cross (2, B, h, w, T) and self_attn (2, B, h*w, h*w) (None to skip completion),
    head-averaged probabilities, index 0 = uncond pass, 1 = cond pass; coarser layers are upsampled
    to the finest. options: completion ("code" | "paper"), self_completion (bool), reference
    ("uncond" | "cond"), rate_min, rate_max, scale_cap; for DiTs also valid ((2, B, T) bool, the
    tokens that may own a region) and start_token (False: the whole image is the reference region),
    see process_layer. delta may be a single-frame video prediction (B, C, 1, H, W).
    """
    completion = options.pop("completion", "code")
    use_self = options.pop("self_completion", True)
    valid = options.pop("valid", None)
    start_token = options.pop("start_token", True)
    finest = max((tuple(cross.shape[2:4]) for cross, _ in layers), key=lambda hw: hw[0] * hw[1])
    passes = [
        average_layers(
            [
                process_layer(
                    cross[index],
                    self_attn[index] if use_self and self_attn is not None else None,
                    completion,
                    finest,
                    valid=None if valid is None else valid[index],
                    start_token=start_token,
                )
                for cross, self_attn in layers
            ]
        )
        for index in (0, 1)
    ]
    return spatial_rate(delta, passes[0], passes[1], cfg_scale, **options)


def spatial_rate(delta: torch.Tensor, uncond_maps: tuple, cond_maps: tuple, cfg_scale, **options) -> torch.Tensor:
    """rate_from_maps for (B, C, H, W) or single-frame video (B, C, 1, H, W) predictions (Wan, Qwen-Image,
    Cosmos latents): the rate gets delta's number of dimensions."""
    if delta.ndim == 5:
        if delta.shape[2] != 1:
            raise ValueError(f"S-CFG works on single-frame latents; this one has {delta.shape[2]} frames.")
        return rate_from_maps(delta[:, :, 0], uncond_maps, cond_maps, cfg_scale, **options).unsqueeze(2)
    return rate_from_maps(delta, uncond_maps, cond_maps, cfg_scale, **options)


def scfg_term(
    capture_key: str,
    start: float = 0.0,
    end: float = 1.0,
    progress_source: str = DEFAULT_SOURCE,
    observer=None,
    **options,
) -> GuidanceTerm:
    """The RATE-phase term: s <- s * rate per pixel while start <= tau <= end (rate 1 elsewhere).

    The glue puts the step's layer-averaged maps in state.captures[capture_key] = (uncond, cond), each
    a (tokens, fore) pair.
    observer(state, uncond_maps, cond_maps, rate), if given, sees every evaluation (for visualisation).
    """
    if not 0.0 <= start <= end <= 1.0:
        raise ValueError(f"S-CFG needs 0 <= start <= end <= 1, got start={start}, end={end}")

    def apply(state: GuidanceState) -> GuidanceState:
        captured = (state.captures or {}).get(capture_key)
        if captured is None:
            raise RuntimeError(
                "S-CFG captured no attention maps in this step: another node replaced the attention of the "
                "layers S-CFG reads, or the model ran without them."
            )
        rate = spatial_rate(state.cond - state.uncond, captured[0], captured[1], state.scale, **options)
        tau = state.progress[progress_source].to(rate).view(-1, *([1] * (rate.ndim - 1)))
        rate = torch.where((tau >= start) & (tau <= end), rate, torch.ones_like(rate))
        if observer is not None:
            observer(state, captured[0], captured[1], rate)
        return state.edit(scale=broadcast_scale(state.scale, rate) * rate)

    params = dict(capture_key=capture_key, start=start, end=end, progress_source=progress_source, **options)
    description = f"S-CFG (tau {start:g}-{end:g})"
    return GuidanceTerm("scfg", PHASE_RATE, apply, description, requires=("uncond_pass",), params=params)


def head_averaged_probs(q: torch.Tensor, k: torch.Tensor, heads: int) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) averaged over heads: (b, sq, heads*d), (b, sk, heads*d) -> (b, sq, sk)."""
    b, sq, dim = q.shape
    d = dim // heads
    qh = q.view(b, sq, heads, d).transpose(1, 2).float()
    kh = k.view(b, k.shape[1], heads, d).transpose(1, 2).float()
    probs = torch.zeros(b, sq, k.shape[1], device=q.device)
    for head in range(heads):  # one head at a time bounds the peak memory at b * sq * sk
        probs += ((qh[:, head] @ kh[:, head].transpose(1, 2)) * (1 / math.sqrt(d))).softmax(dim=-1)
    return probs / heads
