"""A small client for a running ComfyUI server (stdlib only), and the UI -> API workflow converter.

Used by the test suite and by scripts/run_workflow.py. Workflows are shipped in UI format (what
users load and share); the server's /prompt takes API format, so we convert using the server's
own /object_info (input names and order), never a hand-kept second copy.
"""

import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

UI_ONLY_NODES = {"Note", "MarkdownNote"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


class ComfyError(RuntimeError):
    """The server refused a prompt or the prompt failed; `details` holds the server's JSON."""

    def __init__(self, message: str, details: dict):
        super().__init__(message)
        self.details = details


class ComfyClient:
    def __init__(self, base_url: str):
        self.base_url = base_url.rstrip("/")
        self.client_id = uuid.uuid4().hex

    def get(self, path: str, timeout: float = 30.0):
        with urllib.request.urlopen(self.base_url + path, timeout=timeout) as response:
            return json.loads(response.read())

    def get_bytes(self, path: str, timeout: float = 30.0) -> bytes:
        with urllib.request.urlopen(self.base_url + path, timeout=timeout) as response:
            return response.read()

    def post_json(self, path: str, body) -> None:
        request = urllib.request.Request(
            self.base_url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        urllib.request.urlopen(request, timeout=30).read()

    def queue(self, prompt: dict) -> str:
        """POST /prompt; returns the prompt id, or raises ComfyError with the server's node_errors
        (also when ComfyUI accepted the prompt but dropped outputs whose inputs failed validation)."""
        body = json.dumps({"prompt": prompt, "client_id": self.client_id}).encode()
        request = urllib.request.Request(
            self.base_url + "/prompt", data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as error:
            details = json.loads(error.read() or b"{}")
            raise ComfyError(f"prompt refused: {json.dumps(details)[:2000]}", details) from None
        if answer.get("node_errors"):
            # ComfyUI still runs the outputs that validated; a client that asked for all of them fails.
            raise ComfyError(f"prompt partly refused: {json.dumps(answer)[:2000]}", answer)
        return answer["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 600.0) -> dict:
        """Poll /history until the prompt finishes; return its history entry or raise ComfyError."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.get(f"/history/{prompt_id}")
            entry = history.get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None:
                if entry["status"].get("status_str") == "error":
                    raise ComfyError(f"prompt failed: {json.dumps(entry['status'])[:4000]}", entry)
                return entry
            time.sleep(0.2)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout} s")

    def run(self, prompt: dict, timeout: float = 600.0) -> dict:
        return self.wait(self.queue(prompt), timeout)

    def output_images(self, entry: dict) -> list:
        """[(node_id, image dict)] for every image the prompt wrote (output and temp)."""
        return [
            (node_id, image)
            for node_id, outputs in entry.get("outputs", {}).items()
            for image in outputs.get("images", [])
        ]

    def image_bytes(self, image: dict) -> bytes:
        query = urllib.parse.urlencode({k: image[k] for k in ("filename", "subfolder", "type")})
        return self.get_bytes(f"/view?{query}")


def _is_widget(spec) -> bool:
    kind = spec[0]
    return isinstance(kind, list) or kind in WIDGET_TYPES


def _has_control_widget(name: str, spec) -> bool:
    """The frontend adds a 'control after generate' widget after such inputs (and after any INT seed)."""
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return bool(options.get("control_after_generate")) or (spec[0] == "INT" and name in ("seed", "noise_seed"))


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """Convert a UI-format workflow (nodes + links) into the API prompt format."""
    nodes = {node["id"]: node for node in workflow["nodes"]}
    links = {link[0]: link for link in workflow["links"]}

    def source_of(link_id):
        _, from_node, from_slot, *_ = links[link_id]
        node = nodes[from_node]
        while node["type"] == "Reroute":
            link_id = node["inputs"][0]["link"]
            _, from_node, from_slot, *_ = links[link_id]
            node = nodes[from_node]
        return [str(from_node), from_slot]

    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in UI_ONLY_NODES or node["type"] == "Reroute" or node.get("mode", 0) == 2:
            continue
        if node.get("mode", 0) == 4:
            raise ValueError(f"node {node['id']} ({node['type']}) is bypassed; the converter does not support bypass")
        if node["type"] not in object_info:
            raise ValueError(f"node {node['id']}: type {node['type']!r} is not registered on the server")
        prompt[str(node["id"])] = {
            "class_type": node["type"],
            "inputs": _node_inputs(node, object_info[node["type"]], source_of),
        }
    return prompt


def _node_inputs(node: dict, info: dict, source_of) -> dict:
    linked = {slot["name"]: slot["link"] for slot in node.get("inputs", []) if slot.get("link") is not None}
    values = node.get("widgets_values", [])
    inputs, position = {}, 0
    for section in ("required", "optional"):
        specs = info["input"].get(section, {})
        for name in info.get("input_order", {}).get(section, list(specs)):
            spec = specs[name]
            if _is_widget(spec):
                if isinstance(values, dict):
                    value = values.get(name)
                else:
                    value = values[position] if position < len(values) else None
                    position += 2 if _has_control_widget(name, spec) else 1
                if value is not None:
                    inputs[name] = value
            if name in linked:
                inputs[name] = source_of(linked[name])
    return inputs


def output_node_ids(prompt: dict, object_info: dict) -> set:
    """The ids of the prompt's output nodes (SaveImage, PreviewImage, PreviewAny, ...)."""
    return {node_id for node_id, node in prompt.items() if object_info[node["class_type"]].get("output_node")}


def available_checkpoints(object_info: dict) -> list:
    return object_info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]


def adapt_prompt(
    prompt: dict,
    object_info: dict,
    checkpoint: str = None,
    size: int = None,
    steps: int = None,
    captioner: str = None,
    guidance_clip: str = None,
) -> dict:
    """Point every checkpoint loader whose model is missing on this server at `checkpoint`, every
    captioner loader at `captioner` and every Guidance CLIP Loader at `guidance_clip` (if given), and
    optionally shrink image sides to `size` px and step counts to `steps` (a quick run of a shipped graph)."""
    installed = available_checkpoints(object_info)
    for node in prompt.values():
        inputs = node["inputs"]
        if "ckpt_name" in inputs and inputs["ckpt_name"] not in installed:
            if checkpoint is None:
                raise ValueError(f"checkpoint {inputs['ckpt_name']!r} is not installed; installed: {installed}")
            inputs["ckpt_name"] = checkpoint
        if captioner and "captioner_name" in inputs:
            inputs["captioner_name"] = captioner
        if guidance_clip and node["class_type"] == "DNPG_GuidanceClipLoader":
            inputs["clip_name"] = guidance_clip
        if size and isinstance(inputs.get("width"), int) and isinstance(inputs.get("height"), int):
            inputs["width"] = inputs["height"] = size
        if steps and isinstance(inputs.get("steps"), int):
            inputs["steps"] = steps
    return prompt
