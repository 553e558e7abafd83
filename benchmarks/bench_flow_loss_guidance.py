"""Time and peak memory of Loss Guidance vs plain CFG on a mid-size Flux-architecture model, interleaved in one run.

    . "$(bash scripts/provision.sh)" && python benchmarks/bench_flow_loss_guidance.py [--rounds 3] [--json PATH]

On a GPU, closer to a real Flux (about 2.5 B parameters; FLUX.1 itself is --depth 19 --single-depth 38):

    python benchmarks/bench_flow_loss_guidance.py --hidden 3072 --heads 24 --depth 4 --single-depth 8 \\
        --side 128 --text-tokens 512 --steps 20 --rounds 5 --dtype bf16

The model is ComfyUI's own Flux class (comfy.supported_models.Flux: Flux's latent format and sampling,
shift 1.15) with random weights, built in memory at the given size, on CUDA when there is one (else the
CPU). The default (hidden 1024, 8 heads, 2 double-stream and 4 single-stream blocks, 148 M parameters,
a 48x48 latent = 384 px, 128 text tokens) runs the whole benchmark in about 2 minutes on 2 idle CPU
cores (4 to 5 where other processes share them). guidance_embed is off (a true-CFG model, as ComfyUI
detects Schnell-type checkpoints), so cfg > 1 runs a negative pass; conditioning is random text
tokens and a pooled vector. Every variant samples the same seed with euler / simple.

Variants: plain CFG, and Loss Guidance with the x0-estimate gradient, the latent-preview decoder and a
colour-target loss at bench_loss_guidance's settings (scale 0.01, guiding at every step: end 1; the
rest the node's defaults: Polyak step, no time travel), with the node's default 10 augmentations and
with 0. Each variant is warmed up once (one step); rounds then run the variants in a shuffled order.
ratio: median time per run over plain CFG's in the same run (target <= 1.3x); min ratio: the same for
the fastest runs, the least disturbed where other processes share the CPU; hook ratio: the run's time
over the run without the time spent in the pack's post-CFG hook (timed in the same run), the
guidance's own cost, which noise between runs does not reach. Peak memory is the CUDA allocator's
peak above the allocation before the run, or on CPU the process RSS peak above the level before the
run (sampled every 5 ms, with glibc's mmap threshold fixed so that freed tensors leave the RSS: the
figure is the run's working memory, and the ratio is meaningful). The JSON result goes to --json.
"""

import argparse
import ctypes
import dataclasses
import importlib
import json
import os
import random
import statistics
import sys
import time

PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(PACK_DIR, "scripts"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import comfy_inprocess  # noqa: E402
import torch  # noqa: E402
from bench_loss_guidance import PeakMemory, patched  # noqa: E402

CFG = 3.5
SAMPLER, SCHEDULER, SEED = "euler", "simple", 0
LATENT_CHANNELS, VEC_IN_DIM, GUIDANCE = 16, 768, 3.5
TARGET_RATIO = 1.3
M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
GUIDED = dict(gradient="x0 estimate", decoder="latent preview")
VARIANTS = {
    "loss guidance, 10 augmentations": dict(GUIDED, augmentations=10),
    "loss guidance, 0 augmentations": dict(GUIDED, augmentations=0),
}


def boot(device_choice: str):
    """(runtime, device). comfy_inprocess.boot puts ComfyUI on the CPU; for CUDA, model_management is
    imported first with cpu off (it picks its device once, at import), and boot then keeps that device."""
    if device_choice == "cuda" or (device_choice == "auto" and torch.cuda.is_available()):
        sys.path.insert(0, comfy_inprocess.comfy_dir())
        import comfy.model_management  # noqa: F401
    runtime = comfy_inprocess.boot(progress_bars=False)
    import comfy.model_management

    device = comfy.model_management.get_torch_device()
    if device.type == "cpu":
        return_freed_memory_to_the_os()
    return runtime, device


def return_freed_memory_to_the_os() -> None:
    """Large allocations through mmap from now on, so that freed tensors leave the RSS (glibc raises its
    mmap threshold after frees otherwise, and RSS keeps every earlier peak)."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 128 * 1024)
    except (OSError, AttributeError):
        pass


def device_label(device) -> str:
    if device.type == "cuda":
        return f"CUDA: {torch.cuda.get_device_name(device)}"
    return f"CPU ({torch.get_num_threads()} threads)"


def flux_unet_config(args) -> dict:
    """A Flux unet_config (comfy/ldm/flux/model.py FluxParams) at the benchmark's size."""
    import comfy.ldm.flux.model

    head = args.hidden // args.heads
    rope = head * 7 // 16  # FLUX.1's [16, 56, 56] split of its 128 head channels
    config = dict(
        image_model="flux",
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        vec_in_dim=VEC_IN_DIM,
        context_in_dim=args.context_dim,
        hidden_size=args.hidden,
        mlp_ratio=4.0,
        num_heads=args.heads,
        depth=args.depth,
        depth_single_blocks=args.single_depth,
        axes_dim=[head - 2 * rope, rope, rope],
        theta=10000,
        patch_size=2,
        qkv_bias=True,
        guidance_embed=args.guidance_embed,
    )
    if "txt_ids_dims" in {field.name for field in dataclasses.fields(comfy.ldm.flux.model.FluxParams)}:
        config["txt_ids_dims"] = []  # newer ComfyUI: FLUX.1 gives text tokens no position ids
    return config


def flux_model(args, device):
    """ComfyUI's Flux model with random weights, in a ModelPatcher for `device`."""
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models
    import tiny_models

    config = comfy.supported_models.Flux(flux_unet_config(args))
    config.set_inference_dtype(DTYPES[args.dtype], None)
    model = config.get_model({})
    tiny_models.randomise_(model, torch.Generator().manual_seed(0))
    offload = comfy.model_management.unet_offload_device()
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=offload)


