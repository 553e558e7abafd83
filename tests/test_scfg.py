"""guidance.scfg: masks and rates from hand-built attention maps (Shen et al., arXiv 2404.05384)."""

import math

import numpy as np
import pytest
import torch

from guidance.scfg import (
    completed,
    head_averaged_probs,
    process_layer,
    rate_from_maps,
    reference_mask,
    region_masks,
    scfg_rate,
    smooth,
)

T = 4  # tokens: start, "fox", "snow", end


def reference_smooth(rate: np.ndarray) -> np.ndarray:
    """The code's 3x3 kernel exp(-x^2) (sigma 0.5) with reflect padding, written out with numpy."""
    k1 = np.exp(-np.array([1.0, 0.0, 1.0]))
    kernel = np.outer(k1, k1) / np.outer(k1, k1).sum()
    padded = np.pad(rate, 1, mode="reflect")
    out = np.zeros_like(rate)
    for i in range(rate.shape[0]):
        for j in range(rate.shape[1]):
            out[i, j] = (padded[i : i + 3, j : j + 3] * kernel).sum()
    return out


def two_region_maps(h=4, w=6, batch=1):
    """Cross maps (2, B, h, w, T): the left half attends 'fox', the right half 'snow'; the start
    token is weak everywhere but five times weaker on the left, so the reference region is the left."""
    cross = torch.full((2, batch, h, w, T), 0.01)
    cross[:, :, :, : w // 2, 1] = 0.9
    cross[:, :, :, w // 2 :, 2] = 0.9
    cross[:, :, :, w // 2 :, 0] = 0.05
    return cross


def delta_with_norms(left: float, right: float, h=8, w=12, batch=1, channels=4):
    """delta whose per-pixel channel L2 norm is `left` on the left half and `right` on the right."""
    delta = torch.zeros(batch, channels, h, w)
    delta[:, 0, :, : w // 2] = left
    delta[:, 0, :, w // 2 :] = right
    return delta


def test_region_masks_are_the_argmax_token():
    maps = torch.zeros(1, T, 2, 2)
    maps[0, 1, 0, :] = 1.0
    maps[0, 2, 1, :] = 1.0
    masks = region_masks(maps)
    assert torch.equal(masks[0, 1], torch.tensor([[1.0, 1.0], [0.0, 0.0]]))
    assert torch.equal(masks[0, 2], torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    assert torch.equal(masks.sum(dim=1), torch.ones(1, 2, 2))


def test_reference_is_where_start_token_is_below_the_others():
    fore = torch.tensor([[[[1.0, 5.0, 2.0]], [[2.0, 2.0, 2.0]]]])  # (1, 2, 1, 3): start, others
    assert torch.equal(reference_mask(fore), torch.tensor([[[[1.0, 0.0, 0.0]]]]))  # ties are not reference


def designed_maps(h=4, w=6):
    """Processed (tokens, fore) maps of both passes with known regions: cond's tokens assign the left
    half to 'fox' and the right half to 'snow'; in the uncond pass the start token outweighs the
    others on the right only, so the reference region is the left half. In the cond pass the start
    token is nowhere, so reference="cond" makes everything reference."""
    cond_tokens = torch.zeros(1, T, h, w)
    cond_tokens[0, 1, :, : w // 2] = 1.0
    cond_tokens[0, 2, :, w // 2 :] = 1.0
    cond_fore = torch.stack([torch.zeros(h, w), torch.ones(h, w)])[None]
    uncond_fore = torch.ones(1, 2, h, w)
    uncond_fore[0, 0, :, : w // 2] = 0.0
    uncond_fore[0, 0, :, w // 2 :] = 10.0
    return (torch.ones(1, T, h, w), uncond_fore), (cond_tokens, cond_fore)


def test_rates_from_hand_built_regions():
    """Reference = left (|delta| 1); 'fox' region = left: rate 1; 'snow' region = right (|delta| 2):
    rate 1/2, clamped to 0.8; then smoothed."""
    rate = rate_from_maps(delta_with_norms(1.0, 2.0), *designed_maps(), 7.0)
    painted = np.ones((8, 12))
    painted[:, 6:] = 0.8
    assert rate.shape == (1, 1, 8, 12)
    np.testing.assert_allclose(rate[0, 0].numpy(), reference_smooth(painted), rtol=1e-5)


def test_a_region_with_weaker_guidance_is_boosted_up_to_the_clamp():
    rate = rate_from_maps(delta_with_norms(1.0, 0.25), *designed_maps(), 4.0)  # 15 / 4 > 3: no cap
    painted = np.ones((8, 12))
    painted[:, 6:] = 3.0  # 1 / 0.25 = 4, clamped to 3
    np.testing.assert_allclose(rate[0, 0].numpy(), reference_smooth(painted), rtol=1e-5)


def test_scale_cap_limits_the_rate_to_15_over_g():
    rate = rate_from_maps(delta_with_norms(1.0, 0.25), *designed_maps(), 10.0)
    assert rate.max().item() <= 1.5 + 1e-6
    assert rate[0, 0, :, -1].min().item() == pytest.approx(1.5)


def test_uniform_delta_gives_rate_one_everywhere():
    torch.manual_seed(0)
    cross = torch.rand(2, 1, 4, 6, T).softmax(-1)
    self_attn = torch.rand(2, 1, 24, 24).softmax(-1)
    rate = scfg_rate(torch.ones(1, 4, 8, 12), [(cross, self_attn)], 7.0)
    assert torch.allclose(rate, torch.ones_like(rate), atol=1e-6)


def test_eps_and_x0_deltas_give_the_same_rate():
    """D = x - sigma eps, so delta_x0 = -sigma delta_eps: ratios of norms do not change."""
    torch.manual_seed(1)
    cross, self_attn = torch.rand(2, 1, 4, 6, T).softmax(-1), torch.rand(2, 1, 24, 24).softmax(-1)
    delta_eps = torch.randn(1, 4, 8, 12)
    rate_eps = scfg_rate(delta_eps, [(cross, self_attn)], 7.0)
    rate_x0 = scfg_rate(-3.7 * delta_eps, [(cross, self_attn)], 7.0)
    assert torch.allclose(rate_eps, rate_x0, atol=1e-5)


def test_batch_of_two_non_square_with_two_map_sizes():
    torch.manual_seed(2)
    fine = (torch.rand(2, 2, 4, 6, T).softmax(-1), torch.rand(2, 2, 24, 24).softmax(-1))
    coarse = (torch.rand(2, 2, 2, 3, T).softmax(-1), torch.rand(2, 2, 6, 6).softmax(-1))
    rate = scfg_rate(torch.randn(2, 4, 16, 24), [fine, coarse], 7.0)
    assert rate.shape == (2, 1, 16, 24)
    assert rate.min() >= 0.8 - 1e-6 and rate.max() <= 3.0 + 1e-6


def test_scfg_rate_segments_hand_built_attention_end_to_end():
    """From raw cross maps: reference = left ('fox', |delta| 1), 'snow' region = right (|delta| 0.5):
    rate 1 on the left, 2 on the right, then smoothed."""
    rate = scfg_rate(delta_with_norms(1.0, 0.5), [(two_region_maps(), None)], 7.0, self_completion=False)
    painted = np.ones((8, 12))
    painted[:, 6:] = 2.0
    np.testing.assert_allclose(rate[0, 0].numpy(), reference_smooth(painted), rtol=1e-5)


def test_an_empty_reference_region_gives_the_lower_clamp_as_the_code_does():
    uncond, cond = designed_maps()
    no_reference = (uncond[0], torch.stack([torch.ones(4, 6), torch.zeros(4, 6)])[None])
    rate = rate_from_maps(delta_with_norms(1.0, 2.0), no_reference, cond, 7.0)
    assert torch.allclose(rate, torch.full_like(rate, 0.8))


def test_batch_entries_are_independent():
    layers = [(two_region_maps(batch=2), None)]
    delta = torch.cat([delta_with_norms(1.0, 0.5), delta_with_norms(1.0, 1.0)])
    rate = scfg_rate(delta, layers, 7.0, self_completion=False)
    assert not torch.allclose(rate[0], rate[1])
    assert torch.allclose(rate[1], torch.ones_like(rate[1]), atol=1e-6)


def completion_matrix(s, completion):
    """The completion matrix A written out: (S + 3 S^2) / 4 (released code) or (S + S^2 + S^3 + S^4) / 4."""
    if completion == "code":
        return (s + 3 * s @ s) / 4
    return (s + s @ s + s @ s @ s + s @ s @ s @ s) / 4


def test_completion_of_the_identity_leaves_the_maps():
    maps = torch.rand(1, 5, T)
    for completion in ("code", "paper"):
        assert torch.allclose(completed(torch.eye(5)[None], maps, completion), maps)


def test_processed_maps_have_unit_spatial_mean():
    tokens, fore = process_layer(torch.rand(1, 4, 6, T), torch.rand(1, 24, 24).softmax(-1))
    assert tokens.shape == (1, T, 4, 6) and fore.shape == (1, 2, 4, 6)
    assert torch.allclose(tokens.mean(dim=(2, 3)), torch.ones(1, T), atol=1e-5)
    assert torch.allclose(fore.mean(dim=(2, 3)), torch.ones(1, 2), atol=1e-5)


def test_reference_maps_are_start_versus_the_sum_of_the_others_before_token_normalisation():
    cross = torch.rand(1, 4, 6, T)
    tokens, fore = process_layer(cross)
    smoothed = smooth(cross.permute(0, 3, 1, 2))
    start, others = smoothed[:, 0], smoothed[:, 1:].sum(dim=1)
    assert torch.allclose(fore[:, 0], start / start.mean(), atol=1e-5)
    assert torch.allclose(fore[:, 1], others / others.mean(), atol=1e-5)


def test_coarser_layers_are_upsampled_before_smoothing():
    """The released code interpolates to the finest side first, then smooths and normalises."""
    cross = torch.rand(1, 2, 3, T)
    tokens, _ = process_layer(cross, size=(4, 6))
    up = torch.nn.functional.interpolate(cross.permute(0, 3, 1, 2), size=(4, 6), mode="bilinear", align_corners=False)
    expected = smooth(up)
    assert torch.allclose(tokens, expected / expected.mean(dim=(2, 3), keepdim=True), atol=1e-5)


def test_reference_from_cond_option():
    cross = two_region_maps()
    cross[1, :, :, :, 0] = 0.0  # cond pass: start token nowhere, so the reference is everything
    rate = rate_from_maps(
        delta_with_norms(1.0, 2.0), process_layer(cross[0]), process_layer(cross[1]), 7.0, reference="cond"
    )
    painted = np.where(np.arange(12) < 6, 1.5 / 1.0, 1.5 / 2.0) * np.ones((8, 12))
    np.testing.assert_allclose(rate[0, 0].numpy(), reference_smooth(np.clip(painted, 0.8, 3.0)), rtol=1e-5)


def test_head_averaged_probs_match_per_head_softmax():
    torch.manual_seed(3)
    q, k = torch.randn(2, 6, 8), torch.randn(2, 5, 8)
    probs = head_averaged_probs(q, k, heads=2)
    manual = (
        sum(
            ((q[..., h * 4 : h * 4 + 4] @ k[..., h * 4 : h * 4 + 4].transpose(1, 2)) / math.sqrt(4)).softmax(-1)
            for h in range(2)
        )
        / 2
    )
    assert torch.allclose(probs, manual, atol=1e-6)
    assert torch.allclose(probs.sum(-1), torch.ones(2, 6), atol=1e-6)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="valid: code, paper"):
        completed(torch.eye(2)[None], torch.ones(1, 2, 1), "fancy")
    with pytest.raises(ValueError, match="valid: uncond, cond"):
        rate_from_maps(torch.ones(1, 4, 2, 2), torch.ones(1, T, 2, 2), torch.ones(1, T, 2, 2), 7.0, reference="both")


def test_whole_image_reference_uses_the_mean_over_the_image():
    """start_token=False (text without a start token): the reference is the whole image, mean |delta| =
    0.75; 'fox' (left, |delta| 1) gets 0.75, clamped to 0.8; 'snow' (right, 0.5) gets 1.5."""
    rate = scfg_rate(
        delta_with_norms(1.0, 0.5), [(two_region_maps(), None)], 7.0, self_completion=False, start_token=False
    )
    painted = np.full((8, 12), 0.8)
    painted[:, 6:] = 1.5
    np.testing.assert_allclose(rate[0, 0].numpy(), reference_smooth(painted), rtol=1e-5)


def test_padding_tokens_own_no_region_and_leave_the_reference_sum():
    cross = two_region_maps()[1]  # (1, 4, 6, T)
    cross[..., 2] = 5.0  # a padding token that every pixel attends most
    valid = torch.tensor([[True, True, False, True]])
    tokens, fore = process_layer(cross, valid=valid)
    kept_tokens, kept_fore = process_layer(cross[..., [0, 1, 3]])
    assert torch.all(tokens[:, 2] == -1) and not region_masks(tokens)[:, 2].any()
    torch.testing.assert_close(tokens[:, [0, 1, 3]], kept_tokens)
    torch.testing.assert_close(fore, kept_fore)


def test_single_frame_video_deltas_get_a_rate_of_their_shape():
    maps = [(two_region_maps(), None)]
    flat = scfg_rate(delta_with_norms(1.0, 0.5), maps, 7.0, self_completion=False)
    video = scfg_rate(delta_with_norms(1.0, 0.5).unsqueeze(2), maps, 7.0, self_completion=False)
    assert video.shape == (1, 1, 1, 8, 12)
    torch.testing.assert_close(video[:, :, 0], flat)
    with pytest.raises(ValueError, match="single-frame"):
        scfg_rate(delta_with_norms(1.0, 0.5).unsqueeze(2).expand(1, 4, 3, 8, 12), maps, 7.0, self_completion=False)


@pytest.mark.parametrize("completion", ["code", "paper"])
def test_completion_applied_by_products_equals_the_matrix(completion):
    s = torch.rand(2, 12, 12).softmax(-1)
    maps = torch.rand(2, 12, T)
    torch.testing.assert_close(completed(s, maps, completion), completion_matrix(s, completion) @ maps)
