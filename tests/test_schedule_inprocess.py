"""CFG Schedule inside real ComfyUI sampling (in-process, tiny random SD1.5 checkpoint)."""

import logging

import comfy_api_helpers as helpers
import pytest
import torch

from guidance.schedules import cfg_scale

S0 = 7.0
STEPS = 4


def schedule(comfy, model, kind="linear", progress="sigma position", clamp_floor=2.0):
    node = comfy.pack.nodes.schedule.CFGSchedule()
    return node.patch(model, kind, progress, clamp_floor, 2.0, 0.28, 5.42)[0]


def test_static_schedule_sampling_equals_unpatched_sampling_exactly(comfy, tiny):
    plain = helpers.ksample(comfy, tiny, tiny.model)
    static = helpers.ksample(comfy, tiny, schedule(comfy, tiny.model, "static"))
    assert torch.equal(plain, static)


def test_linear_schedule_scale_seen_at_each_step(comfy, tiny):
    records = []
    helpers.ksample(comfy, tiny, helpers.recording(schedule(comfy, tiny.model, "linear"), records))
    sigmas = helpers.sampler_sigmas(tiny.model, "normal", STEPS)
    expected = [cfg_scale("linear", k / (STEPS - 1), S0) for k in range(STEPS)]
    assert [helpers.step_index(sigma, sigmas) for sigma, _ in records] == list(range(STEPS))
    assert [s for _, s in records] == pytest.approx(expected, rel=1e-3)


def test_heun_sub_steps_get_the_progress_of_their_sigma(comfy, tiny):
    """Heun evaluates at sigma_k and again at sigma_k+1: progress follows the sigma, not the call count."""
    records = []
    helpers.ksample(comfy, tiny, helpers.recording(schedule(comfy, tiny.model, "linear"), records), sampler="heun")
    sigmas = helpers.sampler_sigmas(tiny.model, "normal", STEPS)
    assert len(records) == 2 * STEPS - 1
    for sigma, scale in records:
        k = helpers.step_index(sigma, sigmas)
        assert scale == pytest.approx(cfg_scale("linear", k / (STEPS - 1), S0), rel=1e-3)


def test_ksampler_advanced_partial_range_by_sigma_position(comfy, tiny):
    records = []
    model = helpers.recording(schedule(comfy, tiny.model, "linear"), records)
    helpers.ksample_advanced(comfy, tiny, model, steps=6, start=2, end=4)
    assert [s for _, s in records] == pytest.approx([cfg_scale("linear", t, S0) for t in (0.0, 1.0)], rel=1e-3)


def test_ksampler_advanced_partial_range_by_timestep(comfy, tiny):
    records = []
    model = helpers.recording(schedule(comfy, tiny.model, "linear", progress="timestep"), records)
    helpers.ksample_advanced(comfy, tiny, model, steps=6, start=2, end=4)
    sampling = tiny.model.get_model_object("model_sampling")
    t_max = sampling.timestep(sampling.sigma_max).item()
    expected = [
        cfg_scale("linear", 1 - sampling.timestep(torch.tensor(sigma)).item() / t_max, S0) for sigma, _ in records
    ]
    assert len(records) == 2
    assert [s for _, s in records] == pytest.approx(expected, rel=1e-3)
    assert 1.0 < records[0][1] < records[1][1] < 2 * S0 - 1


def test_sampler_custom_advanced_with_cfg_guider_matches_ksampler(comfy, tiny):
    model = schedule(comfy, tiny.model, "cosine")
    assert torch.allclose(helpers.ksample(comfy, tiny, model), helpers.custom_sample(tiny, model), atol=1e-5)


def test_scheduled_sampling_differs_from_plain(comfy, tiny):
    plain = helpers.ksample(comfy, tiny, tiny.model)
    scheduled = helpers.ksample(comfy, tiny, schedule(comfy, tiny.model, "linear"))
    assert not torch.allclose(plain, scheduled, atol=1e-3)


def test_uncond_pass_is_kept_when_sampler_cfg_is_one(comfy, tiny):
    """clamp-linear with a floor of 3 guides even at cfg 1: the uncond prediction must be computed."""
    records = []
    model = helpers.recording(schedule(comfy, tiny.model, "clamp-linear", clamp_floor=3.0), records)
    helpers.ksample(comfy, tiny, model, cfg=1.0)
    assert [s for _, s in records] == pytest.approx([3.0] * STEPS, rel=1e-3)


