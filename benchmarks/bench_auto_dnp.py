"""Auto-DNP end to end vs one plain generation, interleaved in one run; memory around the caption step.

    . "$(bash scripts/provision.sh)" && python benchmarks/bench_auto_dnp.py [--size 256] [--steps 10] [--rounds 3]

Tiny random SD1.5 model and tiny random BLIP on this machine's device. Plain = KSampler + VAE Decode.
Auto-DNP = Auto-DNP node (DNS run + decode + caption + encode) + the same KSampler + VAE Decode.
Memory: the device's allocated bytes (CUDA) or the process RSS (CPU), before and after captioning.
"""

import argparse
import os
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))

import comfy_inprocess  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402

PROMPT = "a photo of a red fox in the snow"


def memory_bytes(device) -> int:
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    return psutil.Process().memory_info().rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dns-steps", type=int, default=0)
    parser.add_argument("--dns-size", type=int, default=0)
    args = parser.parse_args()

    runtime = comfy_inprocess.boot(progress_bars=False)
    import comfy.model_management as mm

    tiny = comfy_inprocess.load_tiny(runtime, PROMPT, "blurry")
    dnp = runtime.pack.nodes.dnp
    captioner = dnp.CaptionerLoader().load("dnpg-tiny-blip", "auto", False)[0]
    latent = {"samples": torch.zeros(1, 4, args.size // 8, args.size // 8)}

    def generate(positive, negative):
        samples = runtime.nodes.common_ksampler(
            tiny.model, 1, args.steps, 7.0, "euler", "normal", positive, negative, latent
        )[0]
        return runtime.nodes.VAEDecode().decode(tiny.vae, samples)[0]

    def plain():
        generate(tiny.positive, tiny.negative)

    def auto_dnp():
        result = dnp.AutoDNP().run(
            tiny.model,
            tiny.clip,
            tiny.vae,
            captioner,
            PROMPT,
            "blurry",
            "append",
            1,
            args.steps,
            7.0,
            "euler",
            "normal",
            args.size,
            args.size,
            args.dns_steps,
            args.dns_size,
        )["result"]
        generate(result[0], result[1])

    runs = {"plain": plain, "auto-DNP": auto_dnp}
    times = {name: [] for name in runs}
    plain()
    for _ in range(args.rounds):
        for name in random.sample(list(runs), len(runs)):
            start = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - start)

    device = mm.get_torch_device()
    image = torch.rand(1, args.size, args.size, 3)
    before = memory_bytes(device)
    runtime.pack.nodes.captioning.caption(captioner, image)
    after = memory_bytes(device)
    resident = any(loaded.model is captioner.patcher for loaded in mm.current_loaded_models)

    base = statistics.median(times["plain"])
    print(
        f"device {device}, {args.size}px, {args.steps} steps, DNS steps {args.dns_steps or args.steps}, "
        f"DNS size {args.dns_size or args.size}px, {args.rounds} rounds"
    )
    for name, samples in times.items():
        print(f"{name:<10} median {statistics.median(samples):.3f} s   ratio {statistics.median(samples) / base:.2f}x")
    print(
        f"memory around a caption: before {before / 2**20:.1f} MiB, after {after / 2**20:.1f} MiB "
        f"(delta {(after - before) / 2**20:+.1f} MiB); captioner still loaded on the device: {resident}"
    )


if __name__ == "__main__":
    main()
