"""Loss Guidance's decoder = taesd: ComfyUI's tiny preview decoders (models/vae_approx) as the image
losses' decoder, on tiny random TAESD files built with ComfyUI's TAESD class in a temporary vae_approx.

Expectations come from ComfyUI itself: VAELoader's TAESD (with the scale and shift nodes.py gives it)
decoding the raw latent, and ComfyUI's model management's list of loaded models."""

import os

import comfy_inprocess
import make_tiny_taesd
import pytest
import torch

RED = (1.0, 0.0, 0.0)
STEPS = 6
# (tiny model, TAESD file stem, VAELoader name): the families the decoder covers.
FAMILIES = [
    ("sd15", "taesd_decoder", "taesd"),
    ("sdxl", "taesdxl_decoder", "taesdxl"),
    ("sd3", "taesd3_decoder", "taesd3"),
    ("flux_dev", "taef1_decoder", "taef1"),
    ("chroma", "taef1_decoder", "taef1"),
]


@pytest.fixture
def vae_approx(comfy, tmp_path, monkeypatch):
    """ComfyUI's vae_approx folder list replaced by one empty temporary folder; returns a function that
    writes a tiny random TAESD there (decoder and, for VAELoader, encoder)."""
    folder_paths = comfy.folder_paths
    folder = tmp_path / "vae_approx"
    folder.mkdir()
    _, extensions = folder_paths.folder_names_and_paths["vae_approx"]
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "vae_approx", ([str(folder)], extensions))
    monkeypatch.delitem(folder_paths.filename_list_cache, "vae_approx", raising=False)

    def install(stem, seed=0):
        path = make_tiny_taesd.write_taesd(str(folder), stem, seed, encoder=True)
        folder_paths.filename_list_cache.pop("vae_approx", None)
        return path

    install.folder = str(folder)
    return install


@pytest.fixture(scope="module")
def models(comfy, tiny):
    """Tiny models by name: (ModelPatcher, positive, negative, latent)."""
    import tiny_dits
    import tiny_models

    cache = {}

    def get(name):
        if name not in cache:
            if name == "sd15":
                cache[name] = (tiny.model, tiny.positive, tiny.negative, torch.zeros(1, 4, 16, 16))
            elif name in ("sdxl", "sd2_v"):
                model, positive, negative = getattr(tiny_models, name)()
                cache[name] = (model, positive, negative, torch.zeros(1, 4, 16, 16))
            else:
                dit = tiny_dits.FAMILIES[name]()
                cache[name] = (dit.patcher, dit.positive, dit.negative, dit.latent)
        return cache[name]

    return get


def lg(comfy):
    return comfy.pack.nodes.loss_guidance


def loss_nodes(comfy):
    return comfy.pack.nodes.loss_nodes


def red_loss(comfy):
    return loss_nodes(comfy).ColourTargetLoss().build("#FF0000", 1.0)[0]


def guide(comfy, model, losses, scale=0.003, **options):
    node = lg(comfy).LossGuidance
    settings = {
        **comfy_inprocess.default_settings(node),
        "decoder": "taesd",
        "augmentations": 0,
        "end": 1.0,
        "scale": scale,
        **options,
    }
    return node().patch(model, losses, **settings)[0]


def sample(comfy, entry, model, steps=STEPS):
    _, positive, negative, latent = entry
    with torch.inference_mode():  # as ComfyUI's executor runs every node
        run = comfy.nodes.common_ksampler(
            model, 1, steps, 5.0, "euler", "normal", positive, negative, {"samples": latent}
        )
    return run[0]["samples"]


def comfy_taesd(comfy, name):
    """ComfyUI's own TAESD VAE (VAELoader, with its scale and shift), from the files in vae_approx."""
    return comfy.nodes.VAELoader().load_vae(name)[0]


def colour_error(vae, samples, target=RED):
    """Distance of the mean colour of ComfyUI's decode of the result to the target (not the pack's code)."""
    with torch.no_grad():
        images = vae.decode(samples).movedim(-1, 1)
    return float((images.mean(dim=(2, 3)) - torch.tensor(target)).norm(dim=1).mean())


def pack_decode(comfy, model, x0):
    taesd = comfy.pack.nodes.taesd
    return taesd.taesd_decoder(taesd.load_decoder(model))(x0)


@pytest.mark.parametrize("name, stem, loader_name", FAMILIES)
def test_decoder_gives_what_comfyuis_taesd_vae_gives_for_the_raw_latent(
    comfy, vae_approx, models, name, stem, loader_name
):
    model = models(name)[0]
    vae_approx(stem)
    latent_format = model.get_model_object("latent_format")
    x0 = torch.randn(2, latent_format.latent_channels, 6, 10, generator=torch.Generator().manual_seed(0))
    image = pack_decode(comfy, model, x0)
    expected = comfy_taesd(comfy, loader_name).decode(latent_format.process_out(x0)).movedim(-1, 1)
    assert image.shape == expected.shape == (2, 3, 48, 80)
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert torch.allclose(image, expected, atol=1e-4)


