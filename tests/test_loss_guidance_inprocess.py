"""Loss Guidance in real ComfyUI sampling on the tiny random SD1.5 checkpoint."""

import gc

import comfy_api_helpers as helpers
import comfy_inprocess
import pytest
import torch

STEPS = 8
RED = (1.0, 0.0, 0.0)


def nodes(comfy):
    return comfy.pack.nodes.loss_guidance


def loss_nodes(comfy):
    return comfy.pack.nodes.loss_nodes


def red_loss(comfy, mask=None):
    return loss_nodes(comfy).ColourTargetLoss().build("#FF0000", 1.0, mask=mask)[0]


def guide(comfy, model, losses, scale=0.03, rule="polyak", **options):
    node = nodes(comfy).LossGuidance
    settings = {
        **comfy_inprocess.default_settings(node),
        "decoder": "latent preview",
        "augmentations": 0,
        "end": 1.0,
        **options,
    }
    settings.update(scale=scale, step_rule=rule)
    return node().patch(model, losses, **settings)[0]


def colour_distance(comfy, tiny, samples, target=RED):
    """Distance of the final latent's preview colour to the target, computed without the pack's loss code."""
    latent_format = tiny.model.get_model_object("latent_format")
    factors = torch.tensor(latent_format.latent_rgb_factors)
    rgb = torch.einsum("bchw,cr->brhw", latent_format.process_in(samples), factors) * 0.5 + 0.5
    return (rgb.mean(dim=(2, 3)) - torch.tensor(target)).norm(dim=1)


def sample(comfy, tiny, model, **options):
    with torch.inference_mode():  # as ComfyUI's executor runs every node
        return helpers.ksample(comfy, tiny, model, steps=options.pop("steps", STEPS), **options)


@pytest.fixture(scope="module")
def plain(comfy, tiny):
    return sample(comfy, tiny, tiny.model)


@pytest.mark.parametrize("gradient", ["x0 estimate", "through the denoiser"])
def test_guided_sampling_ends_closer_to_the_target_than_plain(comfy, tiny, plain, gradient):
    guided = sample(comfy, tiny, guide(comfy, tiny.model, red_loss(comfy), gradient=gradient))
    assert colour_distance(comfy, tiny, guided) < 0.5 * colour_distance(comfy, tiny, plain)


def best_distance(comfy, tiny, rule, scales):
    return min(
        colour_distance(comfy, tiny, sample(comfy, tiny, guide(comfy, tiny.model, red_loss(comfy), s, rule))).item()
        for s in scales
    )


def test_polyak_reaches_a_lower_loss_than_the_fixed_step_at_equal_steps(comfy, tiny):
    """Each rule at its best scale on a decade grid (the rules' scales are not comparable)."""
    polyak = best_distance(comfy, tiny, "polyak", (0.003, 0.03, 0.3))
    fixed = best_distance(comfy, tiny, "fixed", (10.0, 100.0, 1000.0, 10000.0))
    assert polyak < fixed


def test_augmentation_runs_changes_the_result_and_repeats_with_the_seed(comfy, tiny, plain):
    model = guide(comfy, tiny.model, red_loss(comfy), augmentations=4)
    first, again = sample(comfy, tiny, model), sample(comfy, tiny, model)
    without = sample(comfy, tiny, guide(comfy, tiny.model, red_loss(comfy)))
    other_seed = sample(comfy, tiny, model, seed=2)
    assert torch.equal(first, again) and not torch.allclose(first, without, atol=1e-3)
    assert colour_distance(comfy, tiny, first) < colour_distance(comfy, tiny, plain)
    assert not torch.allclose(first, other_seed)


def test_time_travel_runs_and_changes_the_result(comfy, tiny):
    travel = dict(time_travel_repeats=3, time_travel_start=0.0, time_travel_end=1.0)
    travelled = sample(comfy, tiny, guide(comfy, tiny.model, red_loss(comfy), **travel))
    direct = sample(comfy, tiny, guide(comfy, tiny.model, red_loss(comfy)))
    assert torch.isfinite(travelled).all() and not torch.allclose(travelled, direct, atol=1e-3)


