"""Every shipped workflow in the real ComfyUI frontend (headless Debian Chromium via Playwright):
it loads with no missing node types and no console errors, queues, and produces its images."""

import glob
import hashlib
import json
import os
import re
import time

import pytest
from comfy_inprocess import TINY_MODELS_BY_WORKFLOW
from conftest import ARTIFACTS, PACK_DIR, TINY_CHECKPOINT

pytestmark = pytest.mark.server

CHROMIUM = "/usr/bin/chromium"
WORKFLOW_FILES = sorted(glob.glob(os.path.join(PACK_DIR, "workflows", "*.json")))
# Model choices are picked from the combo's menu, as a user picks an installed model, by (node type,
# widget): clip_name is the Guidance CLIP Loader's CLIP and CLIPLoader's text encoder; the Chroma and
# SD3.5 graphs' loaders take their own tiny files (quick_models). Sizes and steps are typed values.
QUICK_MODELS = {
    ("CheckpointLoaderSimple", "ckpt_name"): TINY_CHECKPOINT,
    ("DNPG_CaptionerLoader", "captioner_name"): "dnpg-tiny-blip",
    ("DNPG_GuidanceClipLoader", "clip_name"): "dnpg-tiny-clip",
}
QUICK_NUMBERS = {"width": 128, "height": 128, "steps": 3}
# Console noise of the frontend itself on an offline machine without the template gallery package.
BENIGN_CONSOLE = ("Failed to load resource", "Error loading core workflow templates", "Error fetching file size")
FRONTEND_SETTINGS = {
    "Comfy.TutorialCompleted": True,  # no template browser on first start
    "Comfy.Workflow.ShowMissingModelsWarning": False,  # the tiny checkpoint replaces the workflow's
    "Comfy.Workflow.ShowMissingNodesWarning": True,
    "Comfy.Minimap.Visible": False,
    "LiteGraph.Canvas.MinFontSizeForLOD": 1,  # readable text in the screenshots at fit-view zoom
}


@pytest.fixture(scope="module")
def page(server):
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (scripts/provision.sh does as root)")
    from playwright.sync_api import sync_playwright

    for key, value in FRONTEND_SETTINGS.items():
        server.post_json(f"/settings/{key}", value)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        tab = browser.new_page(viewport={"width": 2000, "height": 1000})
        tab.console_messages = []
        tab.on("console", lambda message: tab.console_messages.append((message.type, message.text)))
        tab.on("pageerror", lambda error: tab.console_messages.append(("error", str(error))))
        tab.goto(server.base_url)
        tab.wait_for_function("window.app && window.app.graph && window.LiteGraph", timeout=120_000)
        os.makedirs(ARTIFACTS, exist_ok=True)
        with open(os.path.join(ARTIFACTS, "frontend-version.txt"), "w") as out:
            out.write(f"{tab.evaluate('window.__COMFYUI_FRONTEND_VERSION__ || null')}\n")
        try:
            yield tab
        finally:
            browser.close()


def quick_models(path) -> dict:
    return {**QUICK_MODELS, **TINY_MODELS_BY_WORKFLOW.get(os.path.basename(path), {})}


def combo_widgets(tab, keys) -> list:
    """(node id, node type, widget name) of every combo widget whose (node type, widget name) is in `keys`."""
    return tab.evaluate(
        """keys => window.app.graph.nodes.flatMap(node => (node.widgets || [])
            .filter(widget => widget.type === 'combo'
                && keys.some(([type, name]) => type === node.type && name === widget.name))
            .map(widget => [node.id, node.type, widget.name]))""",
        [list(key) for key in keys],
    )


def centre_on_node(tab, node_id) -> None:
    """Scroll the canvas to the node and let it redraw there (widget positions are set by drawing)."""
    tab.evaluate(
        """id => {
            const canvas = window.app.canvas;
            canvas.centerOnNode(window.app.graph.getNodeById(id));
            canvas.setDirty(true, true);
        }""",
        node_id,
    )
    tab.wait_for_timeout(500)


def widget_centre_on_screen(tab, node_id, widget_name) -> tuple:
    """Page coordinates of the middle of a widget of a node that is on screen."""
    return tuple(
        tab.evaluate(
            """([id, name]) => {
                const canvas = window.app.canvas, node = window.app.graph.getNodeById(id);
                const widget = node.widgets.find(w => w.name === name);
                const height = widget.computedHeight || window.LiteGraph.NODE_WIDGET_HEIGHT;
                const [x, y] = canvas.ds.convertOffsetToCanvas([node.pos[0] + node.size[0] / 2, node.pos[1] + widget.y + height / 2]);
                const rect = canvas.canvas.getBoundingClientRect();
                return [rect.left + x, rect.top + y];
            }""",
            [node_id, widget_name],
        )
    )


