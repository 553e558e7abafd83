"""Captioners through the real loader: tiny random BLIP, BLIP-2 (OPT, T5), Florence-2, LLaVA, LLaVA-NeXT,
Qwen2.5-VL, Qwen3-VL and SmolVLM2 in a temporary models folder."""

import os
import shutil

import make_tiny_captioners
import pytest
import torch

FAMILIES = {
    "dnpg-tiny-blip": "blip",
    "dnpg-tiny-blip2": "blip-2",
    "dnpg-tiny-blip2-t5": "blip-2",
    "dnpg-tiny-llava": "llava",
    "dnpg-tiny-llava-next": "llava_next",
    "dnpg-tiny-florence2": "florence2",
    "dnpg-tiny-qwen2.5-vl": "qwen2_5_vl",
    "dnpg-tiny-qwen3-vl": "qwen3_vl",
    "dnpg-tiny-smolvlm": "smolvlm",
}


@pytest.fixture(scope="module")
def captioners_dir(comfy, tmp_path_factory):
    root = tmp_path_factory.mktemp("models") / "captioners"
    torch.manual_seed(0)
    for name, build in make_tiny_captioners.BUILDERS.items():
        build(str(root / f"dnpg-tiny-{name}"))
    comfy.folder_paths.add_model_folder_path("captioners", str(root), is_default=True)
    return root


def loader(comfy):
    return comfy.pack.nodes.dnp.CaptionerLoader()


def images(batch=2):
    return torch.rand(batch, 48, 64, 3, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_loader_lists_and_loads_each_family(comfy, captioners_dir, no_network, name):
    assert name in comfy.pack.nodes.captioning.captioner_choices()
    captioner = loader(comfy).load(name, "fp32", False)[0]
    assert captioner.family == FAMILIES[name]


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_caption_batch_gives_one_deterministic_string_per_image(comfy, captioners_dir, no_network, name):
    captioner = loader(comfy).load(name, "fp32", False)[0]
    node = comfy.pack.nodes.dnp.CaptionImage()
    first = node.caption(captioner, images(), "What is in the image?", 8)
    again = node.caption(captioner, images(), "What is in the image?", 8)
    joined, captions = first["result"]
    assert isinstance(captions, list) and len(captions) == 2 and all(isinstance(c, str) and c for c in captions)
    assert joined == "; ".join(captions)
    assert first["ui"]["text"] == captions
    assert again["result"] == first["result"]


def test_captioner_is_unloaded_after_use_unless_kept(comfy, captioners_dir, no_network):
    import comfy.model_management as mm

    captioning = comfy.pack.nodes.captioning
    dropped = captioning.load_captioner("dnpg-tiny-blip", "fp32", keep_loaded=False)
    captioning.caption(dropped, images(1), max_new_tokens=4)
    assert all(loaded.model is not dropped.patcher for loaded in mm.current_loaded_models)
    kept = captioning.load_captioner("dnpg-tiny-blip", "fp32", keep_loaded=True)
    captioning.caption(kept, images(1), max_new_tokens=4)
    assert any(loaded.model is kept.patcher for loaded in mm.current_loaded_models)
    captioning.unload(kept)
    assert all(loaded.model is not kept.patcher for loaded in mm.current_loaded_models)


def test_missing_model_offline_names_the_folder_and_files(comfy, captioners_dir, no_network):
    with pytest.raises(FileNotFoundError) as error:
        loader(comfy).load("Salesforce/blip-image-captioning-base", "auto", False)
    message = str(error.value)
    assert "offline" in message and "config.json" in message and "safetensors" in message
    assert os.path.join(str(captioners_dir), "Salesforce", "blip-image-captioning-base") in message


def test_unknown_local_name_explains_where_models_go(comfy, captioners_dir, no_network):
    with pytest.raises(FileNotFoundError, match="is not on disk"):
        loader(comfy).load("my-captioner", "auto", False)


def copy_model(captioners_dir, name, new_name):
    target = captioners_dir / new_name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(captioners_dir / name, target)
    return target


def test_corrupt_weights_give_a_clear_error(comfy, captioners_dir, no_network):
    target = copy_model(captioners_dir, "dnpg-tiny-blip", "corrupt-blip")
    weights = target / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError, match="corrupt or incomplete"):
        loader(comfy).load("corrupt-blip", "fp32", False)


def test_pickle_only_weights_are_refused(comfy, captioners_dir, no_network):
    target = copy_model(captioners_dir, "dnpg-tiny-blip", "pickled-blip")
    (target / "model.safetensors").rename(target / "pytorch_model.bin")
    with pytest.raises(ValueError, match="only loads safetensors"):
        loader(comfy).load("pickled-blip", "fp32", False)