def conditioning(args, generator: torch.Generator) -> list:
    """Random T5-like text tokens and a CLIP-like pooled vector (and Flux dev's guidance, if embedded)."""
    extra = {"pooled_output": torch.randn(1, VEC_IN_DIM, generator=generator)}
    if args.guidance_embed:
        extra["guidance"] = GUIDANCE
    return [[torch.randn(1, args.text_tokens, args.context_dim, generator=generator), extra]]


class HookTimer:
    """A clone of a MODEL whose post-CFG functions (the pack's guidance hook) are timed: the seconds spent
    in them, a within-run cost that other processes on the CPU inflate alike for the model's passes."""

    def __init__(self, model, device):
        self.seconds, self.device = 0.0, device
        self.model = model.clone()
        options = self.model.model_options
        options["sampler_post_cfg_function"] = [self.timed(fn) for fn in options["sampler_post_cfg_function"]]

    def timed(self, function):
        def call(args):
            self.synchronise()
            start = time.perf_counter()
            try:
                return function(args)
            finally:
                self.synchronise()
                self.seconds += time.perf_counter() - start

        return call

    def synchronise(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()


def run(runtime, model, positive, negative, latent, steps, device) -> tuple:
    """(seconds, peak bytes, samples) of one KSampler run."""
    with PeakMemory(device) as memory, torch.inference_mode():
        start = time.perf_counter()
        out = runtime.nodes.common_ksampler(
            model, SEED, steps, CFG, SAMPLER, SCHEDULER, positive, negative, {"samples": latent}
        )
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    return seconds, memory.peak, out[0]["samples"]


def compare(runtime, variants: dict, positive, negative, latent, steps, rounds, device) -> dict:
    """Per variant: the run times, the peak memory over its runs, and its first samples."""
    results = {key: dict(seconds=[], hook_seconds=[], peak=0, samples=None) for key in variants}
    for key, model in variants.items():
        run(runtime, model, positive, negative, latent, 1, device)  # warm-up
    order = random.Random(0)
    for _ in range(rounds):
        for key in order.sample(list(variants), len(variants)):
            model, timer = variants[key], None
            if model.model_options.get("sampler_post_cfg_function"):
                timer = HookTimer(model, device)
                model = timer.model
            seconds, peak, samples = run(runtime, model, positive, negative, latent, steps, device)
            result = results[key]
            result["seconds"].append(seconds)
            result["hook_seconds"].append(timer.seconds if timer else 0.0)
            result["peak"] = max(result["peak"], peak)
            result["samples"] = samples if result["samples"] is None else result["samples"]
    return results


def summarise(results: dict, steps: int) -> dict:
    plain = results["plain CFG"]
    plain_time, plain_best = statistics.median(plain["seconds"]), min(plain["seconds"])
    summary = {}
    for key, result in results.items():
        seconds = statistics.median(result["seconds"])
        hook_share = statistics.median(h / s for h, s in zip(result["hook_seconds"], result["seconds"]))
        summary[key] = dict(
            seconds_per_run=seconds,
            seconds_per_step=seconds / steps,
            runs=result["seconds"],
            time_ratio=seconds / plain_time,
            best_ratio=min(result["seconds"]) / plain_best,  # fastest runs: the least disturbed on a shared CPU
            hook_seconds_per_step=statistics.median(result["hook_seconds"]) / steps,
            hook_share=hook_share,
            # The ratio if the model's own passes took the same time as plain CFG's: 1 / (1 - hook share).
            hook_ratio=1 / (1 - hook_share),
            peak_bytes=result["peak"],
            # No ratio where plain CFG's peak is below 1 MiB (RSS that did not move).
            peak_ratio=result["peak"] / plain["peak"] if plain["peak"] > 2**20 else None,
            mean_abs_change=float((result["samples"] - plain["samples"]).abs().mean()),
        )
    return summary


def report(title: str, summary: dict) -> None:
    print(f"\n{title}:")
    print(
        f"  {'variant':<32} {'s/run':>7} {'s/step':>7} {'ratio':>6} {'min ratio':>9} {'hook s/step':>11} "
        f"{'hook ratio':>10} {'peak MiB':>8} {'peak ratio':>10}"
    )
    for key, row in summary.items():
        peak_ratio = f"{row['peak_ratio']:9.2f}x" if row["peak_ratio"] is not None else f"{'-':>10}"
        print(
            f"  {key:<32} {row['seconds_per_run']:7.2f} {row['seconds_per_step']:7.3f} {row['time_ratio']:5.2f}x "
            f"{row['best_ratio']:8.2f}x {row['hook_seconds_per_step']:11.3f} {row['hook_ratio']:9.3f}x "
            f"{row['peak_bytes'] / 2**20:8.1f} {peak_ratio}"
        )
    guided = {key: row for key, row in summary.items() if key != "plain CFG"}
    changes = ", ".join(f"{row['mean_abs_change']:.3g}" for row in guided.values())
    print(f"  mean |guided - plain| of the sampled latent (the guidance acted): {changes}")
    worst = max(row["time_ratio"] for row in guided.values())
    verdict = "met" if worst <= TARGET_RATIO else "NOT met"
    print(f"  target guided / plain <= {TARGET_RATIO}x: {verdict} (worst median ratio {worst:.2f}x)")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=1024, help="hidden size")
    parser.add_argument("--heads", type=int, default=8, help="attention heads (head size a multiple of 16)")
    parser.add_argument("--depth", type=int, default=2, help="double-stream blocks")
    parser.add_argument("--single-depth", type=int, default=4, help="single-stream blocks")
    parser.add_argument("--context-dim", type=int, default=4096, help="text token size (T5-XXL: 4096)")
    parser.add_argument("--text-tokens", type=int, default=128)
    parser.add_argument("--side", type=int, default=48, help="latent side (x8 = image side in px)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dtype", choices=list(DTYPES), default="fp32")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--guidance-embed", action="store_true", help="a Flux-dev-type model (guidance input)")
    parser.add_argument("--json", help="result file (default test-artifacts/bench_flow_loss_guidance-<ComfyUI>.json)")
    args = parser.parse_args()
    if args.hidden % args.heads or (args.hidden // args.heads) % 16:
        parser.error("--hidden / --heads must be a whole multiple of 16 (the rotary split of the head)")
    return args


def main() -> None:
    args = parse_args()
    runtime, device = boot(args.device)
    version = importlib.import_module("comfyui_version").__version__
    model = flux_model(args, device)
    parameters = sum(p.numel() for p in model.model.diffusion_model.parameters())
    generator = torch.Generator().manual_seed(1)
    positive, negative = conditioning(args, generator), conditioning(args, generator)
    latent = torch.zeros(1, LATENT_CHANNELS, args.side, args.side)
    variants = {"plain CFG": model}
    variants.update({key: patched(runtime, model, None, options) for key, options in VARIANTS.items()})
    label = device_label(device)
    print(
        f"ComfyUI {version}, device {label}, cfg {CFG}, {SAMPLER} / {SCHEDULER}, {args.steps} steps, {args.rounds} rounds"
    )
    print("loss guidance: colour-target loss, gradient x0 estimate, decoder latent preview, scale 0.01, end 1")
    results = compare(runtime, variants, positive, negative, latent, args.steps, args.rounds, device)
    summary = summarise(results, args.steps)
    title = (
        f"Flux-architecture model ({label}), {parameters / 1e6:.0f} M parameters {args.dtype} (hidden {args.hidden}, "
        f"{args.heads} heads, {args.depth} double + {args.single_depth} single blocks), latent "
        f"{LATENT_CHANNELS}x{args.side}x{args.side} ({args.side * 8} px), {args.text_tokens} text tokens"
    )
    report(title, summary)
    path = args.json or os.path.join(PACK_DIR, "test-artifacts", f"bench_flow_loss_guidance-comfyui-{version}.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    setup = dict(
        comfyui=version,
        torch=torch.__version__,
        device=label,
        parameters=parameters,
        unet_config=flux_unet_config(args),
        dtype=args.dtype,
        latent=[1, LATENT_CHANNELS, args.side, args.side],
        text_tokens=args.text_tokens,
        cfg=CFG,
        sampler=SAMPLER,
        scheduler=SCHEDULER,
        steps=args.steps,
        rounds=args.rounds,
        seed=SEED,
        loss_guidance=dict(GUIDED, loss="colour target", scale=0.01, end=1.0, augmentations=[10, 0]),
        target_ratio=TARGET_RATIO,
    )
    with open(path, "w") as handle:
        json.dump(dict(setup=setup, variants=summary), handle, indent=2)
    print(f"\nresult: {path}")


if __name__ == "__main__":
    main()
