"""The shipped workflows as ComfyUI templates: every workflows/<name>.json has the thumbnail the
frontend's template browser requests for a custom-node template, /api/workflow_templates/<pack
folder>/<name>.jpg (scripts/build_thumbnails.py renders them), and the server lists and serves both."""

import glob
import hashlib
import os

import pytest
from conftest import PACK_DIR

WORKFLOWS = os.path.join(PACK_DIR, "workflows")
WORKFLOW_NAMES = sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(WORKFLOWS, "*.json")))
MAX_THUMBNAIL_BYTES = 100_000


def pack_folder_name() -> str:
    """The name of the pack's folder in ComfyUI's custom_nodes (scripts/provision.sh links it as
    dnp-guidance; a user's clone is named comfyui-dnp-guidance): the template group's name."""
    custom_nodes = os.path.join(os.environ["DNPG_COMFYUI"], "custom_nodes")
    pack = os.path.realpath(PACK_DIR)
    names = [n for n in os.listdir(custom_nodes) if os.path.realpath(os.path.join(custom_nodes, n)) == pack]
    assert len(names) == 1, f"the pack is not linked once in {custom_nodes}: {names}"
    return names[0]


def test_every_workflow_has_a_small_jpeg_thumbnail_beside_it():
    from PIL import Image

    assert WORKFLOW_NAMES
    for name in WORKFLOW_NAMES:
        path = os.path.join(WORKFLOWS, f"{name}.jpg")
        assert os.path.isfile(path), f"{name}.json has no thumbnail: run scripts/build_thumbnails.py"
        assert os.path.getsize(path) < MAX_THUMBNAIL_BYTES, path
        with Image.open(path) as image:
            assert image.format == "JPEG", path
            assert image.width >= 256 and image.height >= 192, (path, image.size)
    thumbnails = sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(WORKFLOWS, "*.jpg")))
    assert thumbnails == WORKFLOW_NAMES, "a thumbnail without its workflow"


@pytest.mark.server
def test_server_lists_every_workflow_as_a_template_and_serves_its_thumbnail(server):
    group = pack_folder_name()
    templates = server.get("/workflow_templates")
    assert sorted(templates.get(group, [])) == WORKFLOW_NAMES, templates
    for name in WORKFLOW_NAMES:
        served = server.get_bytes(f"/api/workflow_templates/{group}/{name}.jpg")
        with open(os.path.join(WORKFLOWS, f"{name}.jpg"), "rb") as handle:
            assert hashlib.sha256(served).digest() == hashlib.sha256(handle.read()).digest(), name
        assert server.get(f"/api/workflow_templates/{group}/{name}.json")["nodes"], name
