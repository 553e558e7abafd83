"""Time and peak memory of S-CFG vs plain CFG on a full-size SD3-Medium-architecture MMDiT, in one run.

    . "$(bash scripts/provision.sh)" && python benchmarks/bench_scfg_dit.py [--side 64] [--steps 2] [--rounds 1]

The model is ComfyUI's own SD3 class (comfy.supported_models.SD3: MMDiT, depth 24, hidden 1536, 24
heads, 2.0 B parameters in the joint blocks and embedders; SD3 Medium's layout) with random weights,
built in memory, on CUDA when there is one (else the CPU). Conditioning: 154 random text tokens of
width 4096 (SD3's CLIP-L/G 77 + T5 77) and a 2048-wide pooled vector; cfg 3.5, euler / simple (bench_flow_loss_guidance's run). --side
is the latent side (64 = 512 px: 1024 image tokens; 128 = 1024 px: 4096 tokens, read pooled to 1024).

Variants: plain CFG and S-CFG with the node's defaults (layers auto: SD3's blocks 8-11). Each is
warmed up once (one step, at --warm-up-side if given: a 1024 px step takes minutes on a CPU); rounds
then run them in a shuffled order. Per variant: the median time per
run and its ratio to plain CFG's; S-CFG's own work per step, timed inside the run: the attention
capture (reading the probabilities at the chosen blocks, and processing them) plus the pack's
post-CFG hook (the rate and the combination), as a share of a plain step; and the peak memory (the
CUDA allocator's peak, or on CPU the RSS peak, above the level before the run; see
bench_flow_loss_guidance). The JSON result goes to --json.
"""

import argparse
import json
import os
import random
import statistics
import sys
import time

PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(PACK_DIR, "scripts"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from bench_flow_loss_guidance import DTYPES, HookTimer, boot, device_label, run  # noqa: E402

TEXT_TOKENS, CONTEXT_DIM, POOLED_DIM = 154, 4096, 2048
GOALS = dict(own_share=0.03, time_ratio=1.10)


def sd3_medium(depth: int, dtype, device):
    """ComfyUI's SD3 model at SD3 Medium's size (hidden = 64 * depth) with random weights."""
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models
    import tiny_models

    hidden = 64 * depth
    unet = dict(
        in_channels=16,
        patch_size=2,
        depth=depth,
        pos_embed_max_size=192,
        num_patches=192 * 192,
        adm_in_channels=POOLED_DIM,
        pos_embed_scaling_factor=None,
        context_embedder_config={
            "target": "torch.nn.Linear",
            "params": {"in_features": CONTEXT_DIM, "out_features": hidden},
        },
    )
    config = comfy.supported_models.SD3(unet)
    config.set_inference_dtype(dtype, None)
    model = config.get_model({})
    generator = torch.Generator().manual_seed(0)
    tiny_models.randomise_(model, generator)
    tiny_models.fill_empty_buffers_(model, generator)
    offload = comfy.model_management.unet_offload_device()
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=offload)


def conditioning(generator) -> list:
    return [
        [
            torch.randn(1, TEXT_TOKENS, CONTEXT_DIM, generator=generator),
            {"pooled_output": torch.randn(1, POOLED_DIM, generator=generator)},
        ]
    ]


