"""Sampling helpers for the in-process tests (real ComfyUI calls, tiny latents)."""

import torch

SIZE = 16  # latent side: 128 px images
S0 = 7.0
STEPS = 4


def widget_defaults(node_cls) -> dict:
    """The default of every widget input of a node (its INPUT_TYPES), as a user who changes nothing runs it."""
    required = node_cls.INPUT_TYPES()["required"]
    return {name: spec[1]["default"] for name, spec in required.items() if len(spec) > 1 and "default" in spec[1]}


def latent(samples=None):
    return {"samples": torch.zeros(1, 4, SIZE, SIZE) if samples is None else samples}


def ksample(
    comfy,
    tiny,
    model,
    cfg=S0,
    steps=STEPS,
    sampler="euler",
    scheduler="normal",
    seed=1,
    positive=None,
    negative=None,
    latent=None,
):
    positive = tiny.positive if positive is None else positive
    negative = tiny.negative if negative is None else negative
    return comfy.nodes.common_ksampler(
        model, seed, steps, cfg, sampler, scheduler, positive, negative, globals()["latent"](latent)
    )[0]["samples"]


def ksample_advanced(comfy, tiny, model, steps, start, end, cfg=S0, seed=1):
    return comfy.nodes.KSamplerAdvanced().sample(
        model,
        "enable",
        seed,
        steps,
        cfg,
        "euler",
        "normal",
        tiny.positive,
        tiny.negative,
        latent(),
        start,
        end,
        "disable",
    )[0]["samples"]


def custom_sample(tiny, model, cfg=S0, steps=STEPS, seed=1):
    """SamplerCustomAdvanced with CFGGuider, RandomNoise, KSamplerSelect and BasicScheduler (core nodes)."""
    from comfy_extras import nodes_custom_sampler as custom

    guider = custom.CFGGuider.execute(model, tiny.positive, tiny.negative, cfg).result[0]
    noise = custom.RandomNoise.execute(seed).result[0]
    sampler = custom.KSamplerSelect.execute("euler").result[0]
    sigmas = custom.BasicScheduler.execute(model, "normal", steps, 1.0).result[0]
    return custom.SamplerCustomAdvanced.execute(noise, guider, sampler, sigmas, latent()).result[0]["samples"]


def same_sample(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to float rounding of a different UNet batch layout (latents here reach |x| ~ 100)."""
    return torch.allclose(a, b, rtol=1e-4, atol=1e-3)


def sampler_sigmas(model, scheduler, steps):
    import comfy.samplers

    return comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler, steps)


def step_index(sigma: float, sigmas: torch.Tensor) -> int:
    return int(torch.argmin((sigmas - sigma).abs()).item())


def recording(model, records: list, offset: float = 0.0, swapped: bool = False):
    """A clone whose last post-CFG function records (sigma, effective scale) of the result it sees.

    The effective scale is the least-squares s in result - offset = uncond + s (cond - uncond)
    (cond and uncond exchanged when `swapped`, as DNS guides from the negative towards the positive).
    """
    recorder = model.clone()

    def record(args):
        cond, uncond, denoised = args["cond_denoised"], args["uncond_denoised"], args["denoised"]
        if swapped:
            cond, uncond = uncond, cond
        delta = cond - uncond
        scale = ((denoised - offset - uncond) * delta).sum() / (delta * delta).sum()
        records.append((args["sigma"][0].item(), scale.item()))
        return denoised

    recorder.set_model_sampler_post_cfg_function(record)
    return recorder


def offset_term(pack, value: float):
    """A guidance-stack term that adds a constant in x0 space (stands in for a second pack node)."""
    stack = pack.guidance.stack
    return stack.GuidanceTerm(
        "test_offset", stack.PHASE_CORRECTION, lambda state: state.edit(correction=state.correction + value), "offset"
    )
