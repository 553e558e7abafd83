"""The pack's methods on tiny DiT / flow-matching models loaded through ComfyUI's own detection
(scripts/tiny_dits.py): exactness in the model's velocity parameterisation, the guidance interval in
EDM sigma, guidance-distilled models at cfg 1, video latents, loss guidance and a composition of every
method over two chained passes."""

import comfy_inprocess
import pytest
import torch
from comfy_api_helpers import widget_defaults

from guidance.coordinates import FLOW, edm_sigma
from guidance.schedules import cfg_scale

FLOW_CFG_FAMILIES = ["sd3", "sd35_medium", "flux_dev", "chroma", "qwen_image", "wan21", "lumina2", "z_image"]
FLOW_CFG_FAMILIES += ["aura_flow", "cosmos_predict2"]
SAMPLING = {"cosmos_predict2": "COSMOS_RFLOW"}  # the rest are ComfyUI's CONST (flow matching)
S0 = 4.0


@pytest.fixture(scope="module")
def dits(comfy):
    import tiny_dits

    return tiny_dits


def family(dits, name):
    return dits.FAMILIES[name]()


@pytest.mark.parametrize("name", ["sd3", "sd35_medium", "flux_dev", "flux_schnell", "chroma", "qwen_image", "wan21",
                                  "lumina2", "z_image", "aura_flow", "cosmos_predict2"])  # fmt: skip
def test_each_tiny_model_is_the_family_comfyuis_detection_names(comfy, dits, name):
    import comfy.model_sampling as model_sampling

    tiny = family(dits, name)
    assert tiny.detected == tiny.expected
    sampling = tiny.patcher.get_model_object("model_sampling")
    assert isinstance(sampling, getattr(model_sampling, SAMPLING.get(name, "CONST")))
    assert tiny.latent.shape[-1] != tiny.latent.shape[-2]


class VelocityRecorder:
    """A post-CFG function after the pack's: per evaluation, the velocities v = (x - x0) / sigma of the
    positive, negative and final predictions (CONST: x0 = x - sigma v, so this is the network's v)."""

    def __init__(self):
        self.records = []

    def __call__(self, args):
        x, sigma = args["input"], args["sigma"].view(-1, *([1] * (args["input"].ndim - 1)))

        def velocity(x0):
            return (x - x0) / sigma

        self.records.append(
            dict(
                sigma=float(args["sigma"][0]),
                cond=velocity(args["cond_denoised"]),
                uncond=velocity(args["uncond_denoised"]),
                out=velocity(args["denoised"]),
            )
        )
        return args["denoised"]


def timestep_progress(tiny, sigma: float) -> float:
    """tau = 1 - t(sigma) / t(sigma_max) from ComfyUI's own sigma -> timestep map (1 - sigma on CONST)."""
    sampling = tiny.patcher.get_model_object("model_sampling")
    t = float(sampling.timestep(torch.tensor(sigma)))
    return min(max(1 - t / float(sampling.timestep(sampling.sigma_max)), 0.0), 1.0)


def recorded(model):
    recorder = VelocityRecorder()
    clone = model.clone()
    clone.set_model_sampler_post_cfg_function(recorder)
    return clone, recorder


def ksample(comfy, tiny, model, cfg=S0, steps=4, positive=None, negative=None, latent=None, seed=3):
    positive = tiny.positive if positive is None else positive
    negative = tiny.negative if negative is None else negative
    latent = {"samples": tiny.latent if latent is None else latent}
    with torch.inference_mode():  # as ComfyUI's executor runs every node
        run = comfy.nodes.common_ksampler(model, seed, steps, cfg, "euler", "simple", positive, negative, latent)
    return run[0]["samples"]


def schedule(comfy, model, kind, **changes):
    values = dict(kind=kind, progress="timestep", clamp_floor=2.0, pcs_power=2.0, sigma_lo=0.28, sigma_hi=5.42)
    return comfy.pack.nodes.schedule.CFGSchedule().patch(model, **{**values, **changes})[0]


def dns(comfy, model, scale=0.0):
    return comfy.pack.nodes.dns.DNSGuidance().patch(model, scale)[0]


def close(a, b):
    return torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))


