"""Render the template-browser thumbnail of every shipped workflow, in the real ComfyUI frontend.

    python scripts/build_thumbnails.py [workflows/X.json ...] [--width 512] [--height 384]

ComfyUI serves a custom node pack's workflows/ folder as templates (app/custom_node_manager.py:
GET /workflow_templates and /api/workflow_templates/<pack folder>/<file>). The frontend's template
browser gives a custom-node template mediaSubtype "jpg" and no index suffix, so its card shows
/api/workflow_templates/<pack folder>/<name>.jpg (useTemplateWorkflows getTemplateThumbnailUrl, in
comfyui-frontend-package 1.32 and 1.49 alike): this script writes workflows/<name>.jpg beside each
workflows/<name>.json.

Each graph is loaded in the frontend served by the provisioned ComfyUI server (headless Debian
Chromium via Playwright, as tests/test_browser.py does), framed in focus mode (no menus or
sidebars), screenshotted and downscaled to a JPEG. Needs the DNPG_* variables of scripts/provision.sh.
"""

import argparse
import glob
import io
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from comfy_server import ComfyServer  # noqa: E402

PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKFLOWS = os.path.join(PACK_DIR, "workflows")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
THUMBNAIL_EXTENSION = ".jpg"  # what the frontend requests for a custom-node template
MAX_BYTES = 100_000
SETTINGS = {
    "Comfy.TutorialCompleted": True,  # no template browser on first start
    "Comfy.Workflow.ShowMissingModelsWarning": False,  # the shipped model names need not be installed
    "Comfy.Minimap.Visible": False,
    "LiteGraph.Canvas.MinFontSizeForLOD": 1,  # titles and widgets drawn at fit-view zoom
}


def thumbnail_path(workflow_path: str) -> str:
    """workflows/<name>.json -> workflows/<name>.jpg, the file the template card requests."""
    return os.path.splitext(workflow_path)[0] + THUMBNAIL_EXTENSION


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workflows", nargs="*", help="default: every workflows/*.json")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--viewport", type=int, default=1600, help="browser viewport width (4:3)")
    parser.add_argument("--fill", type=float, default=0.75, help="share of the view the graph is framed in")
    parser.add_argument("--log", default=None, help="ComfyUI server log (default: a temporary file)")
    return parser.parse_args()


def encode_jpeg(screenshot: bytes, size: tuple) -> bytes:
    """Downscale the PNG screenshot and encode it as a JPEG under MAX_BYTES."""
    from PIL import Image

    image = Image.open(io.BytesIO(screenshot)).convert("RGB").resize(size, Image.LANCZOS)
    for quality in (85, 75, 65, 55, 45):
        out = io.BytesIO()
        image.save(out, "JPEG", quality=quality, optimize=True, progressive=True)
        if out.tell() < MAX_BYTES:
            return out.getvalue()
    raise RuntimeError(f"a {size} thumbnail does not fit in {MAX_BYTES} bytes")


def open_frontend(playwright, url: str, viewport: dict):
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    tab = browser.new_page(viewport=viewport)
    tab.goto(url)
    tab.wait_for_function("window.app && window.app.graph && window.LiteGraph", timeout=120_000)
    tab.wait_for_timeout(1000)
    tab.evaluate("window.app.extensionManager.command.execute('Workspace.ToggleFocusMode')")
    return browser, tab


# Centres the graph's bounding box (nodes with their titles, and groups) in a 4:3 box of FILL of the
# view, and returns that box: the screenshot is clipped to it, so the corner overlays (canvas menu,
# focus-mode button) stay out of the thumbnail. The missing-model outline (shipped model names are
# not installed here) and the canvas info are cleared.
FIT_GRAPH = """fill => {
    const canvas = window.app.canvas, graph = window.app.graph, title = window.LiteGraph.NODE_TITLE_HEIGHT;
    const rects = graph.nodes.map(n => [n.pos[0], n.pos[1] - title, n.size[0], n.size[1] + title])
        .concat((graph.groups || graph._groups || []).map(g => [g.pos[0], g.pos[1], g.size[0], g.size[1]]));
    const left = Math.min(...rects.map(r => r[0])), top = Math.min(...rects.map(r => r[1]));
    const right = Math.max(...rects.map(r => r[0] + r[2])), bottom = Math.max(...rects.map(r => r[1] + r[3]));
    const element = canvas.canvas.getBoundingClientRect();
    const box = {width: element.width * fill, height: element.width * fill * 3 / 4};
    box.x = element.left + (element.width - box.width) / 2;
    box.y = element.top + (element.height - box.height) / 2;
    const scale = 0.96 * Math.min(box.width / (right - left), box.height / (bottom - top), 1.5);
    canvas.show_info = false;
    graph.nodes.forEach(n => { n.has_errors = false; });  // models the workflow names need not be installed
    canvas.deselectAll?.();
    canvas.ds.scale = scale;
    canvas.ds.offset[0] = element.width / (2 * scale) - (left + right) / 2;
    canvas.ds.offset[1] = element.height / (2 * scale) - (top + bottom) / 2;
    canvas.setDirty(true, true);
    return box;
}"""


def render(tab, workflow: dict, fill: float) -> bytes:
    """Load the graph, frame it and return a PNG screenshot of the framed box."""
    tab.evaluate("workflow => window.app.loadGraphData(workflow)", workflow)
    tab.wait_for_timeout(1500)
    tab.mouse.move(0, 0)  # no hover highlight
    box = tab.evaluate(FIT_GRAPH, fill)
    tab.wait_for_timeout(1000)
    return tab.screenshot(type="png", clip=box)


def main() -> int:
    args = parse_args()
    paths = [os.path.abspath(p) for p in args.workflows] or sorted(glob.glob(os.path.join(WORKFLOWS, "*.json")))
    if not os.path.exists(CHROMIUM):
        sys.exit(f"{CHROMIUM} is missing: install Debian's chromium package (scripts/provision.sh does as root)")
    from playwright.sync_api import sync_playwright

    size = (args.width, args.height)
    viewport = {"width": args.viewport, "height": args.viewport * 3 // 4}
    with tempfile.TemporaryDirectory(prefix="dnpg-thumbnails-") as scratch:
        log = args.log or os.path.join(scratch, "comfyui-server.log")
        with ComfyServer(os.path.join(scratch, "output"), log) as server:
            for key, value in SETTINGS.items():
                server.post_json(f"/settings/{key}", value)
            with sync_playwright() as playwright:
                browser, tab = open_frontend(playwright, server.base_url, viewport)
                try:
                    for path in paths:
                        with open(path) as handle:
                            workflow = json.load(handle)
                        data = encode_jpeg(render(tab, workflow, args.fill), size)
                        with open(thumbnail_path(path), "wb") as out:
                            out.write(data)
                        print(f"{os.path.relpath(thumbnail_path(path), PACK_DIR)}: {len(data) // 1024} KB")
                finally:
                    browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
