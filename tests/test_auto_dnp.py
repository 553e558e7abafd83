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
    count, limit = comfy.pack.nodes.clip_tokens.clip_token_counter(tiny.clip)
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


def encode(comfy, clip, text):
    return comfy.nodes.CLIPTextEncode().encode(clip, text)[0]


def test_per_image_negatives_give_each_image_the_n_star_of_its_own_dns_image(comfy, tiny, tiny_blip):
    result = auto_dnp(comfy, tiny, tiny_blip, width=64, height=64, batch_size=2, negatives="per image")
    positive, negative, text, images = result["result"]
    assert images.shape == (2, 64, 64, 3) and not torch.allclose(images[0], images[1], atol=1e-3)
    captioning, dnp_nodes = comfy.pack.nodes.captioning, comfy.pack.nodes.dnp
    own = [captioning.caption(tiny_blip, images[i : i + 1])[0] for i in range(2)]
    expected = [dnp_nodes.negative_prompt(c, "blurry", "append", tiny.clip)[0] for c in own]
    assert text.split("\n") == expected
    assert len(negative) == 1 and negative[0][0].shape == (2, 77, 768)
    for index, n_star in enumerate(expected):
        single = encode(comfy, tiny.clip, n_star)[0]
        assert torch.equal(negative[0][0][index : index + 1], single[0])
        assert torch.equal(negative[0][1]["pooled_output"][index : index + 1], single[1]["pooled_output"])
    assert "image 0: n*: " in result["ui"]["text"][0] and "image 1: n*: " in result["ui"]["text"][0]


def test_shared_negatives_join_the_batch_captions_into_one_n_star(comfy, tiny, tiny_blip):
    positive, negative, text, images = auto_dnp(
        comfy, tiny, tiny_blip, width=64, height=64, batch_size=2, negatives="shared"
    )["result"]
    assert images.shape[0] == 2 and "\n" not in text
    assert negative[0][0].shape[0] == 1
    captions = comfy.pack.nodes.captioning.caption(tiny_blip, images)
    assert text == comfy.pack.nodes.dnp.negative_prompt("; ".join(captions), "blurry", "append", tiny.clip)[0]


def test_a_stacked_negative_samples_each_image_with_its_own_text(comfy, tiny):
    """KSampler with a batch-2 negative [n0, n1] gives image i what a batch run with n_i alone gives."""
    stack = comfy.pack.nodes.conditioning_batch.stack_conditionings
    texts = ["red car", "green forest with snow"]
    positive = encode(comfy, tiny.clip, "a photo of a cat")
    latent = {"samples": torch.zeros(2, 4, 8, 8)}

    def sample(negative):
        return comfy.nodes.common_ksampler(tiny.model, 5, 2, 7.0, "euler", "normal", positive, negative, latent)[0][
            "samples"
        ]

    stacked = sample(stack([encode(comfy, tiny.clip, text) for text in texts]))
    for index, text in enumerate(texts):
        alone = sample(encode(comfy, tiny.clip, text))
        torch.testing.assert_close(stacked[index], alone[index], atol=1e-4, rtol=1e-4)
    assert not torch.allclose(stacked[0], sample(encode(comfy, tiny.clip, texts[1]))[0], atol=1e-4)


def test_stacking_repeats_different_token_lengths_like_comfyui_and_refuses_what_it_cannot_hold(comfy):
    batching = comfy.pack.nodes.conditioning_batch
    short = [[torch.ones(1, 77, 8), {"pooled_output": torch.zeros(1, 4)}]]
    long = [[torch.full((1, 154, 8), 2.0), {"pooled_output": torch.ones(1, 4)}]]
    cond, options = batching.stack_conditionings([short, long])[0]
    assert cond.shape == (2, 154, 8) and torch.equal(cond[0], torch.ones(154, 8))
    assert torch.equal(options["pooled_output"], torch.tensor([[0.0] * 4, [1.0] * 4]))
    far = [[torch.ones(1, 77 * 5, 8), {"pooled_output": torch.ones(1, 4)}]]
    with pytest.raises(batching.CannotStack, match="too far apart"):
        batching.stack_conditionings([short, far])
    with pytest.raises(batching.CannotStack, match="options differ"):
        batching.stack_conditionings([short, [[torch.ones(1, 77, 8), {}]]])


def test_auto_dnp_refuses_an_empty_caption(comfy, tiny, tiny_blip, monkeypatch):
    monkeypatch.setattr(comfy.pack.nodes.captioning, "caption", lambda captioner, images, *a, **k: ["", "  "])
    with pytest.raises(ValueError, match=r"empty caption for DNS image\(s\) \[0, 1\]"):
        auto_dnp(comfy, tiny, tiny_blip, width=64, height=64, batch_size=2)


def test_per_image_conditioning_node_stacks_a_list_and_names_itself_on_failure(comfy, tiny):
    node = comfy.pack.nodes.dnp.PerImageConditioning()
    items = [encode(comfy, tiny.clip, text) for text in ("red car", "a dark forest")]
    stacked = node.stack(items)[0]
    assert stacked[0][0].shape == (2, 77, 768) and torch.equal(stacked[0][0][1:], items[1][0][0])
    with pytest.raises(ValueError, match="Per-Image Conditioning: the conditionings cannot be batched"):
        node.stack([items[0], [[torch.ones(1, 77 * 5, 768), {}]]])


def test_auto_dnp_on_a_flow_model_draws_its_dns_image_in_the_models_own_latents(comfy, tiny_blip):
    """SD3.5 (16-channel latents, flow sampling): the DNS run uses the model's latent format, and the DNS
    image is the decode of the same run by hand (DNS Guidance + KSampler on an EmptySD3LatentImage)."""
    from comfy_inprocess import TINY_SD35

    model, clip, vae = comfy.nodes.CheckpointLoaderSimple().load_checkpoint(
        TINY_SD35["CheckpointLoaderSimple", "ckpt_name"]
    )[:3]
    captioner = tiny_blip
    assert model.get_model_object("latent_format").latent_channels == 16
    prompt = "a photo of a red fox in the snow"
    result = comfy.pack.nodes.dnp.AutoDNP().run(
        model, clip, vae, captioner, prompt, "", "append", 3, 3, 4.5, "euler", "simple", 64, 64, 0, 0
    )
    _, _, text, image = result["result"]
    assert image.shape == (1, 64, 64, 3) and text
    empty_sd3 = torch.zeros(1, 16, 8, 8)  # what EmptySD3LatentImage gives for 64 x 64
    encode = comfy.nodes.CLIPTextEncode().encode
    dns = comfy.pack.nodes.dns.DNSGuidance().patch(model, 0.0)[0]
    with torch.inference_mode():
        by_hand = comfy.nodes.common_ksampler(
            dns, 3, 3, 4.5, "euler", "simple", encode(clip, prompt)[0], encode(clip, "")[0], {"samples": empty_sd3}
        )[0]
        decoded = comfy.nodes.VAEDecode().decode(vae, by_hand)[0]
    assert torch.allclose(image, decoded, atol=1e-5)
