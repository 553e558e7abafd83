"""nodes/model_files.download against a local fake Hugging Face hub (tests/fake_hub.py) serving a copy of
the tiny BLIP captioner: the files land, the node's bar moves forward only, a broken download leaves no
half-installed model, and offline stays a clear error."""

import os

import pytest
from fake_hub import FakeHub

REPO = "dnpg/tiny-blip"
KIND = "captioners"


@pytest.fixture
def hub(comfy, monkeypatch, tmp_path):
    """The fake hub serving REPO (two files per tree page, so paging is used), huggingface_hub pointed at
    it, and models/captioners/ a fresh temporary folder."""
    source = os.path.join(os.environ["DNPG_MODELS"], KIND, "dnpg-tiny-blip")
    root = tmp_path / "models" / KIND
    monkeypatch.setitem(comfy.folder_paths.folder_names_and_paths, KIND, ([str(root)], set()))
    with FakeHub({REPO: source}, page_size=2) as fake:
        fake.use(monkeypatch, tmp_path / "hf-home")
        fake.root = root
        fake.source = source
        yield fake


def model_files(comfy):
    return comfy.pack.nodes.model_files


def download(comfy):
    return model_files(comfy).download(KIND, REPO, "config.json and the weights")


def installed(comfy):
    return REPO in model_files(comfy).local_models(KIND)


def test_a_hub_model_is_downloaded_found_locally_and_loads(comfy, hub):
    path = download(comfy)
    assert path == str(hub.root / "dnpg" / "tiny-blip")
    for name in os.listdir(hub.source):
        with open(os.path.join(hub.source, name), "rb") as want, open(os.path.join(path, name), "rb") as got:
            assert got.read() == want.read(), name
    assert ("GET", f"/api/models/{REPO}/revision/main") in hub.requests
    assert sum(path.startswith(f"/api/models/{REPO}/tree/") for _, path in hub.requests) >= 3  # paged
    assert model_files(comfy).local_models(KIND)[REPO] == path
    assert model_files(comfy).resolve(KIND, REPO, "files") == path
    assert not [entry for entry in model_files(comfy).local_models(KIND) if entry.startswith(".")]
    hub.requests.clear()
    captioner = comfy.pack.nodes.captioning.load_captioner(REPO, "fp32")
    assert captioner.family == "blip"
    assert not hub.requests  # found on disk: no second download


@pytest.fixture
def progress(comfy):
    import comfy.utils

    values = []
    previous = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: values.append((value, total)))
    try:
        yield values
    finally:
        comfy.utils.set_progress_bar_global_hook(previous)


def test_the_node_progress_bar_only_moves_forward_and_ends_full(comfy, hub, progress):
    download(comfy)
    values = [value for value, _ in progress]
    assert {total for _, total in progress} == {100}
    assert len(set(values)) >= 2, values
    assert values == sorted(values), values
    assert values[-1] == 100


@pytest.mark.parametrize("failure", ["cut", "500"])
def test_a_broken_weights_download_leaves_no_half_installed_model(comfy, hub, failure):
    if failure == "cut":
        hub.cut["model.safetensors"] = 1000  # Content-Length says ~220 kB, the connection closes at 1 kB
    else:
        hub.fail["model.safetensors"] = 500
    with pytest.raises(FileNotFoundError) as error:
        download(comfy)
    message = str(error.value)
    assert f"Model '{REPO}'" in message and "download failed" in message
    assert f"https://huggingface.co/{REPO}" in message and str(hub.root / "dnpg" / "tiny-blip") in message
    assert not installed(comfy)
    assert not os.path.exists(hub.root / "dnpg" / "tiny-blip" / "config.json")
    staging = hub.root / ".downloads" / "dnpg" / "tiny-blip"
    assert (staging / "config.json").is_file()  # the finished files wait there for the next try
    hub.cut.clear()
    hub.fail.clear()  # the hub is back: the next run resumes and installs the model
    hub.requests.clear()
    assert model_files(comfy).resolve(KIND, REPO, "files") == str(hub.root / "dnpg" / "tiny-blip")
    assert ("GET", f"/{REPO}/resolve/{hub.repos[REPO][0]}/model.safetensors") in hub.requests
    assert not [path for _, path in hub.requests if path.endswith("/config.json")]
    assert installed(comfy)
    assert not staging.exists()


def test_a_hub_error_before_any_file_is_a_clear_error(comfy, hub):
    hub.fail["api"] = 500
    with pytest.raises(FileNotFoundError, match=rf"Model '{REPO}' is not on disk and the download failed"):
        download(comfy)
    assert not installed(comfy)


def test_an_unknown_repo_is_a_clear_error(comfy, hub):
    with pytest.raises(FileNotFoundError, match="Model 'dnpg/no-such-model' is not on disk and the download failed"):
        model_files(comfy).download(KIND, "dnpg/no-such-model", "files")
    assert "dnpg/no-such-model" not in model_files(comfy).local_models(KIND)


def test_a_leftover_incomplete_folder_is_replaced_by_the_download(comfy, hub):
    stale = hub.root / "dnpg" / "tiny-blip"
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"half a file")
    path = download(comfy)
    with open(os.path.join(hub.source, "model.safetensors"), "rb") as want:
        assert (stale / "model.safetensors").read_bytes() == want.read()
    assert model_files(comfy).local_models(KIND)[REPO] == path


def test_offline_names_the_target_folder_and_the_hub_page(comfy, hub, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FileNotFoundError) as error:
        model_files(comfy).resolve(KIND, REPO, "config.json and the weights")
    message = str(error.value)
    assert "offline" in message and f"https://huggingface.co/{REPO}" in message
    assert str(hub.root / "dnpg" / "tiny-blip") in message and "config.json and the weights" in message
    assert not hub.requests and not installed(comfy)
