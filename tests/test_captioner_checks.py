"""Loading that never fails silently: incomplete folders, malformed JSON, old transformers, odd images,
a tokenizer that lost its vocabulary, and the unload path, through the real loaders and tiny models."""

import os
import re
import shutil

import make_tiny_captioners
import pytest
import torch
from conftest import PACK_DIR


@pytest.fixture(scope="module")
def models(comfy, tmp_path_factory):
    root = tmp_path_factory.mktemp("checked-models")
    torch.manual_seed(0)
    make_tiny_captioners.build_blip(str(root / "captioners" / "check-blip"))
    make_tiny_captioners.BUILDERS["qwen3-vl"](str(root / "captioners" / "check-qwen3-vl"))
    make_tiny_captioners.build_clip(str(root / "clip_guidance" / "check-clip"))
    comfy.folder_paths.add_model_folder_path("captioners", str(root / "captioners"), is_default=True)
    comfy.folder_paths.add_model_folder_path("clip_guidance", str(root / "clip_guidance"), is_default=True)
    return root


def variant(models, kind, name, new_name):
    target = models / kind / new_name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(models / kind / name, target)
    return target


def load_captioner(comfy, name):
    return comfy.pack.nodes.captioning.load_captioner(name, "fp32")


def load_clip(comfy, name):
    return comfy.pack.nodes.guidance_clip.load_guidance_clip(name, "fp32")


def drop_tokenizer(folder):
    for file in ("tokenizer.json", "vocab.txt", "vocab.json", "merges.txt"):
        if (folder / file).exists():
            (folder / file).unlink()


def test_captioner_without_tokenizer_files_names_what_is_missing(comfy, models, no_network):
    drop_tokenizer(variant(models, "captioners", "check-blip", "no-tokenizer-blip"))
    with pytest.raises(FileNotFoundError) as error:
        load_captioner(comfy, "no-tokenizer-blip")
    message = str(error.value)
    assert "Captioner 'no-tokenizer-blip'" in message and "incomplete" in message
    assert "the tokenizer (tokenizer.json" in message and "weights" not in message


