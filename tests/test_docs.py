"""The front page and the docs say what the pack has: every link resolves, every node and workflow is
listed, and no docstring points outside the repository."""

import glob
import os
import re

import pytest
from conftest import PACK_DIR

PAGES = [
    "README.md",
    "CONTRIBUTING.md",
    *sorted(os.path.relpath(p, PACK_DIR) for p in glob.glob(f"{PACK_DIR}/docs/*.md")),
]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def read(page):
    with open(os.path.join(PACK_DIR, page), encoding="utf-8") as handle:
        return handle.read()


@pytest.mark.parametrize("page", PAGES)
def test_every_relative_link_resolves(page):
    folder = os.path.dirname(os.path.join(PACK_DIR, page))
    for target in LINK.findall(read(page)):
        if not re.match(r"[a-z]+:", target):
            assert os.path.exists(os.path.normpath(os.path.join(folder, target))), f"{page}: {target}"


def test_readme_lists_every_node_and_every_workflow(comfy):
    readme = read("README.md")
    for name in comfy.pack.NODE_DISPLAY_NAME_MAPPINGS.values():
        assert f"**{name}**" in readme, name
    for path in glob.glob(os.path.join(PACK_DIR, "workflows", "*.json")):
        assert f"(workflows/{os.path.basename(path)})" in readme, os.path.basename(path)


def test_the_front_page_is_short():
    assert len(read("README.md").split()) < 1500


OUTSIDE = "/".join(("shared", "reference"))  # the working notes beside the repository, not part of it


def test_code_and_docs_never_point_outside_the_repository():
    files = glob.glob(os.path.join(PACK_DIR, "**", "*.py"), recursive=True) + [os.path.join(PACK_DIR, p) for p in PAGES]
    for path in files:
        with open(path, encoding="utf-8") as handle:
            assert OUTSIDE not in handle.read(), os.path.relpath(path, PACK_DIR)
