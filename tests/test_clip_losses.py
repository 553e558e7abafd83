"""CLIP losses through the real loaders: the tiny random CLIP (transformers) that provisioning builds in
models/clip_guidance/, and a tiny ComfyUI CLIP vision model."""

import json

import comfy_api_helpers as helpers
import comfy_inprocess
import make_tiny_captioners
import pytest
import torch

TINY_CLIP = "dnpg-tiny-clip"


@pytest.fixture(scope="module")
def clip(comfy):
    return comfy.pack.nodes.guidance_clip.GuidanceClipLoader().load(TINY_CLIP, "fp32")[0]


def guide(comfy, model, losses, vae, scale=0.005):
    """Loss Guidance at a scale that stays sane on the random CLIP: its gradients are tiny, so Polyak's
    step (length eta ||eps|| / ||g||) at the node's default 0.05 ends 48x (text) / 6.6x (image) beyond the
    unguided result, which the divergence check refuses."""
    node = comfy.pack.nodes.loss_guidance.LossGuidance
    settings = {**comfy_inprocess.default_settings(node), "scale": scale, "augmentations": 2, "end": 1.0}
    return node().patch(model, losses, vae=vae, **settings)[0]


def test_loader_lists_the_local_model_and_the_hub_models(comfy):
    choices = comfy.pack.nodes.guidance_clip.clip_choices()
    assert TINY_CLIP in choices and "openai/clip-vit-base-patch32" in choices


def test_loaded_clip_is_frozen_and_made_of_plain_tensors(clip):
    parameters = list(clip.patcher.model.inner.parameters())
    assert not any(p.requires_grad or p.is_inference() for p in parameters)
    assert clip.image_size == 32


def objective_of(model):
    """The loss of an x0 estimate as the patched model's guidance term evaluates it (no augmentation)."""
    from guidance.loss_guidance import Identity

    objective = model.model_options["dnp_guidance"].get("loss guidance").params["objective"]
    return lambda x0: objective(x0, Identity())


def test_a_step_down_the_clip_text_gradient_lowers_the_clip_loss(comfy, tiny, clip):
    from guidance.loss_guidance import loss_gradient

    losses = comfy.pack.nodes.loss_nodes.ClipTextLoss().build(clip, "a red fox in the snow", 1.0)[0]
    objective = objective_of(guide(comfy, tiny.model, losses, tiny.vae))
    x0 = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(5))
    grad, before = loss_gradient(objective, x0)
    with torch.no_grad():
        after = objective(x0 - 0.05 * grad / grad.norm())
    assert grad.abs().sum() > 0 and after < before


def test_clip_text_guided_sampling_runs_and_changes_the_image(comfy, tiny, clip):
    losses = comfy.pack.nodes.loss_nodes.ClipTextLoss().build(clip, "a red fox in the snow", 1.0)[0]
    with torch.inference_mode():  # as ComfyUI's executor runs nodes
        guided = helpers.ksample(comfy, tiny, guide(comfy, tiny.model, losses, tiny.vae), steps=3)
        plain = helpers.ksample(comfy, tiny, tiny.model, steps=3)
    assert torch.isfinite(guided).all() and not torch.allclose(guided, plain, atol=1e-3)


def test_empty_text_is_refused(comfy, clip):
    with pytest.raises(ValueError, match="text is empty"):
        comfy.pack.nodes.loss_nodes.ClipTextLoss().build(clip, "  ", 1.0)


def tiny_clip_vision(tmp_path):
    """ComfyUI's own ClipVisionModel from a small config, built in inference mode as the loader node is."""
    import comfy.clip_vision
    import tiny_models

    config = dict(
        make_tiny_captioners.VISION,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        model_type="clip_vision_model",
        num_channels=3,
        projection_dim=16,
    )
    path = tmp_path / "tiny_clip_vision.json"
    path.write_text(json.dumps(config))
    with torch.inference_mode():
        vision = comfy.clip_vision.ClipVisionModel(str(path))
        tiny_models.randomise_(vision.model, torch.Generator().manual_seed(0))
    return vision


def test_differentiable_clip_vision_forward_matches_comfyui(comfy, tmp_path):
    vision = tiny_clip_vision(tmp_path)
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(6)).to(vision.dtype)
    with torch.inference_mode():
        expected = vision.model(pixel_values=pixels.clone(), intermediate_output=-2)[2]
    project = comfy.pack.nodes.clip_vision_grad.comfy_clip_vision_projection
    ours = comfy.pack.nodes.differentiable.call_differentiably(vision.model, lambda p: project(vision.model, p), pixels)
    assert torch.allclose(ours.float(), expected.float(), atol=1e-3)


def test_clip_image_loss_with_comfyui_clip_vision_guides(comfy, tiny, tmp_path):
    vision = tiny_clip_vision(tmp_path)
    assert all(p.is_inference() for p in vision.model.parameters())
    reference = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(3))
    losses = comfy.pack.nodes.loss_nodes.ClipImageLoss().build(reference, 1.0, clip_vision=vision)[0]
    with torch.inference_mode():
        guided = helpers.ksample(comfy, tiny, guide(comfy, tiny.model, losses, tiny.vae), steps=3)
        plain = helpers.ksample(comfy, tiny, tiny.model, steps=3)
    assert torch.isfinite(guided).all() and not torch.allclose(guided, plain, atol=1e-3)


def test_clip_image_loss_with_guidance_clip_runs(comfy, tiny, clip):
    reference = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(4))
    losses = comfy.pack.nodes.loss_nodes.ClipImageLoss().build(reference, 1.0, guidance_clip=clip)[0]
    guided = helpers.ksample(comfy, tiny, guide(comfy, tiny.model, losses, tiny.vae), steps=3)
    assert torch.isfinite(guided).all() and not torch.allclose(
        guided, helpers.ksample(comfy, tiny, tiny.model, steps=3)
    )


def test_clip_image_loss_needs_exactly_one_model(comfy, clip, tmp_path):
    node = comfy.pack.nodes.loss_nodes.ClipImageLoss()
    with pytest.raises(ValueError, match="exactly one of guidance_clip and clip_vision"):
        node.build(torch.rand(1, 32, 32, 3), 1.0)
    with pytest.raises(ValueError, match="exactly one"):
        node.build(torch.rand(1, 32, 32, 3), 1.0, guidance_clip=clip, clip_vision=tiny_clip_vision(tmp_path))


def test_missing_clip_offline_names_the_folder_and_files(comfy, no_network):
    with pytest.raises(FileNotFoundError) as error:
        comfy.pack.nodes.guidance_clip.GuidanceClipLoader().load("openai/clip-vit-base-patch32", "auto")
    message = str(error.value)
    assert "offline" in message and "clip_guidance" in message and "model.safetensors" in message


def test_a_folder_that_is_not_clip_is_refused(comfy, tmp_path):
    root = tmp_path / "clip_guidance"
    (root / "not-clip").mkdir(parents=True)
    (root / "not-clip" / "config.json").write_text(json.dumps({"model_type": "blip"}))
    comfy.folder_paths.add_model_folder_path("clip_guidance", str(root))
    with pytest.raises(ValueError, match="'blip' model; the loader needs a CLIP model"):
        comfy.pack.nodes.guidance_clip.GuidanceClipLoader().load("not-clip", "auto")