def test_gradients_flow_from_the_image_to_the_latent(comfy, vae_approx, models):
    vae_approx("taesd_decoder")
    x0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        decode = comfy.pack.nodes.taesd.taesd_decoder(comfy.pack.nodes.taesd.load_decoder(models("sd15")[0]))
    with torch.inference_mode(False), torch.enable_grad():
        leaf = x0.clone().requires_grad_(True)
        decode(leaf)[:, 0].mean().backward()
    assert torch.isfinite(leaf.grad).all() and float(leaf.grad.abs().sum()) > 0


@pytest.mark.parametrize(
    "name, stem", [("sd15", "taesd_decoder"), ("sd3", "taesd3_decoder"), ("chroma", "taef1_decoder")]
)
def test_guided_run_ends_closer_to_a_colour_target_than_plain(comfy, vae_approx, models, name, stem):
    entry = models(name)
    vae_approx(stem)
    vae = comfy_taesd(comfy, dict((s, n) for _, s, n in FAMILIES)[stem])
    plain = sample(comfy, entry, entry[0])
    guided = sample(comfy, entry, guide(comfy, entry[0], red_loss(comfy)))
    assert torch.isfinite(guided).all()
    assert colour_error(vae, guided) < colour_error(vae, plain) - 0.02


def test_comfyui_loads_the_decoder_with_the_model_for_sampling(comfy, vae_approx, models):
    import comfy.model_management as mm

    entry = models("sd15")
    vae_approx("taesd_decoder")
    guided = guide(comfy, entry[0], red_loss(comfy)).clone()
    loaded = []

    def record(args):
        loaded.extend(type(m.model.model).__name__ for m in mm.current_loaded_models)  # LoadedModel.model: a patcher
        return args["denoised"]

    guided.set_model_sampler_post_cfg_function(record)
    sample(comfy, entry, guided, steps=1)
    assert "TAESD" in loaded


def test_works_in_the_stack_with_the_other_nodes(comfy, vae_approx, models, empty):
    pack = comfy.pack.nodes
    entry = models("sd15")
    vae_approx("taesd_decoder")
    stacked = pack.schedule.CFGSchedule().patch(entry[0], "linear", "sigma position", 2.0, 2.0, 0.28, 5.42)[0]
    stacked = pack.scfg.SCFG().patch(stacked, "auto (1/4 + 1/8)", 0.8, 3.0, 15.0, 0.0, 1.0, True, "code", "uncond")[0]
    stacked = pack.dns.DNSGuidance().patch(stacked, 0.0)[0]
    guided = guide(comfy, stacked, red_loss(comfy))
    assert "loss guidance" in guided.model_options["dnp_guidance"].names()
    with_empty = (entry[0], entry[1], empty, entry[3])
    vae = comfy_taesd(comfy, "taesd")
    without, with_loss = sample(comfy, with_empty, stacked), sample(comfy, with_empty, guided)
    assert torch.isfinite(with_loss).all()
    assert colour_error(vae, with_loss) < colour_error(vae, without)


def test_a_missing_file_is_named_with_its_folder_and_download_link(comfy, vae_approx, models):
    with pytest.raises(ValueError) as error:
        guide(comfy, models("sd3")[0], red_loss(comfy))
    message = str(error.value)
    assert "taesd3_decoder.pth" in message and vae_approx.folder in message
    assert "https://github.com/madebyollin/taesd/raw/main/taesd3_decoder.pth" in message
    assert "decoder = vae" in message and "latent preview" in message


def test_a_decoder_for_other_latents_is_a_clear_error(comfy, vae_approx, models):
    """A 4-channel TAESD saved under the 16-channel Flux name."""
    path = vae_approx("taesd_decoder")
    os.replace(path, os.path.join(vae_approx.folder, "taef1_decoder.safetensors"))
    comfy.folder_paths.filename_list_cache.pop("vae_approx", None)
    with pytest.raises(ValueError, match=r"taef1_decoder.safetensors is not a TAESD decoder for 16-channel latents"):
        guide(comfy, models("flux_dev")[0], red_loss(comfy))


@pytest.mark.parametrize("name", ["qwen_image", "wan21"])
def test_families_with_only_a_video_tiny_decoder_are_refused_naming_the_alternatives(comfy, vae_approx, models, name):
    with pytest.raises(ValueError, match=r"only a video tiny decoder \(lighttaew2_1\).*decoder = vae.*latent preview"):
        guide(comfy, models(name)[0], red_loss(comfy))


def test_latent_losses_need_no_taesd_file(comfy, vae_approx, models, tiny):
    grey = torch.full((1, 128, 128, 3), 0.5)
    losses = loss_nodes(comfy).ReferenceImageLoss().build(grey, "latent", 1.0, vae=tiny.vae)[0]
    guided = sample(comfy, models("sd15"), guide(comfy, tiny.model, losses), steps=2)
    assert torch.isfinite(guided).all()
