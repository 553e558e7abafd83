"""S-CFG in real ComfyUI sampling: tiny SD1.5 checkpoint and a small SDXL UNet built in memory."""

import comfy_api_helpers as helpers
import pytest
import torch

S0 = 7.0


def scfg(comfy, model, **changes):
    node = comfy.pack.nodes.scfg.SCFG
    return node().patch(model, **{**helpers.widget_defaults(node), **changes})[0]


def separate_passes(model):
    """A clone on which ComfyUI evaluates cond and uncond in two UNet calls (a real sampler hook)."""
    import comfy.samplers

    clone = model.clone()

    def one_at_a_time(args):
        outputs = []
        for index in range(len(args["conds"])):
            only = [c if i == index else None for i, c in enumerate(args["conds"])]  # keeps cond / uncond roles
            out = comfy.samplers.calc_cond_batch(
                args["model"], only, args["input"], args["sigma"], args["model_options"]
            )
            outputs.append(out[index])
        return outputs

    clone.model_options["sampler_calc_cond_batch_function"] = one_at_a_time
    return clone


def test_scfg_samples_and_differs_from_plain_cfg(comfy, tiny):
    out = helpers.ksample(comfy, tiny, scfg(comfy, tiny.model))
    assert torch.isfinite(out).all()
    assert not torch.allclose(out, helpers.ksample(comfy, tiny, tiny.model), atol=1e-2)


def test_scfg_with_rate_forced_to_one_equals_plain_cfg(comfy, tiny):
    forced = helpers.ksample(comfy, tiny, scfg(comfy, tiny.model, rate_min=1.0, rate_max=1.0))
    assert helpers.same_sample(forced, helpers.ksample(comfy, tiny, tiny.model))


def same_guidance(a, b, plain) -> bool:
    """a and b agree to within 1% of S-CFG's own effect (|a - plain|). Float rounding of a different
    batch layout can flip the argmax token of a few near-tie pixels of a random model."""
    return (a - b).abs().max() < 0.01 * (a - plain).abs().max()


def test_batched_and_separate_cond_uncond_passes_agree(comfy, tiny):
    """Two steps: later steps of this random model amplify rounding differences chaotically."""
    model = scfg(comfy, tiny.model)
    batched = helpers.ksample(comfy, tiny, model, steps=2)
    separate = helpers.ksample(comfy, tiny, separate_passes(model), steps=2)
    assert same_guidance(batched, separate, helpers.ksample(comfy, tiny, tiny.model, steps=2))


def test_batch_of_two_non_square_latents(comfy, tiny):
    latent = torch.zeros(2, 4, 16, 24)
    out = helpers.ksample(comfy, tiny, scfg(comfy, tiny.model), latent=latent)
    assert out.shape == (2, 4, 16, 24) and torch.isfinite(out).all()


def test_nothing_is_retained_after_sampling(comfy, tiny):
    model = scfg(comfy, tiny.model)
    helpers.ksample(comfy, tiny, model)
    assert "dnp_guidance_run" not in model.model_options
    assert "dnp_guidance_run" not in model.model_options.get("transformer_options", {})
    assert "patches_replace" not in tiny.model.model_options.get("transformer_options", {})


def test_cfg_one_is_a_clear_error(comfy, tiny):
    with pytest.raises(ValueError, match="Set the sampler's cfg above 1"):
        helpers.ksample(comfy, tiny, scfg(comfy, tiny.model), cfg=1.0)


def test_scfg_stacks_with_schedule_and_dns_in_any_order(comfy, tiny, empty):
    schedule = comfy.pack.nodes.schedule.CFGSchedule().patch
    dns = comfy.pack.nodes.dns.DNSGuidance().patch

    def chain(model, order):
        for step in order:
            model = {
                "schedule": lambda m: schedule(m, "cosine", "sigma position", 2.0, 2.0, 0.28, 5.42)[0],
                "scfg": lambda m: scfg(comfy, m),
                "dns": lambda m: dns(m, 0.0)[0],
            }[step](model)
        return model

    a = helpers.ksample(
        comfy, tiny, chain(tiny.model, ["schedule", "scfg", "dns"]), positive=tiny.positive, negative=empty
    )
    b = helpers.ksample(
        comfy, tiny, chain(tiny.model, ["dns", "scfg", "schedule"]), positive=tiny.positive, negative=empty
    )
    assert torch.isfinite(a).all() and helpers.same_sample(a, b)


def test_explicit_layer_choice_missing_on_this_unet_is_explained(comfy, tiny):
    with pytest.raises(ValueError, match="no attention maps at 1/8 of the latent side; it has 1/1, 1/2"):
        scfg(comfy, tiny.model, layers="1/8")


