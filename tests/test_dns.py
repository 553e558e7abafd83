"""DNS: the maths (guidance/dns.py) and the nodes in real ComfyUI sampling."""

import comfy_api_helpers as helpers
import pytest
import torch

from guidance.dns import dns_terms
from guidance.stack import GuidanceStack, GuidanceState, apply_stack

S0 = 7.0


def dns_x0(cond_p, uncond_empty, scale):
    """(DNS) in x0 space, written out: D_p + s (D_empty - D_p); equal to CFG with the prompts swapped."""
    return cond_p + (uncond_empty - cond_p) * scale


def test_the_dns_formula_is_cfg_with_the_prompts_swapped():
    """The reference the stack test below checks against: CFG with p as the negative, empty as the positive."""
    cond_p, uncond_empty = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)

    def cfg(cond, uncond, scale):
        return uncond + (cond - uncond) * scale

    assert torch.allclose(dns_x0(cond_p, uncond_empty, S0), cfg(cond=uncond_empty, uncond=cond_p, scale=S0))


def test_dns_term_swaps_direction_on_the_stack():
    cond, uncond = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    stack = GuidanceStack()
    for term in dns_terms():
        stack = stack.with_term(term)
    state = GuidanceState(cond, uncond, cond, torch.ones(1), S0, {}, S0)
    plain = uncond + (cond - uncond) * S0
    assert torch.allclose(apply_stack(stack, plain, state), dns_x0(cond, uncond, S0))


def test_dns_own_scale_replaces_the_base_scale():
    stack = GuidanceStack()
    for term in dns_terms(3.0):
        stack = stack.with_term(term)
    state = stack.run(GuidanceState(torch.zeros(1), torch.ones(1), torch.zeros(1), torch.ones(1), S0, {}, S0))
    assert state.base_scale == 3.0 and state.scale == 3.0


def test_negative_dns_scale_is_refused():
    with pytest.raises(ValueError, match="DNS scale must be >= 0"):
        dns_terms(-1.0)


def dns_model(comfy, model, scale=0.0):
    return comfy.pack.nodes.dns.DNSGuidance().patch(model, scale)[0]


def test_dns_patch_equals_plain_cfg_with_prompts_swapped(comfy, tiny, empty):
    patched = helpers.ksample(comfy, tiny, dns_model(comfy, tiny.model), positive=tiny.positive, negative=empty)
    swapped = helpers.ksample(comfy, tiny, tiny.model, positive=empty, negative=tiny.positive)
    assert helpers.same_sample(patched, swapped)
    assert not torch.allclose(patched, helpers.ksample(comfy, tiny, tiny.model, negative=empty), atol=1e-3)


def test_dns_conditioning_node_gives_the_same_image(comfy, tiny, empty):
    positive, negative = comfy.pack.nodes.dns.DNSConditioning().swap(tiny.positive, empty)
    by_swap = helpers.ksample(comfy, tiny, tiny.model, positive=positive, negative=negative)
    by_patch = helpers.ksample(comfy, tiny, dns_model(comfy, tiny.model), positive=tiny.positive, negative=empty)
    assert helpers.same_sample(by_swap, by_patch)


def test_dns_at_scale_one_is_the_unguided_empty_prompt_sample(comfy, tiny, empty):
    dns = helpers.ksample(comfy, tiny, dns_model(comfy, tiny.model, 1.0), positive=tiny.positive, negative=empty)
    unguided = helpers.ksample(comfy, tiny, tiny.model, cfg=1.0, positive=empty, negative=tiny.positive)
    assert helpers.same_sample(dns, unguided)


def test_dns_own_scale_overrides_the_sampler_cfg(comfy, tiny, empty):
    own = helpers.ksample(
        comfy, tiny, dns_model(comfy, tiny.model, 4.0), cfg=S0, positive=tiny.positive, negative=empty
    )
    swapped = helpers.ksample(comfy, tiny, tiny.model, cfg=4.0, positive=empty, negative=tiny.positive)
    assert helpers.same_sample(own, swapped)


def test_dns_stacks_with_a_cfg_schedule(comfy, tiny, empty):
    records = []
    scheduled = comfy.pack.nodes.schedule.CFGSchedule().patch(
        tiny.model, "linear", "sigma position", 2.0, 2.0, 0.28, 5.42
    )[0]
    model = helpers.recording(dns_model(comfy, scheduled), records, swapped=True)
    helpers.ksample(comfy, tiny, model, positive=tiny.positive, negative=empty)
    assert [s for _, s in records] == pytest.approx([1 + 2 * (S0 - 1) * k / 3 for k in range(4)], rel=1e-3)


def test_empty_prompt_for_dns_is_a_clear_error(comfy, tiny, empty):
    with pytest.raises(ValueError, match="needs a prompt p in positive that differs"):
        helpers.ksample(comfy, tiny, dns_model(comfy, tiny.model), positive=empty, negative=empty)


def test_nan_latent_is_a_clear_error(comfy, tiny, empty):
    latent = torch.full((1, 4, 16, 16), float("nan"))
    with pytest.raises(ValueError, match="input latent contains NaN"):
        helpers.ksample(
            comfy, tiny, dns_model(comfy, tiny.model), positive=tiny.positive, negative=empty, latent=latent
        )


def test_dns_conditioning_batch_mismatch_is_a_clear_error(comfy, tiny, empty):
    two = [[torch.cat([tiny.positive[0][0]] * 2), tiny.positive[0][1]]]
    three = [[torch.cat([empty[0][0]] * 3), empty[0][1]]]
    with pytest.raises(ValueError, match="positive has batch 2 but empty has batch 3"):
        comfy.pack.nodes.dns.DNSConditioning().swap(two, three)
    assert comfy.pack.nodes.dns.DNSConditioning().swap(two, empty) == (empty, two)
