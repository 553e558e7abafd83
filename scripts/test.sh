#!/usr/bin/env bash
# Provision the real ComfyUI test environment (reused when unchanged) and run the whole test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k schedule -x`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck disable=SC1090
. "$(bash scripts/provision.sh)"
exec "$DNPG_PYTHON" -m pytest tests "$@"