def test_sdxl_unet_samples_with_scfg(comfy):
    import tiny_models

    model, positive, negative = tiny_models.sdxl()
    layers = comfy.pack.nodes.attention_capture.select_layers(
        comfy.pack.nodes.attention_capture.attention_layers(model.get_model_object("diffusion_model")),
        "auto (1/4 + 1/8)",
    )
    assert {ratio for *_, ratio in layers} == {4}

    def sample(m, latent=None):
        lat = {"samples": torch.zeros(1, 4, 16, 16) if latent is None else latent}
        return comfy.nodes.common_ksampler(m, 1, 3, S0, "euler", "normal", positive, negative, lat)[0]["samples"]

    plain, guided = sample(model), sample(scfg(comfy, model))
    assert torch.isfinite(guided).all() and not torch.allclose(plain, guided, atol=1e-2)
    assert helpers.same_sample(sample(scfg(comfy, model, rate_min=1.0, rate_max=1.0)), plain)
    assert same_guidance(sample(separate_passes(scfg(comfy, model))), guided, plain)


def test_sd2_v_prediction_unet_samples_with_scfg(comfy):
    import tiny_models
    from comfy.model_sampling import V_PREDICTION

    model, positive, negative = tiny_models.sd2_v()
    assert isinstance(model.get_model_object("model_sampling"), V_PREDICTION)

    def sample(m):
        latent = {"samples": torch.zeros(1, 4, 16, 16)}
        return comfy.nodes.common_ksampler(m, 1, 3, S0, "euler", "normal", positive, negative, latent)[0]["samples"]

    plain, guided = sample(model), sample(scfg(comfy, model))
    assert torch.isfinite(guided).all() and not torch.allclose(plain, guided, atol=1e-2)
    assert helpers.same_sample(sample(scfg(comfy, model, rate_min=1.0, rate_max=1.0)), plain)


def test_a_family_scfg_cannot_read_is_refused_naming_the_supported_ones(comfy):
    import tiny_dits

    with pytest.raises(ValueError, match=r"UNets \(SD1.x, SD2.x, SDXL\) and of these DiTs: SD3 / SD3.5, Flux.*PixArt"):
        scfg(comfy, tiny_dits.pixart_sigma().patcher)


def test_validate_inputs(comfy):
    node = comfy.pack.nodes.scfg.SCFG
    assert "rate_min" in node.VALIDATE_INPUTS(rate_min=2.0, rate_max=1.0, scale_cap=15.0, start=0.0, end=1.0)
    assert "start" in node.VALIDATE_INPUTS(rate_min=0.8, rate_max=3.0, scale_cap=15.0, start=0.9, end=0.1)
    assert node.VALIDATE_INPUTS(rate_min=0.8, rate_max=3.0, scale_cap=15.0, start=0.0, end=1.0) is True


def test_regions_node_draws_regions_rate_and_legend(comfy, tiny):
    node = comfy.pack.nodes.scfg.SCFGRegions()
    latent = {"samples": torch.zeros(1, 4, 16, 24)}
    image = node.show(
        scfg(comfy, tiny.model),
        tiny.positive,
        tiny.negative,
        latent,
        1,
        4,
        S0,
        "euler",
        "normal",
        2,
        tiny.clip,
        "a photo of a red fox in the snow",
    )[0]
    assert image.ndim == 4 and image.shape[0] == 1 and image.shape[-1] == 3
    assert image.shape[2] > image.shape[1]  # two panels side by side
    assert 0.0 <= image.min() and image.max() <= 1.0 and image.std() > 0.05


def test_regions_node_explains_a_model_without_scfg(comfy, tiny):
    latent = {"samples": torch.zeros(1, 4, 16, 16)}
    with pytest.raises(ValueError, match="Connect the MODEL output of an S-CFG node"):
        comfy.pack.nodes.scfg.SCFGRegions().show(
            tiny.model, tiny.positive, tiny.negative, latent, 1, 4, S0, "euler", "normal", 2
        )


def test_token_labels_follow_the_clip_tokenizer(comfy, tiny):
    labels = comfy.pack.nodes.scfg.token_labels(tiny.clip, "a red fox")
    assert [labels[i] for i in range(5)] == ["<start>", "a", "red", "fox", "<end>"]
    assert labels[76] == "<end>"


def test_map_size_without_activations_shape_follows_the_downsampling(comfy):
    map_size = comfy.pack.nodes.attention_capture.map_size
    assert map_size({"activations_shape": [2, 320, 12, 9]}, 4) == (12, 9)
    assert map_size({"original_shape": [2, 4, 45, 30]}, 4) == (12, 8)  # 45 -> 23 -> 12, 30 -> 15 -> 8
