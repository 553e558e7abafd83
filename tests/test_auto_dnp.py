"""Negative prompt n* from captions with the real CLIP tokenizer, and one-node Auto-DNP in real ComfyUI."""

import comfy_api_helpers as helpers
import pytest
import torch
from conftest import comfy_inprocess


@pytest.fixture(scope="module")
def tiny_blip(comfy):
    return comfy.pack.nodes.dnp.CaptionerLoader().load("dnpg-tiny-blip", "fp32", False)[0]


def test_negative_prompt_is_cut_to_the_clip_token_limit_and_says_so(comfy, tiny):
    long_caption = "a picture of " + " ".join(["red fox"] * 60)
    result = comfy.pack.nodes.dnp.DNPNegativePrompt().build(long_caption, "blurry", "append", -1, tiny.clip)
    text = result["result"][0]
    count, limit = comfy.pack.nodes.dnp.clip_token_counter(tiny.clip)
    assert limit == 75 and count(text) <= 75 < count("blurry, " + " ".join(["red fox"] * 60))
    assert text.startswith("blurry, red fox") and "truncated to 75 tokens" in result["ui"]["text"][0]


def test_negative_prompt_without_limit_keeps_the_whole_caption(comfy, tiny):
    result = comfy.pack.nodes.dnp.DNPNegativePrompt().build("There is a dark alley.", "blurry", "prepend", 0, tiny.clip)
    assert result["result"] == ("a dark alley, blurry",)


def auto_dnp(comfy, tiny, captioner, prompt="a photo of a red fox in the snow", **overrides):
    settings = dict(
        mode="append",
        seed=3,
        steps=3,
        cfg=7.0,
        sampler_name="euler",
        scheduler="normal",
        width=128,
        height=128,
        dns_steps=0,
        dns_size=0,
    )
    settings.update(overrides)
    return comfy.pack.nodes.dnp.AutoDNP().run(tiny.model, tiny.clip, tiny.vae, captioner, prompt, "blurry", **settings)


def test_auto_dnp_returns_p_n_star_and_the_dns_image(comfy, tiny, tiny_blip):
    result = auto_dnp(comfy, tiny, tiny_blip)
    positive, negative, text, image = result["result"]
    assert image.shape == (1, 128, 128, 3)
    assert text.startswith("blurry, ") and len(text) > len("blurry, ")
    assert torch.equal(
        positive[0][0], comfy.nodes.CLIPTextEncode().encode(tiny.clip, "a photo of a red fox in the snow")[0][0][0]
    )
    assert torch.equal(negative[0][0], comfy.nodes.CLIPTextEncode().encode(tiny.clip, text)[0][0][0])
    assert "of the final generation's UNet work" in result["ui"]["text"][0]


def test_auto_dnp_dns_image_is_the_dns_node_path(comfy, tiny, tiny_blip, empty):
    """The one-node version runs the same functions as DNS Guidance -> KSampler -> VAE Decode."""
    image = auto_dnp(comfy, tiny, tiny_blip)["result"][3]
    model = comfy.pack.nodes.dns.DNSGuidance().patch(tiny.model, 0.0)[0]
    positive = comfy.nodes.CLIPTextEncode().encode(tiny.clip, "a photo of a red fox in the snow")[0]
    latent = comfy.nodes.common_ksampler(model, 3, 3, 7.0, "euler", "normal", positive, empty, helpers.latent())[0]
    assert torch.allclose(image, comfy.nodes.VAEDecode().decode(tiny.vae, latent)[0], atol=1e-5)


def test_cheaper_dns_runs_smaller_and_reports_its_cost(comfy, tiny, tiny_blip):
    result = auto_dnp(comfy, tiny, tiny_blip, steps=4, width=128, height=128, dns_steps=2, dns_size=64)
    assert result["result"][3].shape == (1, 64, 64, 3)
    assert "2 steps at 64x64 = 12% of the final generation" in result["ui"]["text"][0]


def test_auto_dnp_with_an_empty_prompt_is_a_clear_error(comfy, tiny, tiny_blip):
    with pytest.raises(ValueError, match="the prompt is empty"):
        auto_dnp(comfy, tiny, tiny_blip, prompt="   ")


def test_dns_cost_formula(comfy):
    assert comfy.pack.nodes.dnp.dns_cost(20, 10, 512, 512, 256) == pytest.approx(10 * 256 * 256 / (20 * 512 * 512))
    assert comfy_inprocess.TINY_CHECKPOINT.endswith(".safetensors")
