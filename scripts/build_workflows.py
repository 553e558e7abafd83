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
# Chroma's files as ComfyUI's own Chroma template (image_chroma_text_to_image) names and links them.
CHROMA_MODEL_LINKS = {
    "UNETLoader": {
        "name": "Chroma1-HD.safetensors",
        "url": "https://huggingface.co/lodestones/Chroma1-HD/resolve/main/Chroma1-HD.safetensors",
        "directory": "diffusion_models",
    },
    "CLIPLoader": {
        "name": "t5xxl_fp8_e4m3fn_scaled.safetensors",
        "url": "https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/t5xxl_fp8_e4m3fn_scaled.safetensors",
        "directory": "text_encoders",
    },
    "VAELoader": {
        "name": "ae.safetensors",
        "url": "https://huggingface.co/Comfy-Org/Lumina_Image_2.0_Repackaged/resolve/main/split_files/vae/ae.safetensors",
        "directory": "vae",
    },
}
# SD3.5 Medium as ComfyUI's own SD3.5 template (sd3.5_simple_example) loads SD3.5: one all-in-one
# checkpoint in CheckpointLoaderSimple (here Comfy-Org's Medium one, from the same repository).
SD35_CHECKPOINT = "sd3.5_medium_incl_clips_t5xxlfp8scaled.safetensors"
SD35_MODEL_LINK = {
    "name": SD35_CHECKPOINT,
    "url": "https://huggingface.co/Comfy-Org/stable-diffusion-3.5-fp8/resolve/main/" + SD35_CHECKPOINT,
    "directory": "checkpoints",
}
# KSampler settings of the SD1.5 graphs, and of the Chroma graph: true CFG around 4, the beta scheduler.
SD15_SAMPLING = {"steps": 20, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal"}
CHROMA_SAMPLING = {"steps": 26, "cfg": 4.0, "sampler_name": "euler", "scheduler": "beta"}
# SD3.5 Medium: Stability's 40 steps at cfg 4.5, with the template's euler / sgm_uniform.
SD35_SAMPLING = {"steps": 40, "cfg": 4.5, "sampler_name": "euler", "scheduler": "sgm_uniform"}


def model_loader(graph: Graph, node_type: str, pos: tuple, widget: str, link: dict, **widgets):
    """A loader node set to the file `link` names; the frontend offers to download it (properties.models)
    when it is missing."""
    loader = graph.add(node_type, pos, **{widget: link["name"]}, **widgets)
    graph.nodes[-1]["properties"]["models"] = [link]
    return loader


def sd15_checkpoint(graph: Graph):
    return model_loader(graph, "CheckpointLoaderSimple", (20, 120), "ckpt_name", SD15_MODEL_LINK)


def text_to_image_base(
    graph: Graph,
    positive: str,
    negative: str,
    width: int = 512,
    height: int = 512,
    checkpoint_link: dict = SD15_MODEL_LINK,
    latent_type: str = "EmptyLatentImage",
):
    """Checkpoint, the two prompts and an empty latent: the start of every shipped graph."""
    checkpoint = model_loader(graph, "CheckpointLoaderSimple", (20, 120), "ckpt_name", checkpoint_link)
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
    latent = graph.add(latent_type, (380, 400), width=width, height=height, batch_size=1)
    return checkpoint, pos, neg, latent


def cfg_schedule(object_info: dict) -> dict:
    graph = Graph(object_info)
    checkpoint, pos, neg, latent = text_to_image_base(
        graph, "a photo of a red fox in a snowy forest, detailed fur, soft light", "blurry, low quality"
    )
    scheduled = graph.add(
        "DNPG_CFGSchedule", (800, 420), model=checkpoint.out("MODEL"), kind="linear", progress="timestep"
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


FOX = "a photo of a red fox in a snowy forest, detailed fur, soft light"
CAPTIONER = "Salesforce/blip-image-captioning-base"


def dns_branch(graph: Graph, checkpoint, pos, empty, latent, y: int = 60):
    """DNS Guidance -> KSampler -> VAE Decode -> Preview: the diffusion-negative image of p."""
    dns = graph.add("DNPG_DNSGuidance", (800, y + 420), model=checkpoint.out("MODEL"), dns_scale=0.0)
    sampler = graph.add(
        "KSampler",
        (1160, y),
        title="KSampler (DNS)",
        model=dns.out(0),
        positive=pos.out(0),
        negative=empty.out(0),
        latent_image=latent.out(0),
        seed=42,
        steps=20,
        cfg=7.0,
        sampler_name="euler",
        scheduler="normal",
        denoise=1.0,
    )
    decoded = graph.add("VAEDecode", (1520, y), size=(220, 100), samples=sampler.out(0), vae=checkpoint.out("VAE"))
    graph.add("PreviewImage", (1520, y + 140), title="DNS image", size=(300, 320), images=decoded.out(0))
    return decoded


def final_branch(
    graph: Graph, model, vae, pos, neg, latent, pos_xy: tuple, prefix: str, title: str, sampling: dict = SD15_SAMPLING
):
    """KSampler -> VAE Decode -> Save Image at seed 42 (the seed of every sampler in the shipped graphs)."""
    x, y = pos_xy
    sampler = graph.add(
        "KSampler",
        (x, y),
        title=title,
        model=model,
        positive=pos,
        negative=neg,
        latent_image=latent.out(0),
        seed=42,
        denoise=1.0,
        **sampling,
    )
    decoded = graph.add("VAEDecode", (x + 360, y), size=(220, 100), samples=sampler.out(0), vae=vae)
    graph.add("SaveImage", (x + 600, y), size=(360, 400), images=decoded.out(0), filename_prefix=prefix)


def dnp_manual(object_info: dict) -> dict:
    graph = Graph(object_info)
    checkpoint, pos, empty, latent = text_to_image_base(graph, FOX, "")
    graph.nodes[2]["title"] = "Empty prompt (DNS negative)"
    dns_branch(graph, checkpoint, pos, empty, latent)
    n_star = graph.add(
        "CLIPTextEncode",
        (1880, 60),
        title="n*: describe the DNS image",
        size=(380, 140),
        text="a dark blurry abstract pattern, dull colors",
        clip=checkpoint.out("CLIP"),
    )
    final_branch(
        graph,
        checkpoint.out("MODEL"),
        checkpoint.out("VAE"),
        pos.out(0),
        n_star.out(0),
        latent,
        (1880, 260),
        "dnpg_dnp_manual",
        "KSampler (p, n*)",
    )
    graph.add(
        "Note",
        (20, 320),
        size=(340, 300),
        text="Manual DNP (Desai & Vasconcelos 2024)\n\n"
        "1. The top KSampler draws the DNS image: what the model finds LEAST like your prompt p (DNS Guidance "
        "steers away from p; keep the negative prompt EMPTY).\n"
        "2. Look at the DNS image and describe it in the 'n*' box (a few words).\n"
        "3. The second KSampler generates with p and n* as negative, same seed.\n\n"
        "Run once, read the DNS image, type n*, run again (the DNS part is cached).",
    )
    return graph.to_json()


def dnp_auto(object_info: dict) -> dict:
    graph = Graph(object_info)
    checkpoint, pos, empty, latent = text_to_image_base(graph, FOX, "")
    graph.nodes[2]["title"] = "Empty prompt (DNS negative)"
    dns_image = dns_branch(graph, checkpoint, pos, empty, latent)
    captioner = graph.add("DNPG_CaptionerLoader", (1880, 60), captioner_name=CAPTIONER, dtype="auto", keep_loaded=False)
    caption = graph.add(
        "DNPG_CaptionImage", (1880, 220), captioner=captioner.out(0), image=dns_image.out(0), max_new_tokens=40
    )
    n_star = graph.add(
        "DNPG_DNPNegativePrompt",
        (2240, 60),
        caption=caption.out("caption"),
        user_negative="blurry, low quality",
        mode="append",
        max_tokens=-1,
        clip=checkpoint.out("CLIP"),
    )
    graph.add("PreviewAny", (2240, 300), title="n*", size=(360, 160), source=n_star.out(0))
    negative = graph.add(
        "CLIPTextEncode", (2640, 60), title="Negative prompt n*", text=n_star.out(0), clip=checkpoint.out("CLIP")
    )
    final_branch(
        graph,
        checkpoint.out("MODEL"),
        checkpoint.out("VAE"),
        pos.out(0),
        negative.out(0),
        latent,
        (2640, 260),
        "dnpg_dnp_auto",
        "KSampler (p, n*)",
    )
    graph.add(
        "Note",
        (20, 320),
        size=(340, 300),
        text="Auto-DNP (Desai & Vasconcelos 2024)\n\n"
        "DNS image -> caption -> n* -> final image.\n"
        "1. DNS Guidance makes the top KSampler draw what the model finds least like p (negative EMPTY).\n"
        "2. The captioner describes that image; DNP Negative Prompt cleans the caption and appends it to your "
        "own negative.\n"
        "3. The last KSampler generates with (p, n*), same seed.\n\n"
        "The captioner (BLIP base, ~1 GB) downloads into models/captioners/ on first use; BLIP-2 and LLaVA "
        "are in the list too.",
    )
    return graph.to_json()


def auto_dnp_comparison(
    graph: Graph, model, clip, vae, latent_type: str, sampling: dict, side: int, left_y: int, prefix: str
):
    """Auto-DNP and a plain generation of one prompt at one seed and settings, saved as prefix_dnp and
    prefix_plain; left_y: the first free place under the loaders in the left column (for the captioner)."""
    prompt = graph.add("PrimitiveStringMultiline", (380, 60), title="Prompt p", size=(380, 140), value=FOX)
    user_negative = graph.add(
        "PrimitiveStringMultiline", (380, 240), title="Your negative", size=(380, 100), value="blurry, low quality"
    )
    latent = graph.add(latent_type, (380, 400), width=side, height=side, batch_size=1)
    captioner = graph.add(
        "DNPG_CaptionerLoader", (20, left_y), captioner_name=CAPTIONER, dtype="auto", keep_loaded=False
    )
    auto = graph.add(
        "DNPG_AutoDNP",
        (800, 60),
        size=(340, 520),
        model=model,
        clip=clip,
        vae=vae,
        captioner=captioner.out(0),
        prompt=prompt.out(0),
        user_negative=user_negative.out(0),
        mode="append",
        seed=42,
        width=side,
        height=side,
        dns_steps=0,
        dns_size=0,
        **sampling,
    )
    graph.add("PreviewImage", (1180, 620), title="DNS image", size=(300, 320), images=auto.out("dns_image"))
    graph.add("PreviewAny", (1520, 620), title="n*", size=(360, 160), source=auto.out("negative_prompt"))
    final_branch(
        graph,
        model,
        vae,
        auto.out("positive"),
        auto.out("negative"),
        latent,
        (1180, 60),
        f"{prefix}_dnp",
        "KSampler (p, n*)",
        sampling,
    )
    plain_pos = graph.add("CLIPTextEncode", (800, 640), title="p", text=prompt.out(0), clip=clip)
    plain_neg = graph.add("CLIPTextEncode", (800, 800), title="your negative", text=user_negative.out(0), clip=clip)
    final_branch(
        graph,
        model,
        vae,
        plain_pos.out(0),
        plain_neg.out(0),
        latent,
        (1180, 1000),
        f"{prefix}_plain",
        "KSampler (plain)",
        sampling,
    )


COMPARE_NOTE = (
    "Plain vs auto-DNP, same seed\n\n"
    "Auto-DNP draws the DNS image of p, captions it and returns (p, n*) where n* = your negative + the "
    "caption. Top: generated with (p, n*). Bottom: plain (p, your negative). Same seed, same settings.\n\n"
    "dns_steps / dns_size make the DNS run cheaper; the node shows its cost."
)


def dnp_auto_compare(object_info: dict) -> dict:
    graph = Graph(object_info)
    checkpoint = sd15_checkpoint(graph)
    model, clip, vae = checkpoint.out("MODEL"), checkpoint.out("CLIP"), checkpoint.out("VAE")
    auto_dnp_comparison(graph, model, clip, vae, "EmptyLatentImage", SD15_SAMPLING, 512, 320, "dnpg")
    graph.add("Note", (20, 480), size=(340, 260), text=COMPARE_NOTE)
    return graph.to_json()


def chroma_loaders(graph: Graph):
    """Chroma's three files: the diffusion model, its T5-XXL text encoder (CLIPLoader type chroma), the Flux VAE."""
    links = CHROMA_MODEL_LINKS
    unet = model_loader(graph, "UNETLoader", (20, 120), "unet_name", links["UNETLoader"], weight_dtype="default")
    clip = model_loader(graph, "CLIPLoader", (20, 260), "clip_name", links["CLIPLoader"], type="chroma")
    vae = model_loader(graph, "VAELoader", (20, 420), "vae_name", links["VAELoader"])
    return unet.out(0), clip.out(0), vae.out(0)


def dnp_auto_compare_chroma(object_info: dict) -> dict:
    graph = Graph(object_info)
    model, clip, vae = chroma_loaders(graph)
    auto_dnp_comparison(graph, model, clip, vae, "EmptySD3LatentImage", CHROMA_SAMPLING, 1024, 540, "dnpg_chroma")
    graph.add(
        "Note",
        (20, 700),
        size=(340, 420),
        text=COMPARE_NOTE + "\n\nChroma is Flux-architecture without Flux's guidance distillation: it samples with "
        "true CFG (cfg 4, a real negative prompt), so n* works as on SD models. At dns_size 0 the DNS run costs "
        "one full 1024 px generation; dns_size 512 makes it about a quarter of that.\n\n"
        "Files: Chroma1-HD.safetensors in models/diffusion_models, t5xxl_fp8_e4m3fn_scaled.safetensors in "
        "models/text_encoders, ae.safetensors (the Flux VAE) in models/vae.",
    )
    return graph.to_json()


def plain_and_scfg_branches(
    graph: Graph, checkpoint, pos, neg, latent, patched, prompt: str, sampling: dict, prefix: tuple, step: int
):
    """Plain CFG and S-CFG (`patched`) at one seed and `sampling`, saved as prefix[0] and prefix[1], and
    S-CFG Regions at `step` on the same inputs, previewed."""
    for model, pos_xy, name, title in (
        (checkpoint.out("MODEL"), (1180, 60), prefix[0], "KSampler (plain CFG)"),
        (patched, (1180, 520), prefix[1], "KSampler (S-CFG)"),
    ):
        final_branch(graph, model, checkpoint.out("VAE"), pos.out(0), neg.out(0), latent, pos_xy, name, title, sampling)
    regions = graph.add(
        "DNPG_SCFGRegions",
        (800, 820),
        size=(340, 360),
        model=patched,
        positive=pos.out(0),
        negative=neg.out(0),
        latent_image=latent.out(0),
        seed=42,
        step=step,
        clip=checkpoint.out("CLIP"),
        prompt=prompt,
        **sampling,
    )
    graph.add("PreviewImage", (1180, 980), title="S-CFG regions and rate", size=(560, 480), images=regions.out(0))


def scfg_compare(object_info: dict) -> dict:
    graph = Graph(object_info)
    checkpoint, pos, neg, latent = text_to_image_base(graph, FOX, "blurry, low quality")
    patched = graph.add(
        "DNPG_SCFG",
        (800, 480),
        size=(340, 300),
        model=checkpoint.out("MODEL"),
        layers="auto (1/4 + 1/8)",
        rate_min=0.8,
        rate_max=3.0,
        scale_cap=15.0,
        start=0.0,
        end=1.0,
        self_completion=True,
        completion="code",
        reference="uncond",
    )
    plain_and_scfg_branches(
        graph, checkpoint, pos, neg, latent, patched.out(0), FOX, SD15_SAMPLING, ("dnpg_plain_cfg", "dnpg_scfg"), 10
    )
    graph.add(
        "Note",
        (20, 320),
        size=(340, 300),
        text="S-CFG (Shen et al., CVPR 2024) vs plain CFG, same seed\n\n"
        "S-CFG splits the image into the regions of the prompt's tokens (from the UNet's attention maps) at "
        "every step and rescales the guidance per region, so every object gets about the guidance strength "
        "of the main subject.\n\n"
        "S-CFG Regions shows the regions and the rate at one step (set 'step'); give it the KSampler's inputs "
        "and the prompt text for the legend. Needs cfg > 1; SD1.x, SD2.x, SDXL.",
    )
    return graph.to_json()


FOX_AND_OWL = "a photo of a red fox and a snowy owl on a mossy log in a winter forest, detailed fur and feathers"


def scfg_compare_sd35(object_info: dict) -> dict:
    graph = Graph(object_info)
    checkpoint, pos, neg, latent = text_to_image_base(
        graph, FOX_AND_OWL, "", 1024, 1024, SD35_MODEL_LINK, "EmptySD3LatentImage"
    )
    graph.nodes[2]["title"] = "Negative prompt (empty)"
    scheduled = graph.add(
        "DNPG_CFGSchedule", (800, 60), size=(340, 300), model=checkpoint.out("MODEL"), kind="clamp-linear"
    )
    patched = graph.add("DNPG_SCFG", (800, 400), size=(340, 380), model=scheduled.out("MODEL"))
    plain_and_scfg_branches(
        graph,
        checkpoint,
        pos,
        neg,
        latent,
        patched.out(0),
        FOX_AND_OWL,
        SD35_SAMPLING,
        ("dnpg_sd35_plain", "dnpg_sd35_scfg"),
        20,
    )
    graph.add(
        "Note",
        (20, 320),
        size=(340, 420),
        text="S-CFG (Shen et al., CVPR 2024) vs plain CFG on SD3.5 Medium, same seed\n\n"
        "Top: plain CFG, as SD3.5 is usually run (cfg 4.5, 40 steps, euler / sgm_uniform, empty negative). "
        "Bottom: the same sampler on CFG Schedule -> S-CFG. The schedule (clamp-linear) raises the scale over "
        "the run from 2 to 2*cfg - 1 = 8, averaging about cfg; S-CFG then rescales the guidance per region "
        "of the prompt's tokens, read from the MMDiT's attention between image and text, so the owl gets "
        "about the guidance of the fox. Set the schedule's kind to 'static' to see S-CFG alone.\n\n"
        "S-CFG Regions shows the regions and the rate at one step (set 'step'); give it the KSampler's inputs "
        "and the prompt text for the legend.\n\n"
        "File: sd3.5_medium_incl_clips_t5xxlfp8scaled.safetensors (all-in-one: MMDiT-X, CLIP-L, CLIP-G, "
        "T5-XXL fp8, VAE) in models/checkpoints.",
    )
    return graph.to_json()


def loss_guidance_compare(object_info: dict) -> dict:
    graph = Graph(object_info)
    checkpoint, pos, neg, latent = text_to_image_base(graph, FOX, "blurry, low quality")
    clip = graph.add("DNPG_GuidanceClipLoader", (20, 640), clip_name="openai/clip-vit-base-patch32", dtype="auto")
    loss = graph.add(
        "DNPG_ClipTextLoss",
        (380, 560),
        size=(380, 160),
        guidance_clip=clip.out(0),
        text="a vivid orange fox, bright sunlight",
        weight=1.0,
    )
    guided = graph.add(
        "DNPG_LossGuidance",
        (800, 480),
        size=(340, 420),
        model=checkpoint.out("MODEL"),
        losses=loss.out(0),
        vae=checkpoint.out("VAE"),
        scale=0.005,
        step_rule="polyak",
        gradient="x0 estimate",
        decoder="taesd",
        augmentations=10,
        augmentation_strength=1.0,
        start=0.0,
        end=0.8,
        time_travel_repeats=1,
        time_travel_start=0.2,
        time_travel_end=0.7,
        progress_source="timestep",
    )
    final_branch(
        graph,
        checkpoint.out("MODEL"),
        checkpoint.out("VAE"),
        pos.out(0),
        neg.out(0),
        latent,
        (1180, 60),
        "dnpg_plain_cfg",
        "KSampler (plain CFG)",
    )
    final_branch(
        graph,
        guided.out(0),
        checkpoint.out("VAE"),
        pos.out(0),
        neg.out(0),
        latent,
        (1180, 520),
        "dnpg_loss_guided",
        "KSampler (CLIP-guided)",
    )
    graph.add(
        "Note",
        (20, 800),
        size=(340, 440),
        text="Loss guidance (Shen et al., NeurIPS 2024) vs plain CFG, same seed\n\n"
        "At every step in the window the x0 estimate is decoded and CLIP compares it with the CLIP Text Loss "
        "text; the sampler is nudged down that loss's gradient (Polyak step, 10 random augmentations).\n\n"
        "scale is the Polyak eta: start around 0.002-0.02 for CLIP losses at 512 px; too large gives burnt "
        "colours or NaN (the node then says so). time_travel_repeats > 1 repeats steps (slower, stronger). "
        "The CLIP model (~600 MB) downloads into models/clip_guidance/ on first use.\n\n"
        "decoder = taesd: the loss sees the x0 estimate through ComfyUI's tiny preview decoder, a fraction of the "
        "VAE's cost. Put taesd_decoder.pth (SD1.x / SD2.x; from github.com/madebyollin/taesd) in models/vae_approx. "
        "decoder = vae is exact but several times slower; latent preview is nearly free and enough for colour and "
        "brightness targets, not for CLIP.",
    )
    return graph.to_json()


WORKFLOWS = {
    "cfg_schedule.json": cfg_schedule,
    "dnp_manual.json": dnp_manual,
    "dnp_auto.json": dnp_auto,
    "dnp_auto_compare.json": dnp_auto_compare,
    "dnp_auto_compare_chroma.json": dnp_auto_compare_chroma,
    "scfg.json": scfg_compare,
    "scfg_compare_sd35.json": scfg_compare_sd35,
    "loss_guidance.json": loss_guidance_compare,
}


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
