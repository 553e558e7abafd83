"""ComfyUI glue: node classes, validation, and the one patch that runs the guidance stack."""
