"""What a node wants the user to know (n* cut at the token limit, the DNS run's cost, S-CFG's fallback
layers, a replaced term), shown on the node in the frontend and written to the log.

The frontend shows text on a node when the server sends it on ComfyUI's progress-text channel
(`PromptServer.send_progress_text(text, node_id)`, the one core's own nodes use, e.g. GetImageSize in
comfy_extras/nodes_images.py); the stock frontend draws it as a text preview on the node
(`useNodeProgressText().showTextPreview`). The node is the one ComfyUI is executing
(`comfy_execution.utils.get_executing_context`): for a message raised while sampling, the sampler node.
Outside a server (scripts, in-process tests) only the log line is written.
"""

import logging

log = logging.getLogger("dnp_guidance")


def executing_node():
    """(server, node id) of the node ComfyUI is executing, or None outside a server run."""
    try:
        from comfy_execution.utils import get_executing_context
        from server import PromptServer
    except ImportError:  # a ComfyUI without the progress-text channel
        return None
    context = get_executing_context()
    server = getattr(PromptServer, "instance", None)
    if context is None or server is None or not hasattr(server, "send_progress_text"):
        return None
    return server, context.node_id


def show(text: str, level: int = logging.INFO) -> None:
    """Log `text` and show it on the executing node."""
    log.log(level, "DNP Guidance: %s", text.replace("\n", " | "))
    target = executing_node()
    if target is not None:
        server, node_id = target
        server.send_progress_text(text, node_id)


def warn(text: str) -> None:
    show(f"⚠ {text}", logging.WARNING)
