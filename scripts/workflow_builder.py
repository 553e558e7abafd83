"""Build UI-format ComfyUI workflows (what the frontend loads and users share) from a short
description, with node inputs, outputs and widget order taken from a server's /object_info."""

from comfy_client import _has_control_widget, _is_widget

NODE_WIDTH = 320


class Node:
    def __init__(self, graph: "Graph", node_id: int, node_type: str):
        self.graph, self.id, self.type = graph, node_id, node_type

    def out(self, name_or_index):
        """A reference to one of this node's outputs, by name or index."""
        names = self.graph.object_info[self.type]["output_name"]
        index = name_or_index if isinstance(name_or_index, int) else names.index(name_or_index)
        return (self, index)


class Graph:
    def __init__(self, object_info: dict):
        self.object_info = object_info
        self.nodes, self.links = [], []

    def add(self, node_type: str, pos: tuple, title: str = None, size: tuple = None, **inputs) -> Node:
        """Add a node; keyword inputs are widget values or (node, output index) references."""
        node = Node(self, len(self.nodes) + 1, node_type)
        if node_type in ("Note", "MarkdownNote"):
            record = self._note(node, inputs["text"], pos, size)
        else:
            record = self._record(node, pos, size, inputs)
        if title:
            record["title"] = title
        self.nodes.append(record)
        return node

    def _note(self, node: Node, text: str, pos, size) -> dict:
        return {
            "id": node.id,
            "type": node.type,
            "pos": list(pos),
            "size": list(size or (NODE_WIDTH, 160)),
            "flags": {},
            "order": 0,
            "mode": 0,
            "inputs": [],
            "outputs": [],
            "properties": {},
            "widgets_values": [text],
            "color": "#432",
            "bgcolor": "#653",
        }

    def _record(self, node: Node, pos, size, inputs: dict) -> dict:
        info = self.object_info[node.type]
        record_inputs, widgets = [], []
        for section in ("required", "optional"):
            specs = info["input"].get(section, {})
            for name in info["input_order"].get(section, list(specs)):
                spec, value = specs[name], inputs.pop(name, None)
                if _is_widget(spec):
                    widgets.append(self._widget_value(name, spec, value))
                    if _has_control_widget(name, spec):
                        widgets.append("fixed")
                else:
                    record_inputs.append({"name": name, "type": spec[0], "link": None})
                if isinstance(value, tuple):
                    self._link(value, node, name, spec, record_inputs)
        if inputs:
            raise ValueError(f"{node.type}: unknown inputs {sorted(inputs)}")
        outputs = [
            {"name": name, "type": kind, "links": [], "slot_index": index}
            for index, (name, kind) in enumerate(zip(info["output_name"], info["output"]))
        ]
        return {
            "id": node.id,
            "type": node.type,
            "pos": list(pos),
            "size": list(size or (NODE_WIDTH, 120)),
            "flags": {},
            "order": node.id - 1,
            "mode": 0,
            "inputs": record_inputs,
            "outputs": outputs,
            "properties": {"Node name for S&R": node.type},
            "widgets_values": widgets,
        }

    @staticmethod
    def _widget_value(name: str, spec, value):
        if value is not None and not isinstance(value, tuple):
            return value
        options = spec[1] if len(spec) > 1 else {}
        if "default" in options:
            return options["default"]
        if isinstance(spec[0], list) and spec[0]:
            return spec[0][0]
        if isinstance(value, tuple) and spec[0] == "STRING":
            return ""  # a text widget driven by a link
        raise ValueError(f"widget {name!r} needs a value (no default)")

    def _link(self, source, target: Node, name: str, spec, record_inputs: list) -> None:
        source_node, slot = source
        link_id = len(self.links) + 1
        kind = self.object_info[source_node.type]["output"][slot]
        self.links.append([link_id, source_node.id, slot, target.id, None, kind])
        slots = [entry for entry in record_inputs if entry["name"] == name]
        if not slots:  # a widget input driven by a link
            record_inputs.append({"name": name, "type": kind, "link": None, "widget": {"name": name}})
            slots = record_inputs[-1:]
        slots[0]["link"] = link_id
        self.links[-1][4] = record_inputs.index(slots[0])
        self.nodes[source_node.id - 1]["outputs"][slot]["links"].append(link_id)

    def to_json(self) -> dict:
        return {
            "last_node_id": len(self.nodes),
            "last_link_id": len(self.links),
            "nodes": self.nodes,
            "links": self.links,
            "groups": [],
            "config": {},
            "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}},
            "version": 0.4,
        }