def test_unsupported_family_lists_the_supported_ones(comfy, captioners_dir, no_network):
    target = copy_model(captioners_dir, "dnpg-tiny-blip", "other-model")
    (target / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(ValueError, match="supported families: BLIP"):
        loader(comfy).load("other-model", "fp32", False)


def test_zero_size_image_is_a_clear_error(comfy, captioners_dir, no_network):
    captioner = loader(comfy).load("dnpg-tiny-blip", "fp32", False)[0]
    with pytest.raises(ValueError, match="the image is empty"):
        comfy.pack.nodes.dnp.CaptionImage().caption(captioner, torch.zeros(1, 0, 0, 3), "", 4)


def test_captioner_code_never_installs_packages_or_trusts_remote_code():
    """No production module runs a process or pip's API (error messages may tell the user the pip
    command to run), and none trusts remote code."""
    import re

    from conftest import PACK_DIR

    runs_something = re.compile(
        r"\bimport subprocess\b|\bfrom subprocess\b|os\.system|os\.popen|\bpip\.main|pip\._internal"
    )
    for folder in ("nodes", "guidance"):
        for name in os.listdir(os.path.join(PACK_DIR, folder)):
            if name.endswith(".py"):
                source = open(os.path.join(PACK_DIR, folder, name)).read()
                assert "trust_remote_code=True" not in source and not runs_something.search(source), name


def test_a_batch_captions_each_image_as_it_would_alone(comfy, captioners_dir, no_network):
    """Batched generation (padding, nested image lists) changes nothing: for every family the batch's
    captions equal the single-image captions, and the two different images can be told apart by at
    least one family (the tiny models are random, so one family may give both the same words)."""
    captioning = comfy.pack.nodes.captioning
    batch = images(2)
    differ = []
    for name in sorted(FAMILIES):
        captioner = captioning.load_captioner(name, "fp32", keep_loaded=True)
        together = captioning.caption(captioner, batch, max_new_tokens=6)
        alone = [captioning.caption(captioner, batch[i : i + 1], max_new_tokens=6)[0] for i in range(2)]
        captioning.unload(captioner)
        assert together == alone, name
        differ.append(together[0] != together[1])
    assert any(differ)


@pytest.mark.parametrize("name", ["dnpg-tiny-florence2", "dnpg-tiny-qwen2.5-vl", "dnpg-tiny-smolvlm"])
def test_the_question_reaches_the_model(comfy, captioners_dir, no_network, name):
    """The family's prompt is built from the question: a different instruction (chat) or task token
    (Florence-2) changes the model's input ids."""
    captioning = comfy.pack.nodes.captioning
    captioner = captioning.load_captioner(name, "fp32", keep_loaded=False)
    pictures = captioning.to_pil(images(1))
    other = "<DETAILED_CAPTION>" if captioner.family == "florence2" else "the red fox in the snow"
    default_ids = captioning._inputs(captioner, pictures, "")[0]["input_ids"]
    other_ids = captioning._inputs(captioner, pictures, other)[0]["input_ids"]
    assert not torch.equal(default_ids, other_ids) if default_ids.shape == other_ids.shape else True
    assert default_ids.shape != other_ids.shape or not torch.equal(default_ids, other_ids)


def test_florence2_in_the_remote_code_format_is_refused_naming_the_native_repositories(
    comfy, captioners_dir, no_network
):
    import json

    target = copy_model(captioners_dir, "dnpg-tiny-florence2", "microsoft-florence")
    config = json.loads((target / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_florence2.Florence2ForConditionalGeneration"}
    (target / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"remote-code Florence-2 format.*florence-community/Florence-2-base"):
        loader(comfy).load("microsoft-florence", "fp32", False)


def test_weights_of_another_layout_are_refused_not_loaded_as_random_layers(comfy, captioners_dir, no_network):
    from safetensors.torch import load_file, save_file

    target = copy_model(captioners_dir, "dnpg-tiny-qwen2.5-vl", "renamed-qwen")
    weights = load_file(target / "model.safetensors")
    save_file({f"old_port.{key}": value for key, value in weights.items()}, target / "model.safetensors")
    with pytest.raises(ValueError, match=r"do not fit transformers' native Qwen2.5-VL model \(\d+ weights missing"):
        loader(comfy).load("renamed-qwen", "fp32", False)


def test_smolvlm_without_num2words_names_the_package(comfy, captioners_dir, no_network, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "num2words" else real(name, *a))
    with pytest.raises(
        RuntimeError, match=r"SmolVLM2 captioners need the Python package\(s\) num2words.*pip install num2words"
    ):
        loader(comfy).load("dnpg-tiny-smolvlm", "fp32", False)
