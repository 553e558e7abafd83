"""Run a shipped workflow on the real ComfyUI server provisioned by scripts/provision.sh.

    python scripts/run_workflow.py [workflows/X.json] [--size 256] [--steps 8] [--keep-server]

The workflow (default: workflows/dnp_auto.json, the auto-DNP graph) is converted from UI to API
format with the server's /object_info; checkpoints that are not installed are replaced by the tiny
random SD1.5 checkpoint (or --checkpoint), captioners by the tiny random BLIP (or --captioner) and
guidance CLIP models by the tiny random CLIP (or --guidance-clip).
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from comfy_client import adapt_prompt, ui_to_api  # noqa: E402
from comfy_server import ComfyServer  # noqa: E402

PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_WORKFLOW = os.path.join(PACK_DIR, "workflows", "dnp_auto.json")
TINY_CHECKPOINT = "dnpg_tiny_sd15.safetensors"
TINY_CAPTIONER = "dnpg-tiny-blip"
TINY_CLIP = "dnpg-tiny-clip"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workflow", nargs="?", default=DEFAULT_WORKFLOW)
    parser.add_argument("--checkpoint", default=TINY_CHECKPOINT, help="used where the workflow's checkpoint is missing")
    parser.add_argument(
        "--captioner", default=TINY_CAPTIONER, help="captioner for every Captioner Loader ('keep': the workflow's own)"
    )
    parser.add_argument(
        "--guidance-clip", default=TINY_CLIP, help="model for every Guidance CLIP Loader ('keep': the workflow's own)"
    )
    parser.add_argument("--size", type=int, help="override EmptyLatentImage width and height (px)")
    parser.add_argument("--steps", type=int, help="override every sampler's step count")
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--output", default=os.path.join(os.environ.get("DNPG_HOME", "."), "output"))
    parser.add_argument("--keep-server", action="store_true", help="leave the server up for the browser afterwards")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    output = os.path.abspath(args.output)
    server = ComfyServer(output, os.path.join(output, "comfyui-server.log"), port=args.port)
    client = server.start()
    try:
        with open(args.workflow) as handle:
            workflow = json.load(handle)
        object_info = client.get("/object_info")
        prompt = adapt_prompt(
            ui_to_api(workflow, object_info),
            object_info,
            args.checkpoint,
            args.size,
            args.steps,
            captioner=None if args.captioner == "keep" else args.captioner,
            guidance_clip=None if args.guidance_clip == "keep" else args.guidance_clip,
        )
        entry = client.run(prompt)
        saved = [img for _, img in client.output_images(entry) if img["type"] == "output"]
        for image in saved:
            print(os.path.join(output, image["subfolder"], image["filename"]))
        print(f"{os.path.basename(args.workflow)}: {len(saved)} image(s) written to {output}", file=sys.stderr)
        if args.keep_server:
            print(f"ComfyUI is up at {server.url} (Ctrl-C stops it); load {args.workflow} there.", file=sys.stderr)
            server.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