def test_evaluations_per_step_grow_with_time_travel_repeats(comfy, tiny):
    calls = []
    counted = guide(comfy, tiny.model, red_loss(comfy), time_travel_repeats=3, time_travel_start=0.0)
    counted = counted.clone()
    counted.set_model_unet_function_wrapper(
        lambda apply, args: calls.append(1) or apply(args["input"], args["timestep"], **args["c"])
    )
    sample(comfy, tiny, counted, steps=4)
    # euler, 4 steps; travel window tau 0 .. 0.7 covers steps 0, 1, 2: 2 extra evaluations each.
    assert len(calls) == 4 + 3 * 2


@pytest.mark.parametrize("sampler", ["heun", "dpmpp_2m", "euler_ancestral"])
def test_other_samplers_are_guided(comfy, tiny, sampler):
    guided = sample(comfy, tiny, guide(comfy, tiny.model, red_loss(comfy), scale=0.01), sampler=sampler, steps=4)
    plain = sample(comfy, tiny, tiny.model, sampler=sampler, steps=4)
    assert colour_distance(comfy, tiny, guided) < colour_distance(comfy, tiny, plain)


@pytest.mark.parametrize("sampler", ["heun", "dpmpp_2m", "euler_ancestral"])
def test_time_travel_runs_with_other_samplers(comfy, tiny, sampler):
    travel = dict(time_travel_repeats=2, time_travel_start=0.0, time_travel_end=1.0)
    travelled = sample(comfy, tiny, guide(comfy, tiny.model, red_loss(comfy), **travel), sampler=sampler, steps=3)
    direct = sample(comfy, tiny, guide(comfy, tiny.model, red_loss(comfy)), sampler=sampler, steps=3)
    assert torch.isfinite(travelled).all() and not torch.allclose(travelled, direct, atol=1e-3)


def test_scale_zero_is_the_unguided_sample(comfy, tiny, plain):
    assert helpers.same_sample(sample(comfy, tiny, guide(comfy, tiny.model, red_loss(comfy), scale=0.0)), plain)


def test_guidance_keeps_comfyui_inference_mode_and_returns_no_graph(comfy, tiny):
    seen = []

    def after(args):
        seen.append((torch.is_inference_mode_enabled(), torch.is_grad_enabled(), args["denoised"].grad_fn))
        return args["denoised"]

    model = guide(comfy, tiny.model, red_loss(comfy), gradient="through the denoiser").clone()
    model.set_model_sampler_post_cfg_function(after)
    sample(comfy, tiny, model, steps=3)
    assert seen and all(mode and not grad and fn is None for mode, grad, fn in seen)
    parameters = list(tiny.model.model.diffusion_model.parameters())
    assert not any(p.grad is not None for p in parameters)


def live_tensors() -> int:
    gc.collect()
    return sum(1 for item in gc.get_objects() if isinstance(item, torch.Tensor))


def test_memory_does_not_grow_with_the_number_of_guided_steps(comfy, tiny):
    model = guide(comfy, tiny.model, red_loss(comfy), gradient="through the denoiser", augmentations=2)
    sample(comfy, tiny, model, steps=2)
    after_short = live_tensors()
    sample(comfy, tiny, model, steps=6)
    assert live_tensors() <= after_short


def test_stacks_with_schedule_scfg_and_dns(comfy, tiny, empty):
    pack = comfy.pack.nodes
    stacked = pack.schedule.CFGSchedule().patch(tiny.model, "linear", "sigma position", 2.0, 2.0, 0.28, 5.42)[0]
    stacked = pack.scfg.SCFG().patch(stacked, "auto (1/4 + 1/8)", 0.8, 3.0, 15.0, 0.0, 1.0, True, "code", "uncond")[0]
    stacked = pack.dns.DNSGuidance().patch(stacked, 0.0)[0]
    guided = guide(comfy, stacked, red_loss(comfy))
    names = guided.model_options["dnp_guidance"].names()
    assert {"loss guidance"} < set(names) and len(names) >= 4
    without = sample(comfy, tiny, stacked, negative=empty)
    with_loss = sample(comfy, tiny, guided, negative=empty)
    assert torch.isfinite(with_loss).all()
    assert colour_distance(comfy, tiny, with_loss) < colour_distance(comfy, tiny, without)


