"""Fixtures: the real ComfyUI provisioned by scripts/provision.sh, in-process and as a server.

Run the suite with `bash scripts/test.sh`, which provisions ComfyUI and sets the DNPG_* variables.
"""

import os
import socket
import sys

import pytest

PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARTIFACTS = os.environ.get("DNPG_ARTIFACTS", os.path.join(PACK_DIR, "test-artifacts"))

sys.path.append(PACK_DIR)  # `import guidance` (ComfyUI-free maths); appended so ComfyUI's `nodes` wins
sys.path.insert(0, os.path.join(PACK_DIR, "scripts"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import comfy_inprocess  # noqa: E402

TINY_CHECKPOINT = comfy_inprocess.TINY_CHECKPOINT


def _require_comfy() -> None:
    try:
        comfy_inprocess.comfy_dir()
    except RuntimeError as error:
        pytest.exit(str(error), returncode=2)


@pytest.fixture(scope="session")
def comfy():
    """In-process ComfyUI (CPU) with the test model paths and this pack imported."""
    _require_comfy()
    return comfy_inprocess.boot()


@pytest.fixture(scope="session")
def tiny(comfy):
    """The tiny random SD1.5 checkpoint: model, clip, vae, and two encoded prompts."""
    return comfy_inprocess.load_tiny(comfy)


@pytest.fixture(scope="session")
def empty(comfy, tiny):
    """The encoding of the empty prompt (the DNS negative)."""
    return comfy.nodes.CLIPTextEncode().encode(tiny.clip, "")[0]


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """The real ComfyUI server (main.py --cpu) on a free loopback port, stopped at the end."""
    _require_comfy()
    from comfy_server import ComfyServer

    os.makedirs(ARTIFACTS, exist_ok=True)
    instance = ComfyServer(str(tmp_path_factory.mktemp("comfy-output")), os.path.join(ARTIFACTS, "comfyui-server.log"))
    client = instance.start()
    client.object_info = client.get("/object_info")
    client.server = instance
    try:
        yield client
    finally:
        instance.stop()


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt fails the test; the Hugging Face hub client is offline."""
    import huggingface_hub.constants

    def refuse(*args, **kwargs):
        raise AssertionError("the code under test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
