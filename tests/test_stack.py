"""guidance.stack: phase order, replacement by name, exact plain CFG, additive composition."""

import torch

from guidance.stack import (
    PHASE_CORRECTION,
    PHASE_SCALE,
    GuidanceStack,
    GuidanceState,
    GuidanceTerm,
    apply_stack,
    cfg_x0,
)

torch.manual_seed(0)
COND, UNCOND, X = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
S0 = 7.0


def state(**changes):
    base = dict(cond=COND, uncond=UNCOND, x=X, sigma=torch.tensor([1.0, 1.0]), base_scale=S0, progress={}, scale=S0)
    return GuidanceState(**{**base, **changes})


def plain():
    return UNCOND + (COND - UNCOND) * S0  # ComfyUI's own expression


def set_scale(value):
    return GuidanceTerm("scale", PHASE_SCALE, lambda s: s.edit(scale=value))


def double_scale():
    return GuidanceTerm("double", PHASE_SCALE + 1, lambda s: s.edit(scale=s.scale * 2))


def add_correction(value):
    return GuidanceTerm("correction", PHASE_CORRECTION, lambda s: s.edit(correction=s.correction + value))


def test_empty_stack_returns_the_cfg_result_unchanged():
    assert torch.equal(apply_stack(GuidanceStack(), plain(), state()), plain())


def test_a_stack_that_keeps_s0_is_bit_identical_to_plain_cfg():
    assert torch.equal(apply_stack(GuidanceStack().with_term(set_scale(S0)), plain(), state()), plain())


def test_per_batch_scale_applies_per_entry():
    out = apply_stack(GuidanceStack().with_term(set_scale(torch.tensor([1.0, 3.0]))), plain(), state())
    assert torch.allclose(out[0], COND[0], atol=1e-5)
    assert torch.allclose(out[1], UNCOND[1] + 3.0 * (COND[1] - UNCOND[1]), atol=1e-5)


def test_terms_run_in_phase_order_whatever_the_insertion_order():
    a = GuidanceStack().with_term(double_scale()).with_term(set_scale(2.0))
    b = GuidanceStack().with_term(set_scale(2.0)).with_term(double_scale())
    assert a.run(state()).scale == b.run(state()).scale == 4.0


def test_a_term_with_the_same_name_replaces_the_old_one():
    stack = GuidanceStack().with_term(set_scale(2.0)).with_term(set_scale(3.0))
    assert stack.names() == ["scale"]
    assert stack.run(state()).scale == 3.0


def test_correction_is_added_in_x0_space():
    out = apply_stack(GuidanceStack().with_term(add_correction(0.5)), plain(), state())
    assert torch.allclose(out, plain() + 0.5)


def test_other_changes_to_the_cfg_result_are_kept():
    """Another pack's cfg function / earlier post-CFG hook moved the result by `foreign`: kept on top of ours."""
    foreign = torch.full_like(COND, 0.25)
    out = apply_stack(GuidanceStack().with_term(set_scale(2.0)), plain() + foreign, state())
    assert torch.allclose(out, cfg_x0(COND, UNCOND, 2.0) + foreign, atol=1e-5)
