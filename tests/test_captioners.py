"""Captioners through the real loader: tiny random BLIP, BLIP-2 (OPT, T5), LLaVA and LLaVA-NeXT in a
temporary models folder."""

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
    from conftest import PACK_DIR

    for folder in ("nodes", "guidance"):
        for name in os.listdir(os.path.join(PACK_DIR, folder)):
            if name.endswith(".py"):
                source = open(os.path.join(PACK_DIR, folder, name)).read()
                assert "trust_remote_code=True" not in source and "pip install" not in source, name
