"""Attention probabilities between chosen token ranges of one attention call, head-averaged and
pooled: what S-CFG reads from a DiT (Shen et al., CVPR 2024, arXiv 2404.05384, applied to joint
attention as in Seg4Diff, Kim et al., NeurIPS 2025, cvlab-kaist/Seg4Diff, and ConceptAttention,
Helbling et al., 2025, arXiv 2502.04320).

A DiT has no separate cross-attention: in a joint block (SD3, Flux, Qwen-Image, Lumina2) the queries
and keys are the concatenation of text and image tokens, P = softmax(q k^T / sqrt(d)) over all keys.
For the image query rows i of P:

    cross[i, t] = P[i, text_t] / sum_t' P[i, text_t']      (image x text, rows renormalised over text)
    self[i, j]  = P[i, image_j] / sum_j' P[i, image_j']     (image x image, rows renormalised)

averaged over heads (probabilities of each head, then the mean, as the UNet path does). Renormalising
a row does not change which token it attends most; it makes the rows stochastic like a UNet's
cross- and self-attention softmax, which the self-attention completion (S + 3 S^2) / 4 assumes.
Cross-attention DiTs (Wan, Cosmos Predict2) give `cross` from their text cross-attention (keys: text
only) and `self` from their image self-attention.

Resolution, memory and cost: the maps are read at 1/4 of the latent side (half the token grid of a
DiT with 2 x 2 patches), the finest side the released code reads a UNet at (SD1.5 at 512 px: 16 x 16),
and coarser by further powers of two above MAX_TOKENS map pixels (32 x 32): for a factor f the query
rows are the centre pixel of each f x f block of the token grid (their probabilities exact) and the
image keys are summed over each block (rows stay stochastic). So the N x N self map is never
materialised and the extra work is N / f^2 query rows; the logits are computed one head and one chunk
of those rows at a time (at most MAX_LOGITS_ELEMENTS floats). A 512 px SD3 / Flux image (32 x 32
tokens) is read at 16 x 16, a 1024 px one (64 x 64) at 32 x 32: 1024 query rows per block and a 4 MiB
self map, applied to the T text maps by products of 2 * 1024^2 * T FLOP (guidance.scfg.completed).
"""

import torch
import torch.nn.functional as F

MAX_LOGITS_ELEMENTS = 2**22  # floats in one chunk of logits (16 MiB in fp32)
MAX_TOKENS = 1024  # the most map pixels read (32 x 32); coarser beyond
# Maps are read at 1/2 of the token grid: 1/4 of the latent side for a DiT with 2 x 2 patches, the finest
# side S-CFG's released code reads a UNet at (SD1.5 at 512 px: 16 x 16).
TOKEN_GRID_FACTOR = 2
EPS = 1e-8