@pytest.mark.parametrize("name", FLOW_CFG_FAMILIES)
def test_a_cfg_schedule_is_exact_in_the_models_velocity(comfy, dits, name):
    tiny = family(dits, name)
    model, recorder = recorded(schedule(comfy, tiny.patcher, "cosine"))
    ksample(comfy, tiny, model)
    assert len(recorder.records) == 4
    for record in recorder.records:
        s = cfg_scale("cosine", timestep_progress(tiny, record["sigma"]), S0)
        assert close(record["out"], record["uncond"] + s * (record["cond"] - record["uncond"]))
    scales = [cfg_scale("cosine", timestep_progress(tiny, record["sigma"]), S0) for record in recorder.records]
    assert max(scales) - min(scales) > 1.0  # the schedule moved s over the run


@pytest.mark.parametrize("name", FLOW_CFG_FAMILIES)
def test_dns_is_exact_in_the_models_velocity(comfy, dits, name):
    tiny = family(dits, name)
    model, recorder = recorded(dns(comfy, tiny.patcher, 2.5))
    ksample(comfy, tiny, model)
    for record in recorder.records:  # positive = p, negative = the other prompt: guide away from p
        p, other = record["cond"], record["uncond"]
        assert close(record["out"], p + 2.5 * (other - p))
        assert not close(record["out"], other + 2.5 * (p - other))


@pytest.mark.parametrize("name", ["sd3", "flux_dev"])
def test_the_guidance_interval_is_the_same_edm_band_on_flow_models(comfy, dits, name):
    tiny = family(dits, name)
    model, recorder = recorded(schedule(comfy, tiny.patcher, "interval", sigma_lo=0.5, sigma_hi=3.0))
    ksample(comfy, tiny, model, steps=8)
    inside = []
    for record in recorder.records:
        edm = float(edm_sigma(torch.tensor(record["sigma"]), FLOW))
        s = S0 if 0.5 < edm <= 3.0 else 1.0
        inside.append(s == S0)
        assert close(record["out"], record["uncond"] + s * (record["cond"] - record["uncond"]))
    assert any(inside) and not all(inside)


def test_the_schedule_plot_marks_the_band_in_flow_sigma(comfy, dits):
    tiny = family(dits, "sd3")
    model = schedule(comfy, tiny.patcher, "interval")
    plot = comfy.pack.nodes.schedule
    term = plot.guidance_stack(model).get("cfg_schedule")
    assert plot.interval_band(term, "flow") == "EDM sigma (0.28, 5.42] = flow sigma (0.219, 0.844]"
    image = plot.CFGSchedulePlot().plot(model, S0, "simple", 20, 1.0)[0]
    assert image.shape[-1] == 3 and image.std() > 0


@pytest.mark.parametrize("name", ["flux_dev", "flux_schnell"])
def test_a_guidance_distilled_model_at_cfg_one_says_it_needs_true_cfg(comfy, dits, name):
    tiny = family(dits, name)
    for patched in (dns(comfy, tiny.patcher), schedule(comfy, tiny.patcher, "linear")):
        with pytest.raises(ValueError) as error:
            ksample(comfy, tiny, patched, cfg=1.0)
        message = str(error.value)
        assert "needs true CFG" in message and ("guidance embedding" in message or "schnell" in message)
        assert "about twice the time" in message and "cfg above 1" in message
    ksample(comfy, tiny, dns(comfy, tiny.patcher), cfg=3.0)  # true CFG runs


def test_a_schedule_at_cfg_one_on_an_undistilled_model_is_an_error_not_a_no_op(comfy, dits):
    tiny = family(dits, "sd3")
    with pytest.raises(ValueError, match="gives s = 1, no guidance, at every step"):
        ksample(comfy, tiny, schedule(comfy, tiny.patcher, "linear"), cfg=1.0)


def test_loss_guidance_alone_keeps_comfyuis_cfg_one_shortcut(comfy, dits):
    tiny = family(dits, "flux_dev")
    guided = guide(comfy, tiny.patcher, colour_loss(comfy))
    assert not guided.model_options.get("disable_cfg1_optimization", False)
    assert dns(comfy, guided).model_options["disable_cfg1_optimization"]
    assert torch.isfinite(ksample(comfy, tiny, guided, cfg=1.0)).all()


@pytest.mark.parametrize("frames", [1, 3])
def test_video_latents_work_with_dns_and_schedules(comfy, dits, frames):
    tiny = dits.wan21(frames=frames)
    assert tiny.latent.ndim == 5 and tiny.latent.shape[2] == frames
    model, recorder = recorded(schedule(comfy, dns(comfy, tiny.patcher), "linear"))
    out = ksample(comfy, tiny, model)
    assert out.shape == tiny.latent.shape and torch.isfinite(out).all()
    for record in recorder.records:
        s = cfg_scale("linear", timestep_progress(tiny, record["sigma"]), S0)
        p, other = record["cond"], record["uncond"]
        assert close(record["out"], p + s * (other - p))


