"""Per-step time and peak memory of Loss Guidance vs plain CFG, interleaved in one run.

    . "$(bash scripts/provision.sh)" && python benchmarks/bench_loss_guidance.py [--full-side 32] [--rounds 2]

Variants: the x0-only gradient and the full gradient through the denoiser (the paper's Eq. 5), with
the latent-preview decoder or a full-size SD VAE decode (84 M parameters, random weights), with 0 or
10 augmentations, and with time travel (3 repeats at every step). The loss is a colour target, so the
figures are the guidance machinery's own cost (a CLIP loss adds its forward and backward on top).
Models: the tiny random SD1.5 checkpoint, and a full-size SD1.5 UNet (860 M parameters, random
weights) at --full-side (32 = 256 px; 64 = 512 px takes minutes per variant on a CPU). Ratios are
median per-step time / plain CFG's in the same run; peak memory is the CUDA allocator's peak above the
allocation before the run, or on CPU the process RSS peak above the level before the run (sampled
every 5 ms; plain CFG reuses memory the warm-up already holds, so CPU figures are the extra memory a
variant needs and have no ratio).
"""

import argparse
import os
import random
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import comfy_inprocess  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402
from bench_scfg import full_size_sd15  # noqa: E402

S0 = 7.0
SD_VAE = dict(
    double_z=True,
    z_channels=4,
    resolution=256,
    in_channels=3,
    out_ch=3,
    ch=128,
    ch_mult=[1, 2, 4, 4],
    num_res_blocks=2,
    attn_resolutions=[],
    dropout=0.0,
)
VARIANTS = {
    "x0 estimate, latent preview": dict(gradient="x0 estimate", decoder="latent preview", augmentations=0),
    "x0 estimate, VAE decode": dict(gradient="x0 estimate", decoder="vae", augmentations=0),
    "x0 estimate, VAE, 10 augmentations": dict(gradient="x0 estimate", decoder="vae", augmentations=10),
    "through denoiser, latent preview": dict(
        gradient="through the denoiser", decoder="latent preview", augmentations=0
    ),
    "through denoiser, VAE, 10 augm.": dict(gradient="through the denoiser", decoder="vae", augmentations=10),
    "x0, preview, time travel x3": dict(
        gradient="x0 estimate", decoder="latent preview", augmentations=0, time_travel_repeats=3
    ),
}


def full_size_vae():
    """ComfyUI's VAE around a full-size SD AutoencoderKL with random weights."""
    import comfy.sd
    import tiny_models
    from comfy.ldm.models.autoencoder import AutoencoderKL

    module = AutoencoderKL(ddconfig=SD_VAE, embed_dim=4)
    tiny_models.randomise_(module, torch.Generator().manual_seed(0))
    return comfy.sd.VAE(sd=module.state_dict())


class PeakMemory:
    """Peak bytes allocated during the block: CUDA allocator peak, or process RSS above the start."""

    def __init__(self, device):
        self.device, self.peak = device, 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
            return self
        self.process, self.running = psutil.Process(), True
        self.start = self.process.memory_info().rss
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def _poll(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss - self.start)
            time.sleep(0.005)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.start
        else:
            self.running = False
            self.thread.join()


def patched(runtime, model, vae, options: dict):
    losses = runtime.pack.nodes.loss_nodes.ColourTargetLoss().build("#D04020", 1.0)[0]
    node = runtime.pack.nodes.loss_guidance.LossGuidance
    settings = {
        **comfy_inprocess.default_settings(node),
        "scale": 0.01,
        "end": 1.0,
        "time_travel_start": 0.0,
        "time_travel_end": 1.0,
    }
    return node().patch(model, losses, vae=vae, **{**settings, **options})[0]


def run(runtime, model, positive, negative, side, steps, device) -> tuple:
    latent = {"samples": torch.zeros(1, 4, side, side)}
    with PeakMemory(device) as memory, torch.inference_mode():
        start = time.perf_counter()
        runtime.nodes.common_ksampler(model, 1, steps, S0, "euler", "normal", positive, negative, latent)
        seconds = (time.perf_counter() - start) / steps
    return seconds, memory.peak


def compare(runtime, name, model, vae, positive, negative, side, steps, rounds, device) -> None:
    variants = {"plain CFG": model}
    variants.update({key: patched(runtime, model, vae, options) for key, options in VARIANTS.items()})
    times, peaks = {key: [] for key in variants}, {key: 0 for key in variants}
    run(runtime, model, positive, negative, side, 1, device)  # warm-up
    for _ in range(rounds):
        for key in random.sample(list(variants), len(variants)):
            seconds, peak = run(runtime, variants[key], positive, negative, side, steps, device)
            times[key].append(seconds)
            peaks[key] = max(peaks[key], peak)
    plain, plain_peak = statistics.median(times["plain CFG"]), peaks["plain CFG"]
    print(f"\n{name}, latent {side}x{side} ({side * 8} px):")
    print(f"  {'variant':<38} {'s/step':>8} {'ratio':>7} {'peak MiB':>9} {'peak ratio':>10}")
    for key in variants:
        seconds = statistics.median(times[key])
        # On CPU plain CFG reuses memory the warm-up already holds (RSS barely moves): no ratio there.
        ratio = f"{peaks[key] / plain_peak:9.2f}x" if plain_peak > 2**20 else f"{'-':>10}"
        print(f"  {key:<38} {seconds:8.3f} {seconds / plain:6.2f}x {peaks[key] / 2**20:9.1f} {ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny-side", type=int, default=32)
    parser.add_argument("--full-side", type=int, default=32, help="latent side for the full-size UNet (0 skips)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    runtime = comfy_inprocess.boot(progress_bars=False)
    import comfy.model_management

    device = comfy.model_management.get_torch_device()
    tiny = comfy_inprocess.load_tiny(runtime)
    vae = full_size_vae()
    print(f"device {device}, cfg {S0}, euler, {args.steps} steps, {args.rounds} rounds, colour-target loss")
    compare(
        runtime,
        "tiny SD1.5 checkpoint + full SD VAE",
        tiny.model,
        vae,
        tiny.positive,
        tiny.negative,
        args.tiny_side,
        args.steps,
        args.rounds,
        device,
    )
    if args.full_side:
        compare(
            runtime,
            "full-size SD1.5 UNet + full SD VAE",
            full_size_sd15(),
            vae,
            tiny.positive,
            tiny.negative,
            args.full_side,
            args.steps,
            args.rounds,
            device,
        )


if __name__ == "__main__":
    main()