def as_heads(t: torch.Tensor, heads: int, skip_reshape: bool) -> torch.Tensor:
    """(B, L, H*D) -> (B, H, L, D); already (B, H, L, D) when the call passes skip_reshape."""
    if skip_reshape:
        return t
    b, length, dim = t.shape
    return t.view(b, length, heads, dim // heads).transpose(1, 2)


def reduced(grid: tuple, factor: int) -> tuple:
    """The grid of f x f blocks over (h, w): (ceil(h / f), ceil(w / f))."""
    return -(-grid[0] // factor), -(-grid[1] // factor)


def pool_factor(grid: tuple, max_tokens: int = MAX_TOKENS, least: int = TOKEN_GRID_FACTOR) -> int:
    """The smallest power of two f >= least with ceil(h / f) * ceil(w / f) <= max_tokens."""
    factor = least
    while reduced(grid, factor)[0] * reduced(grid, factor)[1] > max_tokens:
        factor *= 2
    return factor


def block_sum(maps: torch.Tensor, factor: int) -> torch.Tensor:
    """Sums over f x f blocks of (..., h, w), zero-padded to whole blocks: (..., ceil(h/f), ceil(w/f))."""
    if factor == 1:
        return maps
    *lead, h, w = maps.shape
    hp, wp = reduced((h, w), factor)
    padded = F.pad(maps, (0, wp * factor - w, 0, hp * factor - h))
    return padded.reshape(*lead, hp, factor, wp, factor).sum(dim=(-3, -1))


def softmax_(logits: torch.Tensor) -> None:
    """softmax over the last dimension, in place (one buffer for the chunk's logits and probabilities)."""
    logits.sub_(logits.amax(dim=-1, keepdim=True)).exp_()
    logits.div_(logits.sum(dim=-1, keepdim=True).clamp(min=EPS))


def block_sum_flat(maps: torch.Tensor, grid: tuple, factor: int) -> torch.Tensor:
    """block_sum of (..., h*w) maps in grid order, flattened back: (..., ceil(h/f) * ceil(w/f)); a view
    and a sum when f divides both sides."""
    h, w = grid
    if factor == 1:
        return maps
    if h % factor == 0 and w % factor == 0:
        return maps.unflatten(-1, (h // factor, factor, w // factor, factor)).sum(dim=(-3, -1)).flatten(-2)
    return block_sum(maps.unflatten(-1, grid), factor).flatten(-2)


def _additive_mask(mask, dtype) -> torch.Tensor:
    """ComfyUI's attention mask as an additive (B|1, H|1, Lq|1, Lk) float mask (its backends' convention:
    a 2-D mask is (Lq, Lk), a 3-D one (B, Lq, Lk); a bool mask keeps the True entries)."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, float("-inf"))
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    if mask.ndim == 3:
        mask = mask.unsqueeze(1)
    return mask.to(dtype)


def _mask_rows(mask, head: int, rows: torch.Tensor, query_length: int):
    """The mask rows of these query positions, or None when the mask does not fit the call."""
    if mask is None or mask.ndim != 4:
        return None
    selected = mask[:, head if mask.shape[1] > 1 else 0]
    return selected[:, rows] if selected.shape[1] == query_length else selected


def block_centres(grid: tuple, factor: int) -> torch.Tensor:
    """Token indices (grid order) of the centre pixel of each f x f block, clipped at the edges."""
    (h, w), (hp, wp) = grid, reduced(grid, factor)
    ys = (torch.arange(hp) * factor + factor // 2).clamp(max=h - 1)
    xs = (torch.arange(wp) * factor + factor // 2).clamp(max=w - 1)
    return (ys[:, None] * w + xs[None, :]).flatten()


def probabilities(
    q, k, heads: int, image: tuple, text=None, image_keys: bool = True, skip_reshape=False, mask=None, factor=None
):
    """Head-averaged attention probabilities of an attention call's image query rows.

    q, k: the call's queries and keys ((B, L, H*D), or (B, H, L, D) with skip_reshape); mask: its mask.
    image: (start, (h, w)): the image queries are rows [start, start + h*w) in grid order, and, when
    image_keys, the image keys are the same positions of k. text: (start, count) of the text keys, or None.
    Returns (cross (B, n, count) or None, self (B, n, n) or None) on the grid pooled_grid((h, w)) of
    n tokens (block centres as queries, keys summed per block), rows renormalised. factor: the grid's
    reduction (default pool_factor(grid); 1 reads every token).
    """
    start, grid = image
    qh = as_heads(q, heads, skip_reshape)
    kh = as_heads(k, heads, skip_reshape).float()
    b, head_count, query_length, d = qh.shape
    keys = kh.shape[2]
    factor = pool_factor(grid) if factor is None else factor
    rows_read = start + block_centres(grid, factor)
    rows_read = rows_read.to(qh.device)
    n = rows_read.shape[0]
    pooled = reduced(grid, factor)
    additive = _additive_mask(mask, torch.float32)
    if additive is not None and additive.shape[-1] != keys:
        additive = None
    cross = qh.new_zeros(b, n, text[1], dtype=torch.float32) if text is not None else None
    self_maps = qh.new_zeros(b, n, pooled[0] * pooled[1], dtype=torch.float32) if image_keys else None
    chunk = max(1, MAX_LOGITS_ELEMENTS // max(1, b * keys))
    for head in range(head_count):  # one head and one chunk of rows at a time bounds the peak memory
        queries = qh[:, head].index_select(1, rows_read).float() * d**-0.5
        keys_t = kh[:, head].transpose(1, 2)
        for row in range(0, n, chunk):
            rows = rows_read[row : row + chunk]
            probs = queries[:, row : row + chunk] @ keys_t
            row_mask = _mask_rows(additive, head, rows, query_length)
            if row_mask is not None:
                probs += row_mask
            softmax_(probs)
            out = slice(row, row + rows.shape[0])
            if cross is not None:
                cross[:, out] += probs[..., text[0] : text[0] + text[1]]
            if self_maps is not None:
                image_probs = probs[..., start : start + grid[0] * grid[1]]
                self_maps[:, out] += block_sum_flat(image_probs, grid, factor)
    return _renormalised(cross), _renormalised(self_maps)


def _renormalised(maps):
    """Rows summed over heads -> rows that sum to 1 (the head mean, renormalised)."""
    if maps is None:
        return None
    return maps / maps.sum(dim=-1, keepdim=True).clamp(min=EPS)


def pooled_grid(grid: tuple) -> tuple:
    """The (h, w) of the maps `probabilities` returns for an image token grid."""
    return reduced(grid, pool_factor(grid))