def choose_in_combo(tab, node_id, widget_name, value) -> None:
    """Click the combo widget and then the menu entry `value`, as a user picks an installed model."""
    centre_on_node(tab, node_id)
    tab.mouse.click(*widget_centre_on_screen(tab, node_id, widget_name))
    menu = tab.locator(".litecontextmenu").last
    menu.wait_for(state="visible", timeout=10_000)
    entry = menu.locator(".litemenu-entry").filter(has_text=re.compile(f"^{re.escape(value)}$"))
    offered = menu.locator(".litemenu-entry").all_text_contents()
    assert entry.count() == 1, f"{value!r} is not offered in the {widget_name} menu (it offers {offered})"
    entry.click()
    chosen = tab.evaluate(
        "([id, name]) => window.app.graph.getNodeById(id).widgets.find(w => w.name === name).value",
        [node_id, widget_name],
    )
    assert chosen == value, f"node {node_id}: choosing {value!r} in {widget_name} left {chosen!r}"


def errors_of(tab) -> list:
    return [text for kind, text in tab.console_messages if kind == "error" and not text.startswith(BENIGN_CONSOLE)]


def finished_prompts(server) -> set:
    """Prompts that ended, successfully or with an error (a failed prompt fails its test at once)."""
    ended = ("success", "error")
    return {pid for pid, entry in server.get("/history").items() if entry.get("status", {}).get("status_str") in ended}


def wait_for_new_prompt(server, before: set, timeout: float = 300.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = finished_prompts(server) - before
        if new:
            return server.get("/history")[new.pop()]
        time.sleep(0.5)
    raise TimeoutError("the prompt queued from the frontend did not finish")


def run_in_frontend(page, server, path, models, screenshot) -> dict:
    """Load the workflow, pick `models` in their menus, type the quick numbers, queue it; checks what a
    user sees (no missing nodes, no errors, every output node ran) and returns the history entry."""
    with open(path) as handle:
        workflow = json.load(handle)
    page.console_messages.clear()
    page.evaluate("workflow => window.app.loadGraphData(workflow)", workflow)
    page.wait_for_timeout(1500)
    missing = page.evaluate(
        "window.app.graph.nodes.filter(n => !window.LiteGraph.registered_node_types[n.type]).map(n => n.type)"
    )
    assert missing == []
    assert page.get_by_text("Missing Node Types").count() == 0
    for node_id, node_type, name in combo_widgets(page, models):
        choose_in_combo(page, node_id, name, models[node_type, name])
    assert page.evaluate("window.app.graph.nodes.filter(n => n.has_errors).map(n => n.type)") == []
    page.evaluate(
        """quick => window.app.graph.nodes.forEach(node => (node.widgets || []).forEach(widget => {
            if (widget.name in quick) widget.value = quick[widget.name];
        }))""",
        QUICK_NUMBERS,
    )
    before = finished_prompts(server)
    page.evaluate("window.app.queuePrompt(0, 1)")
    entry = wait_for_new_prompt(server, before)
    page.evaluate("window.app.extensionManager.command.execute('Comfy.Canvas.FitView')")
    page.wait_for_timeout(1000)
    os.makedirs(ARTIFACTS, exist_ok=True)
    page.screenshot(path=os.path.join(ARTIFACTS, f"browser-{screenshot}.png"))
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert server.output_images(entry), "the frontend's prompt produced no image"
    output_types = {t for t, info in server.object_info.items() if info.get("output_node")}
    expected = {str(node["id"]) for node in workflow["nodes"] if node["type"] in output_types}
    assert expected <= set(entry["outputs"]), "not every output node of the workflow ran"
    assert page.evaluate("window.app.graph.nodes.filter(n => n.has_errors).map(n => n.type)") == []
    assert errors_of(page) == []
    return entry


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=os.path.basename)
def test_workflow_loads_queues_and_renders_in_the_frontend(page, server, path):
    run_in_frontend(page, server, path, quick_models(path), os.path.basename(path)[:-5])


TEXT_PREVIEW = "$$node-text-preview"  # the frontend's widget for progress text (useNodeProgressText)


def text_shown_on(page, node_type) -> list:
    """The progress texts the frontend draws on the nodes of `node_type`."""
    return page.evaluate(
        """([type, name]) => window.app.graph.nodes.filter(n => n.type === type)
            .flatMap(n => (n.widgets || []).filter(w => w.name === name).map(w => String(w.value)))""",
        [node_type, TEXT_PREVIEW],
    )