def test_two_guidance_terms_stack_in_either_order(comfy, tiny):
    patching = comfy.pack.nodes.patching
    offset = helpers.offset_term(comfy.pack, 0.05)
    first = patching.add_guidance_term(schedule(comfy, tiny.model, "linear"), offset)
    second = schedule(comfy, patching.add_guidance_term(tiny.model, offset), "linear")
    records = []
    helpers.ksample(comfy, tiny, helpers.recording(first, records, offset=0.05))
    sigmas = helpers.sampler_sigmas(tiny.model, "normal", STEPS)
    assert [s for _, s in records] == pytest.approx([cfg_scale("linear", k / 3, S0) for k in range(STEPS)], rel=1e-3)
    assert torch.equal(helpers.ksample(comfy, tiny, first), helpers.ksample(comfy, tiny, second))
    assert len(sigmas) == STEPS + 1


def test_another_packs_post_cfg_change_is_kept(comfy, tiny):
    foreign = tiny.model.clone()
    foreign.set_model_sampler_post_cfg_function(lambda args: args["denoised"] + 0.1)
    records = []
    helpers.ksample(comfy, tiny, helpers.recording(schedule(comfy, foreign, "linear"), records, offset=0.1))
    assert [s for _, s in records] == pytest.approx([cfg_scale("linear", k / 3, S0) for k in range(STEPS)], rel=1e-3)


def test_another_packs_cfg_function_is_composed_not_dropped(comfy, tiny):
    foreign = tiny.model.clone()
    foreign.set_model_sampler_cfg_function(lambda args: args["uncond"] + (args["cond"] - args["uncond"]) * 3.0)
    alone = helpers.ksample(comfy, tiny, foreign)
    with_static = helpers.ksample(comfy, tiny, schedule(comfy, foreign, "static"))
    assert torch.allclose(alone, with_static, atol=1e-4)
    assert not torch.allclose(alone, helpers.ksample(comfy, tiny, tiny.model), atol=1e-3)


def test_warns_when_a_later_node_removes_the_hook(comfy, tiny, caplog):
    clobbered = schedule(comfy, tiny.model, "linear").clone()
    clobbered.model_options["sampler_post_cfg_function"] = []
    with caplog.at_level(logging.WARNING, logger="dnp_guidance"):
        helpers.ksample(comfy, tiny, clobbered)
    assert "never ran in this sampling run" in caplog.text


def test_a_second_schedule_replaces_the_first_with_a_warning(comfy, tiny, caplog):
    with caplog.at_level(logging.WARNING, logger="dnp_guidance"):
        model = schedule(comfy, schedule(comfy, tiny.model, "linear"), "cosine")
    assert "replaces it" in caplog.text
    stack = comfy.pack.nodes.patching.guidance_stack(model)
    assert stack.names() == ["cfg_schedule"] and stack.get("cfg_schedule").description.startswith("cosine")


def test_patching_leaves_the_input_model_untouched(comfy, tiny):
    before = dict(tiny.model.model_options)
    schedule(comfy, tiny.model, "linear")
    assert tiny.model.model_options == before
    assert "dnp_guidance" not in tiny.model.model_options


def test_validate_inputs_names_the_interval_problem(comfy):
    node = comfy.pack.nodes.schedule.CFGSchedule
    message = node.VALIDATE_INPUTS(kind="interval", clamp_floor=2.0, pcs_power=2.0, sigma_lo=6.0, sigma_hi=1.0)
    assert "CFG Schedule" in message and "sigma_lo < sigma_hi" in message
    assert node.VALIDATE_INPUTS(kind="linear", clamp_floor=2.0, pcs_power=2.0, sigma_lo=6.0, sigma_hi=1.0) is True


def test_plot_draws_the_scales_the_sampler_uses(comfy, tiny):
    module = comfy.pack.nodes.schedule
    model = schedule(comfy, tiny.model, "linear")
    sigmas = module.sampler_sigmas(model, "karras", 10, 1.0)
    scales = module.scales_over(model, sigmas, S0)
    assert scales.tolist() == pytest.approx([cfg_scale("linear", k / 9, S0) for k in range(10)], rel=1e-5)
    image = module.CFGSchedulePlot().plot(model, S0, "karras", 10, 1.0)[0]
    assert image.shape == (1, 360, 640, 3) and 0.0 <= image.min() and image.max() <= 1.0
    assert image.std() > 0.05


def test_plot_uses_the_denoise_truncated_sigmas(comfy, tiny):
    module = comfy.pack.nodes.schedule
    full = module.sampler_sigmas(tiny.model, "normal", 20, 1.0)
    partial = module.sampler_sigmas(tiny.model, "normal", 10, 0.5)
    assert len(partial) == 11 and torch.allclose(partial, full[-11:])


def test_plot_explains_a_model_without_schedule(comfy, tiny):
    with pytest.raises(ValueError, match="Connect the MODEL output of a CFG Schedule node"):
        comfy.pack.nodes.schedule.CFGSchedulePlot().plot(tiny.model, S0, "normal", 10, 1.0)