def colour_loss(comfy, colour="#FF2000"):
    return comfy.pack.nodes.loss_nodes.ColourTargetLoss().build(colour, 1.0)[0]


def guide(comfy, model, losses, **changes):
    node = comfy.pack.nodes.loss_guidance.LossGuidance
    settings = {
        **comfy_inprocess.default_settings(node),
        "augmentations": 0,
        "decoder": "latent preview",
        "end": 1.0,
        **changes,
    }
    return node().patch(model, losses, **settings)[0]


def preview_colour_error(comfy, model, samples, colour=(1.0, 0.125, 0.0)):
    """Distance of the result's latent-preview colour to the target, computed without the pack's code:
    ComfyUI's preview factors applied to the model-space latent (single video frames squeezed)."""
    latent_format = model.get_model_object("latent_format")
    latent = latent_format.process_in(samples.float())
    latent = latent[:, :, 0] if latent.ndim == 5 else latent
    factors = torch.tensor(latent_format.latent_rgb_factors)
    bias = torch.tensor(latent_format.latent_rgb_factors_bias or [0.0, 0.0, 0.0])
    rgb = (torch.einsum("bchw,cr->brhw", latent, factors) + bias.view(1, 3, 1, 1)) * 0.5 + 0.5
    return float((rgb.mean(dim=(2, 3)) - torch.tensor(colour)).norm(dim=1).mean())


# (family, gradient path, Polyak scale): the tiny random models overshoot above about 0.03.
LOSS_CASES = [(name, "x0 estimate", 0.01) for name in ["sd3", "flux_dev", "chroma", "qwen_image", "lumina2", "z_image"]]
LOSS_CASES += [(name, "through the denoiser", 0.003) for name in ["sd3", "qwen_image", "lumina2", "wan21"]]
LOSS_CASES += [("aura_flow", "x0 estimate", 0.01), ("aura_flow", "through the denoiser", 0.003)]
LOSS_CASES += [("cosmos_predict2", "x0 estimate", 0.003)]


@pytest.mark.parametrize("name, gradient, scale", LOSS_CASES)
def test_loss_guidance_brings_a_flow_model_closer_to_its_target(comfy, dits, name, gradient, scale):
    tiny = family(dits, name)
    plain = ksample(comfy, tiny, tiny.patcher, steps=6)
    guided = ksample(
        comfy, tiny, guide(comfy, tiny.patcher, colour_loss(comfy), scale=scale, gradient=gradient), steps=6
    )
    assert torch.isfinite(guided).all()
    assert preview_colour_error(comfy, tiny.patcher, guided) < 0.8 * preview_colour_error(comfy, tiny.patcher, plain)


def test_gradient_through_cosmos_predict2_works_or_names_the_kernel_without_backward(comfy, dits):
    """ComfyUI 0.33 runs Cosmos Predict2's q/k norm + rotary embedding in one fused comfy_kitchen kernel
    with no backward, even in training mode; older ComfyUI runs it in plain torch."""
    import importlib.util

    tiny = family(dits, "cosmos_predict2")
    guided_model = guide(comfy, tiny.patcher, colour_loss(comfy), scale=0.003, gradient="through the denoiser")
    if importlib.util.find_spec("comfy_kitchen") is not None:
        with pytest.raises(ValueError, match="fused kernel that has no backward.*Choose gradient = x0 estimate"):
            ksample(comfy, tiny, guided_model, steps=6)
        return
    plain, guided = ksample(comfy, tiny, tiny.patcher, steps=6), ksample(comfy, tiny, guided_model, steps=6)
    assert preview_colour_error(comfy, tiny.patcher, guided) < 0.8 * preview_colour_error(comfy, tiny.patcher, plain)


@pytest.mark.parametrize("name", ["flux_dev", "flux_schnell", "chroma"])
def test_gradient_through_a_flux_architecture_denoiser_is_refused_with_the_fix(comfy, dits, name):
    """ComfyUI's Flux blocks add to their activations in place: autograd cannot go back through them."""
    tiny = family(dits, name)
    with pytest.raises(ValueError, match="in place.*Choose gradient = x0 estimate"):
        guide(comfy, tiny.patcher, colour_loss(comfy), gradient="through the denoiser")


