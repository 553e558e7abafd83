"""Write the shipped UI-format workflows in workflows/ from the definitions below.

Node inputs and widget order come from a running server's /object_info, so the JSON always
matches the nodes. Usage (inside the provisioned environment): python scripts/build_workflows.py
The test suite rebuilds them and fails when a shipped file is out of date.
"""

import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from comfy_server import ComfyServer  # noqa: E402
from workflow_builder import Graph  # noqa: E402

WORKFLOW_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "workflows")
SD15_CHECKPOINT = "v1-5-pruned-emaonly-fp16.safetensors"
SD15_MODEL_LINK = {
    "name": SD15_CHECKPOINT,
    "url": "https://huggingface.co/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/" + SD15_CHECKPOINT,
    "directory": "checkpoints",
}


def text_to_image_base(graph: Graph, positive: str, negative: str, width: int = 512, height: int = 512):
    """Checkpoint, the two prompts and an empty latent: the start of every shipped graph."""
    checkpoint = graph.add("CheckpointLoaderSimple", (20, 120), ckpt_name=SD15_CHECKPOINT)
    graph.nodes[-1]["properties"]["models"] = [SD15_MODEL_LINK]
    pos = graph.add(
        "CLIPTextEncode",
        (380, 60),
        title="Positive prompt",
        size=(380, 140),
        text=positive,
        clip=checkpoint.out("CLIP"),
    )
    neg = graph.add(
        "CLIPTextEncode",
        (380, 240),
        title="Negative prompt",
        size=(380, 120),
        text=negative,
        clip=checkpoint.out("CLIP"),
    )
    latent = graph.add("EmptyLatentImage", (380, 400), width=width, height=height, batch_size=1)
    return checkpoint, pos, neg, latent


def cfg_schedule(object_info: dict) -> dict:
    graph = Graph(object_info)
    checkpoint, pos, neg, latent = text_to_image_base(
        graph, "a photo of a red fox in a snowy forest, detailed fur, soft light", "blurry, low quality"
    )
    scheduled = graph.add(
        "DNPG_CFGSchedule", (800, 420), model=checkpoint.out("MODEL"), kind="linear", progress="sigma position"
    )
    sampler = graph.add(
        "KSampler",
        (1160, 60),
        model=scheduled.out("MODEL"),
        positive=pos.out(0),
        negative=neg.out(0),
        latent_image=latent.out(0),
        seed=42,
        steps=20,
        cfg=7.0,
        sampler_name="euler",
        scheduler="normal",
        denoise=1.0,
    )
    decoded = graph.add("VAEDecode", (1520, 60), size=(220, 100), samples=sampler.out(0), vae=checkpoint.out("VAE"))
    graph.add("SaveImage", (1760, 60), size=(400, 440), images=decoded.out(0), filename_prefix="dnpg_cfg_schedule")
    plot = graph.add(
        "DNPG_CFGSchedulePlot",
        (1160, 440),
        model=scheduled.out("MODEL"),
        cfg=7.0,
        scheduler="normal",
        steps=20,
        denoise=1.0,
    )
    graph.add("PreviewImage", (1520, 440), size=(640, 400), images=plot.out(0))
    graph.add(
        "Note",
        (20, 320),
        size=(340, 260),
        text="CFG Schedule (DNP Guidance)\n\n"
        "The KSampler's cfg (7.0) is the schedule's mean s0. With 'linear' the guidance scale rises from 1 at "
        "the first, noisiest step to 2*s0 - 1 = 13 at the last step (Wang et al. 2024: increasing schedules "
        "help). Try 'cosine', 'clamp-linear' or 'interval'.\n\n"
        "The CFG Schedule Plot draws the scale the sampler will use at each step: keep its cfg, scheduler, "
        "steps and denoise equal to the KSampler's.\n\n"
        "Pick your SD1.5 / SD2.x / SDXL checkpoint in Load Checkpoint.",
    )
    return graph.to_json()


WORKFLOWS = {"cfg_schedule.json": cfg_schedule}


def build_all(object_info: dict) -> dict:
    return {name: build(object_info) for name, build in WORKFLOWS.items()}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = ComfyServer(os.path.join(tmp, "output"), os.path.join(tmp, "server.log"))
        with server as client:
            built = build_all(client.get("/object_info"))
    for name, workflow in built.items():
        with open(os.path.join(WORKFLOW_DIR, name), "w") as handle:
            json.dump(workflow, handle, indent=2)
            handle.write("\n")
        print(f"wrote workflows/{name}")


if __name__ == "__main__":
    main()
