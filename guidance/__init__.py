"""The pack's guidance maths: plain torch, no ComfyUI import, one module per paper."""