def test_vae_decoder_and_reference_losses_run(comfy, tiny, plain):
    reference = torch.zeros(1, 128, 128, 3)
    reference[..., 0] = 1.0
    lg = loss_nodes(comfy)
    losses = lg.ReferenceImageLoss().build(reference, "pixel", 1.0)[0]
    losses = lg.ReferenceImageLoss().build(reference, "latent", 0.5, add_to=losses, vae=tiny.vae)[0]
    losses = lg.BrightnessTargetLoss().build(0.8, 0.5, add_to=losses)[0]
    guided = sample(comfy, tiny, guide(comfy, tiny.model, losses, decoder="vae", vae=tiny.vae), steps=3)
    assert torch.isfinite(guided).all() and not torch.allclose(guided, sample(comfy, tiny, tiny.model, steps=3))


@pytest.mark.parametrize("family", ["sdxl", "sd2_v"])
def test_other_families_are_guided(comfy, family):
    import tiny_models

    model, positive, negative = getattr(tiny_models, family)()
    latent = {"samples": torch.zeros(1, 4, 16, 16)}

    def run(m):
        return comfy.nodes.common_ksampler(m, 1, 4, 5.0, "euler", "normal", positive, negative, latent)[0]["samples"]

    guided = run(guide(comfy, model, red_loss(comfy)))
    assert torch.isfinite(guided).all() and not torch.allclose(guided, run(model), atol=1e-3)


def test_vae_decoder_without_a_vae_is_refused_by_name(comfy, tiny):
    with pytest.raises(ValueError, match="need the vae input"):
        guide(comfy, tiny.model, red_loss(comfy), decoder="vae")


def test_empty_losses_are_refused(comfy, tiny):
    with pytest.raises(ValueError, match="losses is empty"):
        guide(comfy, tiny.model, ())


def test_mask_of_another_aspect_ratio_is_refused_before_sampling(comfy, tiny):
    model = guide(comfy, tiny.model, red_loss(comfy, mask=torch.ones(1, 64, 128)))
    with pytest.raises(ValueError, match="mask is 128x64 px but the image being generated is 128x128 px"):
        sample(comfy, tiny, model)


def test_huge_scale_producing_nan_is_a_clear_error(comfy, tiny):
    model = guide(comfy, tiny.model, red_loss(comfy), scale=1e30, rule="fixed")
    with pytest.raises(ValueError, match="NaN or infinite.*loss guidance scale"):
        sample(comfy, tiny, model)


def test_runaway_scale_is_judged_against_the_unguided_result(comfy, tiny, plain):
    """Polyak at scale 1000 stays finite but far beyond what the model gives without the term."""
    model = guide(comfy, tiny.model, red_loss(comfy), scale=1000.0)
    with pytest.raises(ValueError, match=r"diverged: the result reached [\d.e+]+ times .* loss guidance scale"):
        sample(comfy, tiny, model)


def test_strong_but_sane_guidance_is_not_called_divergent(comfy, tiny, plain):
    guided = sample(comfy, tiny, guide(comfy, tiny.model, red_loss(comfy), scale=0.3))
    assert torch.isfinite(guided).all() and not helpers.same_sample(guided, plain)


def test_defaults_are_the_node_inputs_defaults(comfy):
    defaults = comfy_inprocess.default_settings(nodes(comfy).LossGuidance)
    assert defaults["step_rule"] == "polyak" and defaults["gradient"] == "x0 estimate"
    assert defaults["augmentations"] == 10 and defaults["time_travel_repeats"] == 1 and defaults["end"] == 0.8


def test_hex_colour_is_parsed_and_bad_colours_are_refused(comfy):
    assert loss_nodes(comfy).parse_hex_colour("#FF8000") == (1.0, 128 / 255, 0.0)
    with pytest.raises(ValueError, match="hex colour like #FF8800"):
        loss_nodes(comfy).parse_hex_colour("orange")
