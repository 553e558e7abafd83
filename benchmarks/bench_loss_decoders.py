"""Loss Guidance's decoders (vae / taesd / latent preview) with a colour target and a CLIP loss: time per
step and peak memory vs plain CFG, interleaved in one run, with each step's breakdown.

    . "$(bash scripts/provision.sh)" && python benchmarks/bench_loss_decoders.py [--side 64] [--steps 2]

Model: a full-size SD1.5-architecture UNet (860 M parameters, random weights, built in memory from
ComfyUI's classes), cfg 7, euler, at --side (64 = 512 px). Decoders: the full-size SD VAE (84 M
parameters, random weights), ComfyUI's TAESD class with the published architecture (random weights, in a
temporary vae_approx folder) and ComfyUI's latent preview factors. Losses: the colour target, and the
CLIP text loss on a CLIP ViT-B/32-architecture model (transformers' CLIPConfig defaults, random weights,
a random text embedding as the target: the cost does not depend on the weights). Every guided row: 10
augmentations, gradient = x0 estimate, Polyak step at scale 1e-4 (random networks diverge at the usual
scales; the work per step is the same at any scale but 0), guiding at every step.

ratio: median time per step over plain CFG's in the same run. Peak memory: the CUDA allocator's peak
above the allocation before the run, or on CPU the process RSS peak above the level before the run
(sampled every 5 ms, glibc's mmap threshold fixed so freed tensors leave the RSS). Breakdown: the
decoder's forward + backward (x0 -> image -> gradient at x0) and the loss's (10 augmented views ->
loss network -> gradient at the image) timed as separate passes on the same tensors, each the median
of --parts-repeats; the UNet's share is plain CFG's step time (the x0-estimate gradient adds no UNet
pass). Each is given as a fraction of the row's step time; the rest ("other") is the sampler, the
stack and the Polyak step.
"""

import argparse
import os
import random
import statistics
import sys
import tempfile
import time

PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(PACK_DIR, "scripts"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import comfy_inprocess  # noqa: E402
import torch  # noqa: E402
from bench_flow_loss_guidance import device_label, return_freed_memory_to_the_os  # noqa: E402
from bench_loss_guidance import PeakMemory, full_size_vae  # noqa: E402
from bench_scfg import full_size_sd15  # noqa: E402

CFG = 7.0
TARGET_RATIO = 1.3
AUGMENTATIONS = 10
SCALE = 1e-4  # small enough that random networks' gradients do not diverge; the cost does not depend on it
DECODERS = ("vae", "taesd", "latent preview")
LOSSES = ("colour target", "CLIP text")


def use_tiny_taesd(runtime) -> None:
    """A random TAESD decoder (ComfyUI's class, the published shapes) as the only vae_approx file."""
    import make_tiny_taesd

    folder = tempfile.mkdtemp(prefix="dnpg-vae-approx-")
    make_tiny_taesd.write_taesd(folder, "taesd_decoder")
    folder_paths = runtime.folder_paths
    folder_paths.folder_names_and_paths["vae_approx"] = ([folder], folder_paths.supported_pt_extensions)
    folder_paths.filename_list_cache.pop("vae_approx", None)


def clip_b32(runtime):
    """A Guidance CLIP of the ViT-B/32 architecture with random weights."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import transformers

    clips = runtime.pack.nodes.guidance_clip
    model = transformers.CLIPModel(transformers.CLIPConfig()).eval().requires_grad_(False)
    load_device, offload_device = mm.get_torch_device(), mm.unet_offload_device()
    managed = runtime.pack.nodes.model_files.ManagedModule(model.to(offload_device))
    patcher = comfy.model_patcher.ModelPatcher(managed, load_device=load_device, offload_device=offload_device)
    size = model.config.vision_config.image_size
    return clips.GuidanceClip(
        "random ViT-B/32", patcher, None, size, clips.OPENAI_MEAN, clips.OPENAI_STD, torch.float32
    )


def build_losses(runtime, clip) -> dict:
    nodes, maths = runtime.pack.nodes, runtime.pack.guidance.losses
    embed = nodes.guidance_clip.guidance_clip_image_embedder(clip)
    target = torch.randn(1, clip.patcher.model.inner.config.projection_dim, generator=torch.Generator().manual_seed(0))
    clip_loss = maths.embedding_target("CLIP text", embed, target, 1.0, (clip.patcher,))
    return {"colour target": nodes.loss_nodes.ColourTargetLoss().build("#D04020", 1.0)[0], "CLIP text": (clip_loss,)}


def guided(runtime, model, vae, losses, decoder):
    node = runtime.pack.nodes.loss_guidance.LossGuidance
    settings = {
        **comfy_inprocess.default_settings(node),
        "scale": SCALE,
        "end": 1.0,
        "decoder": decoder,
        "augmentations": AUGMENTATIONS,
    }
    return node().patch(model, losses, vae=vae, **settings)[0]


def run(runtime, model, conds, side, steps, device) -> tuple:
    latent = {"samples": torch.zeros(1, 4, side, side)}
    with PeakMemory(device) as memory, torch.inference_mode():
        start = time.perf_counter()
        runtime.nodes.common_ksampler(model, 1, steps, CFG, "euler", "normal", conds[0], conds[1], latent)
        seconds = (time.perf_counter() - start) / steps
    return seconds, memory.peak


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def part_times(runtime, model, vae, losses, decoder, side, device, repeats) -> tuple:
    """(decoder, loss) forward + backward seconds, as separate passes (see the module docstring)."""
    import comfy.model_management as mm

    lg, maths = runtime.pack.nodes.loss_guidance, runtime.pack.guidance
    to_image, helpers = lg.image_decoder(model, losses, decoder, vae)
    mm.load_models_gpu([p for p in helpers + [q for loss in losses for q in loss.models]])
    x0 = torch.randn(1, 4, side, side, generator=torch.Generator().manual_seed(0)).to(device)
    generator = torch.Generator(device=device).manual_seed(0)

    def decode_pass():
        leaf = x0.clone().requires_grad_(True)
        to_image(leaf).mean().backward()

    with torch.inference_mode(False), torch.enable_grad():
        augmentation = maths.loss_guidance.draw_augmentation(1, AUGMENTATIONS, generator)
        image = to_image(x0).detach()

        def loss_pass():
            leaf = image.clone().requires_grad_(True)
            maths.losses.objective(losses, x0, augmentation, lambda _: leaf, None).sum().backward()

        return timed(decode_pass, repeats), timed(loss_pass, repeats)


def table(rows: dict, plain: tuple, target: float) -> str:
    plain_seconds, plain_peak = plain
    lines = [
        "| loss | decoder | s/step | ratio | peak MiB | extra MiB vs plain | decoder | loss network | UNet | other |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| none (plain CFG) | - | {plain_seconds:.2f} | 1.00x | {plain_peak / 2**20:.0f} | - | - | - | 100% | - |",
    ]
    for (loss, decoder), (seconds, peak, decode_s, loss_s) in rows.items():
        shares = [decode_s / seconds, loss_s / seconds, plain_seconds / seconds]
        other = 1.0 - sum(shares)
        cells = " | ".join(f"{share:.0%}" for share in shares + [other])
        extra = (peak - plain_peak) / 2**20
        ratio = seconds / plain_seconds
        mark = " (goal met)" if loss == "CLIP text" and decoder == "taesd" and ratio <= target else ""
        lines.append(
            f"| {loss} | {decoder} | {seconds:.2f} | {ratio:.2f}x{mark} | {peak / 2**20:.0f} | {extra:+.0f} | {cells} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=64, help="latent side (64 = 512 px)")
    parser.add_argument("--steps", type=int, default=2, help="sampling steps per timed run")
    parser.add_argument("--rounds", type=int, default=1, help="timed runs per row (shuffled order)")
    parser.add_argument("--parts-repeats", type=int, default=2)
    parser.add_argument("--decoders", default=",".join(DECODERS))
    args = parser.parse_args()
    runtime = comfy_inprocess.boot(progress_bars=False)
    import comfy.model_management

    device = comfy.model_management.get_torch_device()
    if device.type == "cpu":
        return_freed_memory_to_the_os()
    use_tiny_taesd(runtime)
    tiny = comfy_inprocess.load_tiny(runtime)
    conds = (tiny.positive, tiny.negative)
    model, vae = full_size_sd15(), full_size_vae()
    losses = build_losses(runtime, clip_b32(runtime))
    keys = [(loss, decoder) for loss in LOSSES for decoder in args.decoders.split(",")]
    variants = {key: guided(runtime, model, vae, losses[key[0]], key[1]) for key in keys}
    run(runtime, model, conds, args.side, 1, device)  # warm-up
    times, peaks = {key: [] for key in [None, *keys]}, {key: 0 for key in [None, *keys]}
    for _ in range(args.rounds):
        for key in random.sample([None, *keys], len(keys) + 1):
            seconds, peak = run(runtime, model if key is None else variants[key], conds, args.side, args.steps, device)
            times[key].append(seconds)
            peaks[key] = max(peaks[key], peak)
            print(f"  {key or 'plain CFG'}: {seconds:.2f} s/step, peak {peak / 2**20:.0f} MiB", flush=True)
    rows = {}
    for key in keys:
        parts = part_times(runtime, model, vae, losses[key[0]], key[1], args.side, device, args.parts_repeats)
        rows[key] = (statistics.median(times[key]), peaks[key], *parts)
    plain = (statistics.median(times[None]), peaks[None])
    print(
        f"\n{device_label(device)}; full-size SD1.5-architecture UNet, {args.side * 8} px, cfg {CFG:g}, euler, "
        f"{args.steps} steps x {args.rounds} rounds; {AUGMENTATIONS} augmentations, gradient x0 estimate\n"
    )
    print(table(rows, plain, TARGET_RATIO))


if __name__ == "__main__":
    main()
