"""Input specs shared by the nodes that repeat a sampler's settings (one place for their limits)."""

import comfy.samplers


def seed_input(tooltip: str, control: bool = False) -> tuple:
    options = {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "tooltip": tooltip}
    return ("INT", {**options, "control_after_generate": True} if control else options)


def steps_input(tooltip: str) -> tuple:
    return ("INT", {"default": 20, "min": 1, "max": 10000, "tooltip": tooltip})


def cfg_input(tooltip: str, minimum: float = 0.0) -> tuple:
    return ("FLOAT", {"default": 7.0, "min": minimum, "max": 100.0, "step": 0.1, "tooltip": tooltip})


def sampler_input(tooltip: str) -> tuple:
    return (comfy.samplers.KSampler.SAMPLERS, {"tooltip": tooltip})


def scheduler_input(tooltip: str) -> tuple:
    return (comfy.samplers.KSampler.SCHEDULERS, {"tooltip": tooltip})
