"""guidance.attention_maps: image x text and image x image probabilities of one DiT attention call,
against a full softmax written out naively, with pooling, chunking, masks and both tensor layouts."""

import math

import pytest
import torch

from guidance import attention_maps
from guidance.attention_maps import block_centres, block_sum, pool_factor, probabilities

HEADS = 3


def random_qk(batch, length, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, HEADS, length, dim, generator=g)
    k = torch.randn(batch, HEADS, length, dim, generator=g)
    return q, k


def naive_rows(q, k, start, n, mask=None):
    """Head-averaged softmax(q k^T / sqrt(d)) of the image query rows, over all keys."""
    logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if mask is not None:
        logits = logits + mask
    return logits.softmax(dim=-1).mean(dim=1)[:, start : start + n]


def key_block_sums(grid, factor):
    """(n, n') sums of the image keys over each f x f block of the token grid, written out pixel by pixel."""
    h, w = grid
    wp = -(-w // factor)
    total = torch.zeros(h * w, -(-h // factor) * wp)
    for i in range(h):
        for j in range(w):
            total[i * w + j, (i // factor) * wp + j // factor] = 1.0
    return total


def renormalised(maps):
    return maps / maps.sum(dim=-1, keepdim=True)


@pytest.mark.parametrize("grid", [(3, 5), (4, 4)])
def test_joint_call_maps_equal_the_naive_softmax_slices(grid):
    text_start, text_count, image_start = 1, 4, 6  # a register token, 4 text tokens, a pad, then the image
    n = grid[0] * grid[1]
    q, k = random_qk(2, image_start + n + 3)  # 3 reference-image tokens after the image
    cross, self_maps = probabilities(q, k, HEADS, (image_start, grid), (text_start, text_count), True, True, factor=1)
    rows = naive_rows(q, k, image_start, n)
    torch.testing.assert_close(cross, renormalised(rows[..., text_start : text_start + text_count]))
    torch.testing.assert_close(self_maps, renormalised(rows[..., image_start : image_start + n]))
    assert torch.allclose(cross.sum(-1), torch.ones(2, n)) and torch.allclose(self_maps.sum(-1), torch.ones(2, n))


def test_unsplit_heads_layout_gives_the_same_maps():
    q, k = random_qk(1, 4 + 6)
    flat = [t.transpose(1, 2).reshape(1, 10, -1) for t in (q, k)]  # (B, L, H*D), as SD3 and Wan call it
    split = probabilities(q, k, HEADS, (4, (2, 3)), (0, 4), True, skip_reshape=True, factor=1)
    unsplit = probabilities(*flat, HEADS, (4, (2, 3)), (0, 4), True, skip_reshape=False, factor=1)
    for a, b in zip(split, unsplit):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("grid, factor, pooled", [((35, 33), 2, (18, 17)), ((70, 66), 4, (18, 17))])
def test_maps_are_read_at_block_centres_with_keys_summed_per_block(grid, factor, pooled):
    """Half the token grid (1/4 of the latent), coarser above 1024 map pixels; partial blocks at two edges."""
    assert pool_factor(grid) == factor and attention_maps.pooled_grid(grid) == pooled
    centres = block_centres(grid, factor)
    h, w = grid
    assert (
        centres[0].item() == (factor // 2) * w + factor // 2
        and centres[pooled[1] - 1].item() == (factor // 2) * w + w - 1
    )
    n = h * w
    q, k = random_qk(1, 5 + n, dim=4, seed=1)
    cross, self_maps = probabilities(q, k, HEADS, (5, grid), (0, 5), True, True)
    rows = naive_rows(q, k, 5, n)[:, centres]
    torch.testing.assert_close(cross, renormalised(rows[..., :5]), atol=1e-6, rtol=1e-4)
    expected_self = renormalised(rows[..., 5:] @ key_block_sums(grid, factor))
    torch.testing.assert_close(self_maps, expected_self, atol=1e-6, rtol=1e-4)
    assert self_maps.shape == (1, pooled[0] * pooled[1], pooled[0] * pooled[1])


def test_chunked_rows_give_the_same_maps(monkeypatch):
    q, k = random_qk(2, 4 + 20)
    whole = probabilities(q, k, HEADS, (4, (4, 5)), (0, 4), True, True, factor=1)
    monkeypatch.setattr(attention_maps, "MAX_LOGITS_ELEMENTS", 2 * 24 * 3)  # 3 query rows per chunk
    chunked = probabilities(q, k, HEADS, (4, (4, 5)), (0, 4), True, True, factor=1)
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("kind", ["additive", "bool"])
def test_the_calls_mask_is_applied_before_the_softmax(kind):
    q, k = random_qk(2, 3 + 6)
    keep = torch.ones(2, 1, 9, 9, dtype=torch.bool)
    keep[1, ..., 2] = False  # the second entry's last text token is padding
    additive = torch.zeros(keep.shape).masked_fill(~keep, float("-inf"))
    cross, self_maps = probabilities(
        q, k, HEADS, (3, (2, 3)), (0, 3), True, True, additive if kind == "additive" else keep, factor=1
    )
    rows = naive_rows(q, k, 3, 6, additive)
    assert torch.all(cross[1, :, 2] == 0) and torch.all(cross[0, :, 2] > 0)
    torch.testing.assert_close(cross, renormalised(rows[..., :3]))
    torch.testing.assert_close(self_maps, renormalised(rows[..., 3:]))


def test_cross_attention_keys_are_text_only():
    g = torch.Generator().manual_seed(3)
    q, k = torch.randn(1, HEADS, 6, 8, generator=g), torch.randn(1, HEADS, 5, 8, generator=g)
    cross, self_maps = probabilities(q, k, HEADS, (0, (2, 3)), (0, 5), False, True, factor=1)
    assert self_maps is None
    torch.testing.assert_close(cross, renormalised(naive_rows(q, k, 0, 6)))


def test_block_sum_on_a_partial_grid():
    maps = torch.arange(15.0).reshape(1, 1, 3, 5)
    assert block_sum(maps, 2).tolist() == [[[[12.0, 20.0, 13.0], [21.0, 25.0, 14.0]]]]
    assert block_sum(maps, 1) is maps


def test_read_sides_follow_the_latent_and_the_bound():
    assert attention_maps.pooled_grid((32, 32)) == (16, 16)  # 512 px SD3 / Flux: 1/4 of the 64 x 64 latent
    assert attention_maps.pooled_grid((64, 64)) == (32, 32)  # 1024 px
    assert attention_maps.pooled_grid((128, 128)) == (32, 32)  # 2048 px: the 1024-pixel bound
    assert attention_maps.pooled_grid((4, 6)) == (2, 3)
