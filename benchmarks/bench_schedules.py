"""Per-step sampling time of plain CFG vs every CFG schedule, interleaved in one run.

    . "$(bash scripts/provision.sh)" && python benchmarks/bench_schedules.py [--size 32] [--steps 8] [--rounds 5]

The tiny random SD1.5 model on this machine's device (CPU here). Each round runs every variant
once in a fresh order, so drift hits all of them alike; the ratio is median(variant) / median(plain).
"""

import argparse
import os
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))

import comfy_inprocess  # noqa: E402
import torch  # noqa: E402

S0 = 7.0


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=32, help="latent side (image side / 8)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    return parser.parse_args()


def variants(comfy, model) -> dict:
    node = comfy.pack.nodes.schedule.CFGSchedule()
    schedules = comfy.pack.guidance.schedules
    out = {"plain CFG": model}
    for kind in schedules.KINDS:
        out[kind] = node.patch(model, kind, "sigma position", 2.0, 2.0, 0.28, 5.42)[0]
    return out


def sample_seconds(comfy, tiny, model, size, steps) -> float:
    latent = {"samples": torch.zeros(1, 4, size, size)}
    start = time.perf_counter()
    comfy.nodes.common_ksampler(model, 1, steps, S0, "euler", "normal", tiny.positive, tiny.negative, latent)
    return time.perf_counter() - start


def hook_seconds(runtime, tiny, model, size, calls=200) -> float:
    """Seconds per call of the pack's post-CFG hook alone, on arguments shaped like ComfyUI's."""
    patching = runtime.pack.nodes.patching
    shape = (1, 4, size, size)
    import comfy.samplers

    sigmas = comfy.samplers.calculate_sigmas(tiny.model.get_model_object("model_sampling"), "normal", 8)
    args = {
        "denoised": torch.randn(shape),
        "cond_denoised": torch.randn(shape),
        "uncond_denoised": torch.randn(shape),
        "input": torch.randn(shape),
        "sigma": sigmas[3:4],
        "cond_scale": S0,
        "model": tiny.model.model,
        "model_options": {**model.model_options, "transformer_options": {"sample_sigmas": sigmas}},
    }
    patching.guidance_hook(args)
    start = time.perf_counter()
    for _ in range(calls):
        patching.guidance_hook(args)
    return (time.perf_counter() - start) / calls


def main() -> None:
    args = parse_args()
    runtime = comfy_inprocess.boot(progress_bars=False)
    import comfy.model_management

    tiny = comfy_inprocess.load_tiny(runtime)
    models = variants(runtime, tiny.model)
    times = {name: [] for name in models}
    sample_seconds(runtime, tiny, tiny.model, args.size, args.steps)  # warm-up: load weights
    order = list(models)
    for _ in range(args.rounds):
        random.shuffle(order)
        for name in order:
            times[name].append(sample_seconds(runtime, tiny, models[name], args.size, args.steps) / args.steps)
    base = statistics.median(times["plain CFG"])
    device = comfy.model_management.get_torch_device()
    print(f"device {device}, latent {args.size}x{args.size}, {args.steps} euler steps, {args.rounds} rounds, cfg {S0}")
    print(f"{'variant':<14} {'median s/step':>14} {'ratio vs plain':>15}")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"{name:<14} {median:>14.4f} {median / base:>14.3f}x")
    hook = hook_seconds(runtime, tiny, models["cosine"], args.size)
    print(f"the guidance hook alone (cosine): {hook * 1e3:.3f} ms per step = {100 * hook / base:.3f}% of a plain step")


if __name__ == "__main__":
    main()