def test_node_feedback_is_shown_on_the_nodes_in_the_frontend(page, server):
    """What a node tells the user reaches the stock frontend: the caption on Caption Image, n* (and a
    truncation note) on DNP Negative Prompt, the DNS cost on Auto-DNP."""
    auto = os.path.join(PACK_DIR, "workflows", "dnp_auto.json")
    run_in_frontend(page, server, auto, quick_models(auto), "feedback-dnp_auto")
    (caption,) = text_shown_on(page, "DNPG_CaptionImage")
    (report,) = text_shown_on(page, "DNPG_DNPNegativePrompt")
    assert caption.strip() and report.startswith("n*: ") and len(report) > len("n*: ")
    compare = os.path.join(PACK_DIR, "workflows", "dnp_auto_compare.json")
    run_in_frontend(page, server, compare, quick_models(compare), "feedback-dnp_auto_compare")
    (note,) = text_shown_on(page, "DNPG_AutoDNP")
    assert note.startswith("n*: ") and "DNS run:" in note and "of the final generation" in note


@pytest.mark.parametrize(
    "captioner", ["dnpg-tiny-florence2", "dnpg-tiny-qwen2.5-vl", "dnpg-tiny-qwen3-vl", "dnpg-tiny-smolvlm"]
)
def test_auto_dnp_workflow_with_each_captioner_family_picked_in_the_frontend(page, server, captioner):
    """The Captioner Loader's menu offers each family's model; the shipped graph runs with it and the
    DNP Negative Prompt node reports the n* its caption gave."""
    path = os.path.join(PACK_DIR, "workflows", "dnp_auto.json")
    models = {**quick_models(path), ("DNPG_CaptionerLoader", "captioner_name"): captioner}
    entry = run_in_frontend(page, server, path, models, f"dnp_auto-{captioner}")
    notes = [text for output in entry["outputs"].values() for text in output.get("text", [])]
    assert any(note.startswith("n*: ") and len(note.splitlines()[0]) > len("n*: ") for note in notes), notes


def test_template_browser_shows_every_workflow_with_its_thumbnail(page, server):
    """Templates (Comfy.BrowseTemplates) > Extensions > the pack's folder name: one card per shipped
    workflow, titled by its file name, whose image is the workflows/<name>.jpg the server serves."""
    from test_templates import WORKFLOW_NAMES, WORKFLOWS, pack_folder_name

    group = pack_folder_name()
    expected = {f"/api/workflow_templates/{group}/{name}.jpg" for name in WORKFLOW_NAMES}
    fetched = {}

    def on_response(response):
        path = response.url.split(server.base_url, 1)[-1]
        if path in expected:
            fetched[path] = response.status

    page.on("response", on_response)
    try:
        page.evaluate("window.app.extensionManager.command.execute('Comfy.BrowseTemplates')")
        dialog = page.get_by_role("dialog").filter(has=page.get_by_text("Extensions", exact=False)).last
        dialog.get_by_text(group, exact=True).first.click(timeout=30_000)
        cards = dialog.locator('[data-testid^="template-workflow-"]')
        page.wait_for_function(
            "n => document.querySelectorAll('[role=dialog] [data-testid^=\"template-workflow-\"]').length === n",
            arg=len(WORKFLOW_NAMES),
            timeout=30_000,
        )
        titles = sorted(title.strip() for title in cards.locator("h3").all_text_contents())
        assert titles == WORKFLOW_NAMES
        for name in WORKFLOW_NAMES:
            image = dialog.locator(f'[data-testid="template-workflow-{name}"] img').first
            image.scroll_into_view_if_needed()
            image.wait_for(state="visible", timeout=10_000)
            page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
            shown = image.evaluate(
                """async img => {
                    const bytes = await (await fetch(img.src)).arrayBuffer();
                    const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
                    return Array.from(digest, b => b.toString(16).padStart(2, '0')).join('');
                }"""
            )
            thumbnail = os.path.join(WORKFLOWS, f"{name}.jpg")
            assert os.path.isfile(thumbnail), f"{name}.json has no thumbnail: run scripts/build_thumbnails.py"
            with open(thumbnail, "rb") as handle:
                assert shown == hashlib.sha256(handle.read()).hexdigest(), f"{name}'s card shows another image"
        os.makedirs(ARTIFACTS, exist_ok=True)
        page.screenshot(path=os.path.join(ARTIFACTS, "browser-template-browser.png"))
        assert fetched == dict.fromkeys(expected, 200)
    finally:
        page.remove_listener("response", on_response)
        page.keyboard.press("Escape")
        page.wait_for_timeout(500)
