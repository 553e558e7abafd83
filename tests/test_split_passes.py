"""A run split into two chained KSamplerAdvanced passes gives the image of the unsplit KSampler run,
with every node of the pack (real ComfyUI sampling, tiny random SD1.5 checkpoint).

Pass 1 runs steps 0-4 of 8 and returns its leftover noise; pass 2 continues from step 4 with
add_noise disabled. The sigmas of the two passes together are the single run's sigmas, so with the
default progress source (timestep) every step sees the tau of the unsplit run.
"""

import comfy_api_helpers as helpers
import comfy_inprocess
import pytest
import torch

STEPS, SPLIT = 8, 4
SAMPLER, SCHEDULER = "euler", "karras"
SEED, CFG = 3, 7.0


def single(comfy, tiny, model, negative):
    return comfy.nodes.common_ksampler(
        model, SEED, STEPS, CFG, SAMPLER, SCHEDULER, tiny.positive, negative, helpers.latent()
    )[0]


def split(comfy, tiny, model, negative):
    advanced = comfy.nodes.KSamplerAdvanced()
    common = (SEED, STEPS, CFG, SAMPLER, SCHEDULER, tiny.positive, negative)
    first = advanced.sample(model, "enable", *common, helpers.latent(), 0, SPLIT, "enable")[0]
    return advanced.sample(model, "disable", *common, first, SPLIT, 10000, "disable")[0]


def pixels(tiny, latent) -> torch.Tensor:
    """The decoded image as saved: 0-255 integers."""
    return (tiny.vae.decode(latent["samples"]).clamp(0, 1) * 255).round()


def pixel_gap(comfy, tiny, model, negative) -> float:
    with torch.inference_mode():  # as ComfyUI's executor runs every node
        one, two = single(comfy, tiny, model, negative), split(comfy, tiny, model, negative)
        return float((pixels(tiny, one) - pixels(tiny, two)).abs().max())


@pytest.fixture(scope="module")
def control_gap(comfy, tiny):
    """The unpatched model's split-vs-single difference: float rounding of the chained passes only."""
    return pixel_gap(comfy, tiny, tiny.model, tiny.negative)


def test_unpatched_split_run_is_the_single_run(control_gap):
    assert control_gap <= 1.0


def schedule(comfy, model):
    return comfy.pack.nodes.schedule.CFGSchedule().patch(model, "linear", "timestep", 2.0, 2.0, 0.28, 5.42)[0]


def scfg(comfy, model):
    options = dict(layers="auto (1/4 + 1/8)", rate_min=0.8, rate_max=3.0, scale_cap=15.0, start=0.5, end=1.0)
    options.update(self_completion=True, completion="code", reference="uncond")
    return comfy.pack.nodes.scfg.SCFG().patch(model, **options)[0]


def dns(comfy, model):
    return comfy.pack.nodes.dns.DNSGuidance().patch(model, 0.0)[0]


def loss_guidance(comfy, model):
    nodes = comfy.pack.nodes.loss_guidance
    red = comfy.pack.nodes.loss_nodes.ColourTargetLoss().build("#FF0000", 1.0)[0]
    settings = {
        **comfy_inprocess.default_settings(nodes.LossGuidance),
        "decoder": "latent preview",
        "augmentations": 2,
        "scale": 0.03,
    }
    settings.update(time_travel_repeats=2, time_travel_start=0.2, time_travel_end=0.7)
    return nodes.LossGuidance().patch(model, red, **settings)[0]


def default_schedule(comfy, model):
    """CFG Schedule with every input at its default (the default progress source included)."""
    node = comfy.pack.nodes.schedule.CFGSchedule
    defaults = {name: spec[1]["default"] for name, spec in node.INPUT_TYPES()["required"].items() if name != "model"}
    return node().patch(model, **{**defaults, "kind": "linear"})[0]


PATCHES = {
    "cfg schedule": schedule,
    "cfg schedule, default inputs": default_schedule,
    "s-cfg": scfg,
    "dns": dns,
    "loss guidance": loss_guidance,
}


@pytest.mark.parametrize("name", PATCHES)
def test_split_run_gives_the_single_runs_image(comfy, tiny, empty, control_gap, name):
    negative = empty if name == "dns" else tiny.negative
    patched = PATCHES[name](comfy, tiny.model)
    assert pixel_gap(comfy, tiny, patched, negative) <= max(control_gap, 1.0)


def test_the_stack_of_every_node_splits_too(comfy, tiny, empty, control_gap):
    model = tiny.model
    for patch in (schedule, scfg, dns, loss_guidance):
        model = patch(comfy, model)
    assert pixel_gap(comfy, tiny, model, empty) <= max(control_gap, 1.0)


def test_sigma_position_restarts_in_the_second_pass(comfy, tiny, control_gap):
    """The other progress source replays the curve per pass: the split run differs (the reason the
    default is timestep)."""
    patched = comfy.pack.nodes.schedule.CFGSchedule().patch(
        tiny.model, "linear", "sigma position", 2.0, 2.0, 0.28, 5.42
    )[0]
    assert pixel_gap(comfy, tiny, patched, tiny.negative) > 10 * max(control_gap, 1.0)


def test_denoise_below_one_starts_partway_along_the_schedule(comfy, tiny):
    """denoise 0.5: the first step's tau is where its sigma lies in the model's time, not 0."""
    from guidance.schedules import cfg_scale

    records = []
    recorder = helpers.recording(schedule(comfy, tiny.model), records)
    with torch.inference_mode():
        comfy.nodes.common_ksampler(
            recorder, SEED, STEPS, CFG, SAMPLER, "normal", tiny.positive, tiny.negative, helpers.latent(), denoise=0.5
        )
    sampling = tiny.model.get_model_object("model_sampling")
    t_max = float(sampling.timestep(sampling.sigma_max))
    taus = [1 - float(sampling.timestep(torch.tensor(sigma))) / t_max for sigma, _ in records]
    assert len(records) == STEPS and taus[0] == pytest.approx(0.5, abs=0.1)
    assert [scale for _, scale in records] == pytest.approx([cfg_scale("linear", tau, CFG) for tau in taus], rel=1e-3)
