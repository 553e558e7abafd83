"""DNP Guidance: diffusion-negative prompting, S-CFG, CFG schedules and loss guidance for ComfyUI."""

from .nodes import dnp, dns, guidance_clip, loss_guidance, loss_nodes, scfg, schedule

_NODE_MODULES = (schedule, dns, dnp, scfg, loss_guidance, loss_nodes, guidance_clip)

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
for _module in _NODE_MODULES:
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
