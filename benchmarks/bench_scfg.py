"""Per-step time of S-CFG vs plain CFG, interleaved in one run, and the memory of the captured maps.

    . "$(bash scripts/provision.sh)" && python benchmarks/bench_scfg.py [--full-sides 64,96] [--rounds 2]

Models: the tiny random SD1.5 checkpoint (32x32 latent), and a full-size SD1.5-architecture UNet
(860 M parameters, random weights, built in memory from ComfyUI's classes) at the given latent
sides (64 = 512 px, 96 = 768 px). Ratio = median per-step time of S-CFG / plain CFG.
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
SD15_UNET = dict(
    image_size=32,
    in_channels=4,
    out_channels=4,
    model_channels=320,
    num_res_blocks=[2, 2, 2, 2],
    channel_mult=[1, 2, 4, 4],
    transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0],
    transformer_depth_middle=1,
    transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    use_linear_in_transformer=False,
    context_dim=768,
    num_heads=8,
    num_head_channels=-1,
    use_spatial_transformer=True,
    legacy=False,
    adm_in_channels=None,
    use_temporal_attention=False,
    use_temporal_resblock=False,
)


def full_size_sd15():
    import comfy.supported_models
    import tiny_models

    return tiny_models.patcher(comfy.supported_models.SD15(SD15_UNET))


def with_probe(runtime, model, report: dict):
    """A clone whose post-CFG probe (before S-CFG's hook) records the bytes of the captured maps."""
    run_key = runtime.pack.nodes.patching.RUN_KEY
    probe = model.clone()

    def measure(args):
        run = args["model_options"].get(run_key)
        collector = run.captures.get("scfg") if run else None
        if collector is not None:
            kept = sum(t.numel() * t.element_size() for sums in collector.sums if sums for t in sums[:2])
            report["maps_bytes"] = max(report.get("maps_bytes", 0), kept)
        return args["denoised"]

    probe.set_model_sampler_post_cfg_function(measure)
    return probe


def self_attention_bytes(runtime, model, side: int) -> int:
    """Largest head-averaged self-attention map the capture holds at once (one layer, one pass, batch 1)."""
    capture = runtime.pack.nodes.attention_capture
    layers = capture.select_layers(
        capture.attention_layers(model.get_model_object("diffusion_model")), "auto (1/4 + 1/8)"
    )
    finest = max(-(-side // ratio) for *_, ratio in layers)
    return (finest * finest) ** 2 * 4


def transformer_module(unet, name: str, block_id: int):
    block = unet.middle_block if name == "middle" else getattr(unet, f"{name}_blocks")[block_id]
    return next(m for m in block if hasattr(m, "transformer_blocks"))


def capture_overhead_seconds(runtime, model, side: int, repeats: int = 5) -> float:
    """Seconds per step that S-CFG adds, measured on its own work: the capture functions at every used
    layer (minus the attention they compute anyway) plus the rate, on tensors of the real shapes."""
    from comfy.ldm.modules.attention import optimized_attention

    capture, scfg_maths = runtime.pack.nodes.attention_capture, runtime.pack.guidance.scfg
    unet = model.get_model_object("diffusion_model")
    layers = capture.select_layers(capture.attention_layers(unet), "auto (1/4 + 1/8)")
    finest_ratio = min(ratio for *_, ratio in layers)
    collector = runtime.pack.nodes.scfg_capture.ScfgCollector()
    run = runtime.pack.nodes.patching.RunState(captures={"scfg": collector})
    extra_time = 0.0
    for name, block_id, depth, ratio in layers:
        block = transformer_module(unet, name, block_id).transformer_blocks[depth]
        dim, heads, h = block.attn1.to_q.out_features, block.attn1.heads, -(-side // ratio)
        x, context = torch.randn(2, h * h, dim), torch.randn(2, 77, dim)
        extra = {
            "n_heads": heads,
            "cond_or_uncond": [1, 0],
            "activations_shape": [2, dim, h, h],
            "original_shape": [2, 4, side, side],
            "dnp_guidance_run": run,
        }
        key = (name, block_id, depth)
        captured = (capture.self_capture(key), capture.cross_capture(key, "code", True, ratio, finest_ratio))
        for fn, k in zip(captured, (x, context)):
            start = time.perf_counter()
            for _ in range(repeats):
                fn(x, k, k, extra)
            with_capture = time.perf_counter() - start
            start = time.perf_counter()
            for _ in range(repeats):
                optimized_attention(x, k, k, heads)
            extra_time += (with_capture - (time.perf_counter() - start)) / repeats
    uncond_maps, cond_maps = collector.finalize()
    delta = torch.randn(1, 4, side, side)
    start = time.perf_counter()
    for _ in range(repeats):
        scfg_maths.rate_from_maps(delta, uncond_maps, cond_maps, S0)
    return extra_time + (time.perf_counter() - start) / repeats


def per_step_seconds(runtime, model, positive, negative, side, steps) -> float:
    latent = {"samples": torch.zeros(1, 4, side, side)}
    start = time.perf_counter()
    runtime.nodes.common_ksampler(model, 1, steps, S0, "euler", "normal", positive, negative, latent)
    return (time.perf_counter() - start) / steps


def compare(runtime, name, model, positive, negative, side, steps, rounds) -> None:
    report = {}
    scfg_node = runtime.pack.nodes.scfg.SCFG()
    patched = scfg_node.patch(
        with_probe(runtime, model, report), "auto (1/4 + 1/8)", 0.8, 3.0, 15.0, 0.0, 1.0, True, "code", "uncond"
    )[0]
    variants = {"plain": model, "S-CFG": patched}
    times = {key: [] for key in variants}
    per_step_seconds(runtime, model, positive, negative, side, 1)  # warm-up
    for _ in range(rounds):
        for key in random.sample(list(variants), 2):
            times[key].append(per_step_seconds(runtime, variants[key], positive, negative, side, steps))
    plain, guided = statistics.median(times["plain"]), statistics.median(times["S-CFG"])
    overhead = capture_overhead_seconds(runtime, model, side)
    print(
        f"{name:<28} latent {side}x{side}: plain {plain:.3f} s/step, S-CFG {guided:.3f} s/step, ratio {guided / plain:.3f}x; "
        f"S-CFG's own work {overhead * 1e3:.1f} ms/step = {(plain + overhead) / plain:.3f}x; "
        f"captured maps {report.get('maps_bytes', 0) / 2**20:.2f} MiB, largest self-attention map "
        f"{self_attention_bytes(runtime, model, side) / 2**20:.2f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny-side", type=int, default=32)
    parser.add_argument("--full-sides", default="64", help="latent sides for the full-size UNet ('' to skip)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    runtime = comfy_inprocess.boot(progress_bars=False)
    import comfy.model_management

    tiny = comfy_inprocess.load_tiny(runtime)
    print(
        f"device {comfy.model_management.get_torch_device()}, cfg {S0}, euler, {args.steps} steps, {args.rounds} rounds"
    )
    compare(
        runtime,
        "tiny SD1.5 checkpoint",
        tiny.model,
        tiny.positive,
        tiny.negative,
        args.tiny_side,
        args.steps,
        args.rounds,
    )
    if args.full_sides:
        full = full_size_sd15()
        positive, negative = tiny.positive, tiny.negative  # CLIP-L conditioning fits the SD1.5 UNet
        for side in map(int, args.full_sides.split(",")):
            compare(runtime, "full-size SD1.5 UNet", full, positive, negative, side, args.steps, args.rounds)


if __name__ == "__main__":
    main()