def test_an_in_place_denoiser_that_slips_through_gives_the_same_clear_error(comfy, dits):
    """The family check is a list; the autograd failure itself is turned into the same advice."""
    from guidance.loss_guidance import loss_gradient

    def in_place(x):
        y = torch.sigmoid(x)
        y.mul_(2)  # sigmoid's backward needs its output, which this overwrites
        return y

    with pytest.raises(ValueError, match="updates its activations in place"):
        loss_gradient(lambda x0: x0.pow(2).sum(dim=(1, 2, 3)), torch.ones(1, 1, 2, 2), in_place)


def test_loss_guidance_with_time_travel_and_fixed_steps_runs_on_a_flow_model(comfy, dits):
    tiny = family(dits, "sd3")
    model = guide(
        comfy,
        tiny.patcher,
        colour_loss(comfy),
        step_rule="fixed",
        scale=1000.0,
        augmentations=2,
        time_travel_repeats=3,
        time_travel_start=0.0,
        time_travel_end=1.0,
    )
    plain = ksample(comfy, tiny, tiny.patcher, steps=4)
    guided = ksample(comfy, tiny, model, steps=4)
    assert torch.isfinite(guided).all()
    assert preview_colour_error(comfy, tiny.patcher, guided) < preview_colour_error(comfy, tiny.patcher, plain)


def test_loss_guidance_on_a_single_frame_video_latent_runs_and_on_frames_is_refused(comfy, dits):
    single = dits.wan21(frames=1)
    guided = ksample(comfy, single, guide(comfy, single.patcher, colour_loss(comfy)))
    assert guided.shape == single.latent.shape and torch.isfinite(guided).all()
    video = dits.wan21(frames=3)
    with pytest.raises(ValueError, match="a video latent with 3 frames .* works on images"):
        ksample(comfy, video, guide(comfy, video.patcher, colour_loss(comfy)))


def chained(comfy, tiny, model, positive, negative, latent, split):
    """Two KSamplerAdvanced passes (steps [0, split) with leftover noise, then [split, end)), or one."""
    advanced = comfy.nodes.KSamplerAdvanced()
    common = dict(noise_seed=5, steps=6, cfg=S0, sampler_name="euler", scheduler="simple")
    common.update(positive=positive, negative=negative)
    if split is None:
        run = advanced.sample(model, "enable", **common, latent_image=latent, start_at_step=0, end_at_step=6,
                              return_with_leftover_noise="disable")  # fmt: skip
        return run[0]["samples"]
    first = advanced.sample(model, "enable", **common, latent_image=latent, start_at_step=0, end_at_step=split,
                            return_with_leftover_noise="enable")[0]  # fmt: skip
    second = advanced.sample(model, "disable", **common, latent_image=first, start_at_step=split, end_at_step=6,
                             return_with_leftover_noise="disable")  # fmt: skip
    return second[0]["samples"]


@pytest.mark.parametrize("name", ["sd3", "flux_dev"])
def test_schedule_scfg_dns_and_loss_guidance_compose_over_two_chained_passes(comfy, dits, name):
    tiny = family(dits, name)
    with_scfg = comfy.pack.nodes.scfg.SCFG().patch(
        schedule(comfy, tiny.patcher, "cosine"), **widget_defaults(comfy.pack.nodes.scfg.SCFG)
    )[0]
    stacked = guide(comfy, dns(comfy, with_scfg, 2.0), colour_loss(comfy), scale=0.003)
    stack = comfy.pack.nodes.patching.guidance_stack(stacked)
    assert {"cfg_schedule", "scfg", "dns", "dns_scale", "loss guidance"} <= set(stack.names())
    batch = {"samples": tiny.latent.repeat(2, *([1] * (tiny.latent.ndim - 1)))}
    assert batch["samples"].shape[-1] != batch["samples"].shape[-2]  # non-square
    positive, negative = tiny.positive, tiny.negative
    single = chained(comfy, tiny, stacked, positive, negative, batch, None)
    split = chained(comfy, tiny, stacked, positive, negative, batch, 3)
    plain = chained(comfy, tiny, tiny.patcher, positive, negative, batch, None)
    assert single.shape == batch["samples"].shape and torch.isfinite(split).all()
    assert torch.allclose(split, single, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(single, plain, atol=1e-2)