class CaptureTimer:
    """Seconds spent in S-CFG's attention capture (ForwardCapture.observe), timed in place."""

    def __init__(self, capture_class, device):
        self.seconds, self.device, self.capture_class = 0.0, device, capture_class
        self.original = capture_class.observe

    def __enter__(self):
        original, timer = self.original, self

        def observe(capture, *args, **kwargs):
            timer.synchronise()
            start = time.perf_counter()
            try:
                return original(capture, *args, **kwargs)
            finally:
                timer.synchronise()
                timer.seconds += time.perf_counter() - start

        self.capture_class.observe = observe
        return self

    def __exit__(self, *exc):
        self.capture_class.observe = self.original

    def synchronise(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()


def measure(runtime, variants, positive, negative, latent, steps, rounds, device, warm_up) -> dict:
    capture_class = runtime.pack.nodes.scfg_dit.ForwardCapture
    results = {key: dict(seconds=[], own=[], capture=[], peak=0) for key in variants}
    for model in variants.values():
        run(runtime, model, positive, negative, warm_up, 1, device)  # warm-up: one step
    for _ in range(rounds):
        for key in random.Random(0).sample(list(variants), len(variants)):
            model, hook = variants[key], None
            if model.model_options.get("sampler_post_cfg_function"):
                hook = HookTimer(model, device)
                model = hook.model
            with CaptureTimer(capture_class, device) as capture:
                seconds, peak, _ = run(runtime, model, positive, negative, latent, steps, device)
            results[key]["seconds"].append(seconds)
            results[key]["own"].append(capture.seconds + (hook.seconds if hook else 0.0))
            results[key]["capture"].append(capture.seconds)
            results[key]["peak"] = max(results[key]["peak"], peak)
    return results


def summarise(results: dict, steps: int) -> dict:
    plain = statistics.median(results["plain CFG"]["seconds"])
    summary = {}
    for key, result in results.items():
        seconds = statistics.median(result["seconds"])
        own = statistics.median(result["own"])
        summary[key] = dict(
            seconds_per_step=seconds / steps,
            time_ratio=seconds / plain,
            own_seconds_per_step=own / steps,
            capture_seconds_per_step=statistics.median(result["capture"]) / steps,
            own_share=own / plain,
            peak_mib=result["peak"] / 2**20,
            extra_peak_mib=(result["peak"] - results["plain CFG"]["peak"]) / 2**20,
            runs=result["seconds"],
        )
    return summary


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=24, help="joint blocks (SD3 Medium: 24; hidden = 64 x depth)")
    parser.add_argument("--side", type=int, default=64, help="latent side (64 = 512 px, 128 = 1024 px)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument(
        "--warm-up-side", type=int, help="latent side of the warm-up step (default --side; 32 for a quick one)"
    )
    parser.add_argument("--json", help="write the summary here")
    return parser.parse_args()


def main():
    args = parse_args()
    runtime, device = boot(args.device)
    generator = torch.Generator().manual_seed(0)
    plain = sd3_medium(args.depth, DTYPES[args.dtype], device)
    blocks = runtime.pack.nodes.scfg_dit.choose_blocks(plain, runtime.pack.nodes.scfg_dit.dit_layout(plain), "auto")
    node = runtime.pack.nodes.scfg.SCFG
    required = node.INPUT_TYPES()["required"]
    defaults = {name: spec[1]["default"] for name, spec in required.items() if len(spec) > 1 and "default" in spec[1]}
    variants = {"plain CFG": plain, "S-CFG": node().patch(plain, **defaults)[0]}
    positive, negative = conditioning(generator), conditioning(generator)
    latent = torch.randn(1, 16, args.side, args.side, generator=generator)
    parameters = sum(p.numel() for p in plain.model.diffusion_model.parameters()) / 1e9
    warm_up = latent[..., : args.warm_up_side, : args.warm_up_side] if args.warm_up_side else latent
    results = measure(runtime, variants, positive, negative, latent, args.steps, args.rounds, device, warm_up)
    summary = summarise(results, args.steps)
    print(
        f"SD3-Medium-architecture MMDiT ({parameters:.2f} B parameters, {args.dtype}), latent {args.side}x{args.side} "
        f"({args.side * 8} px, {(args.side // 2) ** 2} image tokens), {args.steps} steps x {args.rounds} rounds, "
        f"{device_label(device)}; S-CFG blocks {', '.join(map(str, blocks))}"
    )
    for key, row in summary.items():
        print(
            f"  {key:<10} {row['seconds_per_step']:8.2f} s/step  ratio {row['time_ratio']:.3f}x  own work "
            f"{row['own_seconds_per_step']:.3f} s/step (capture {row['capture_seconds_per_step']:.3f}) = "
            f"{100 * row['own_share']:.2f} % of a plain step  peak "
            f"{row['peak_mib']:.0f} MiB (+{row['extra_peak_mib']:.0f} MiB)"
        )
    scfg = summary["S-CFG"]
    print(
        f"  goals: own work <= {100 * GOALS['own_share']:.0f} % of a step: {'met' if scfg['own_share'] <= GOALS['own_share'] else 'NOT met'}; "
        f"end to end <= {GOALS['time_ratio']:.2f}x: {'met' if scfg['time_ratio'] <= GOALS['time_ratio'] else 'NOT met'}"
    )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                dict(args=vars(args), device=device_label(device), blocks=blocks, summary=summary), handle, indent=2
            )


if __name__ == "__main__":
    main()
