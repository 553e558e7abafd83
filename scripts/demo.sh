#!/usr/bin/env bash
# Provision the real ComfyUI (reused when unchanged), start it on 127.0.0.1:8188, run a shipped
# workflow on the tiny embedded test checkpoint and print where the images are.
#   bash scripts/demo.sh [workflows/X.json] [--keep-server] [--size PX] [--steps N]
# Defaults to a quick CPU run (256 px, 10 steps); pass --size/--steps to change it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck disable=SC1090
. "$(bash scripts/provision.sh)"
exec "$DNPG_PYTHON" scripts/run_workflow.py --size 256 --steps 10 "$@"