def test_captioner_without_image_processor_names_it(comfy, models, no_network):
    target = variant(models, "captioners", "check-blip", "no-processor-blip")
    (target / "processor_config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"no the image processor \(preprocessor_config.json"):
        load_captioner(comfy, "no-processor-blip")


def test_guidance_clip_without_tokenizer_files_names_what_is_missing(comfy, models, no_network):
    drop_tokenizer(variant(models, "clip_guidance", "check-clip", "no-tokenizer-clip"))
    with pytest.raises(FileNotFoundError, match=r"Guidance CLIP 'no-tokenizer-clip' at .* is incomplete.*tokenizer"):
        load_clip(comfy, "no-tokenizer-clip")


def test_a_tokenizer_that_maps_every_text_to_the_same_ids_is_refused(comfy, models, no_network):
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers import models as token_models

    target = variant(models, "clip_guidance", "check-clip", "blank-vocab-clip")
    blank = Tokenizer(token_models.WordLevel(vocab={"<pad>": 0, "<unk>": 1, "<s>": 2, "</s>": 3}, unk_token="<unk>"))
    blank.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    blank.save(str(target / "tokenizer.json"))
    with pytest.raises(ValueError, match="maps different texts to the same ids"):
        load_clip(comfy, "blank-vocab-clip")


@pytest.mark.parametrize("file", ["config.json", "processor_config.json", "tokenizer_config.json"])
def test_malformed_json_names_the_file_and_the_model(comfy, models, no_network, file):
    target = variant(models, "captioners", "check-blip", "bad-json-blip")
    (target / file).write_text('{"model_type": "blip",')
    with pytest.raises(ValueError) as error:
        load_captioner(comfy, "bad-json-blip")
    message = str(error.value)
    assert f"{file} in {target} is not valid JSON" in message and "Captioner 'bad-json-blip'" in message


def test_malformed_preprocessor_config_of_a_guidance_clip_names_file_and_model(comfy, models, no_network):
    target = variant(models, "clip_guidance", "check-clip", "bad-json-clip")
    (target / "preprocessor_config.json").write_text("{not json")
    with pytest.raises(
        ValueError, match=r"Guidance CLIP 'bad-json-clip': preprocessor_config.json in .* not valid JSON"
    ):
        load_clip(comfy, "bad-json-clip")


def test_an_old_transformers_is_named_as_such_not_as_a_corrupt_file(comfy, models, no_network, monkeypatch):
    checks = comfy.pack.nodes.model_checks
    monkeypatch.setattr(checks, "transformers_version", lambda: "4.50.3")
    with pytest.raises(RuntimeError) as error:
        load_captioner(comfy, "check-blip")
    message = str(error.value)
    assert f"BLIP captioners need transformers >= {checks.PACK_MIN_TRANSFORMERS}" in message
    assert "this ComfyUI has transformers 4.50.3" in message and "corrupt" not in message


def test_a_transformers_without_the_family_class_is_named_as_such(comfy, models, no_network, monkeypatch):
    checks = comfy.pack.nodes.model_checks
    real = checks.transformers_has
    monkeypatch.setattr(checks, "transformers_has", lambda name: name != "BlipForConditionalGeneration" and real(name))
    with pytest.raises(RuntimeError, match="lacks BlipForConditionalGeneration"):
        load_captioner(comfy, "check-blip")


def test_a_family_newer_than_the_pack_floor_names_its_own_release(comfy, models, no_network, monkeypatch):
    """Qwen3-VL's classes came in transformers 4.57: on 4.56 (the pack's floor) the message says so."""
    monkeypatch.setattr(comfy.pack.nodes.model_checks, "transformers_version", lambda: "4.56.2")
    with pytest.raises(RuntimeError) as error:
        load_captioner(comfy, "check-qwen3-vl")
    message = str(error.value)
    assert "Qwen3-VL captioners need transformers >= 4.57.0; this ComfyUI has transformers 4.56.2" in message
    assert 'pip install -U "transformers>=4.57.0"' in message and "corrupt" not in message


def test_the_declared_transformers_floor_is_the_one_the_loader_checks(comfy):
    floor = comfy.pack.nodes.model_checks.PACK_MIN_TRANSFORMERS
    requirements = open(os.path.join(PACK_DIR, "requirements.txt")).read()
    pyproject = open(os.path.join(PACK_DIR, "pyproject.toml")).read()
    assert re.search(rf"^transformers>={re.escape(floor)}$", requirements, re.M)
    assert f'"transformers>={floor}"' in pyproject
    for family in comfy.pack.nodes.captioner_families.FAMILIES.values():
        for package in family.packages:  # what a family's processor imports is declared too
            assert re.search(rf"^{package}\b", requirements, re.M) and f'"{package}' in pyproject, package


def caption(comfy, captioner, images):
    return comfy.pack.nodes.dnp.CaptionImage().caption(captioner, images, "", 6)["result"][1]


def test_a_grey_one_channel_image_captions_like_its_rgb_copy(comfy, models, no_network):
    captioner = load_captioner(comfy, "check-blip")
    grey = torch.rand(2, 32, 40, 1, generator=torch.Generator().manual_seed(4))
    assert caption(comfy, captioner, grey) == caption(comfy, captioner, grey.expand(-1, -1, -1, 3))
    rgba = torch.cat([grey.expand(-1, -1, -1, 3), torch.zeros_like(grey)], dim=-1)
    assert caption(comfy, captioner, rgba) == caption(comfy, captioner, grey.expand(-1, -1, -1, 3))


def test_images_a_captioner_cannot_read_are_refused_clearly(comfy, models, no_network):
    captioner = load_captioner(comfy, "check-blip")
    with pytest.raises(ValueError, match="has 5 channels"):
        caption(comfy, captioner, torch.rand(1, 16, 16, 5))
    with pytest.raises(ValueError, match="NaN or infinite"):
        caption(comfy, captioner, torch.full((1, 16, 16, 3), float("nan")))


def test_unload_uses_comfyuis_own_helper_where_the_release_has_it(comfy, models, no_network, monkeypatch):
    import comfy.model_management as mm

    captioning = comfy.pack.nodes.captioning
    calls = []
    helper = getattr(mm, "unload_model_and_clones", None)
    if helper is not None:
        monkeypatch.setattr(
            mm, "unload_model_and_clones", lambda model, **kw: calls.append(model) or helper(model, **kw)
        )
    captioner = captioning.load_captioner("check-blip", "fp32", keep_loaded=True)
    captioning.caption(captioner, torch.rand(1, 16, 16, 3), max_new_tokens=2)
    assert any(loaded.model is captioner.patcher for loaded in mm.current_loaded_models)
    captioning.unload(captioner)
    assert all(loaded.model is not captioner.patcher for loaded in mm.current_loaded_models)
    assert calls == ([captioner.patcher] if helper is not None else [])
