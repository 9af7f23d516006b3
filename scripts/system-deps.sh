#!/usr/bin/env bash
# Installs the Debian packages the tests and the app need, when any is missing (apt-get; sudo when not root):
#   python3-pip                    ONNX Runtime is provisioned from PyPI (scripts/provision-ort.sh)
#   xvfb mesa-vulkan-drivers libvulkan1 xdotool x11-utils imagemagick python3-pil
#                                  the real-window test: a virtual X server, a software Vulkan device (lavapipe)
#                                  for wgpu, and tools to screenshot and press keys (tests/xvfb_window.sh)
#   nasm libclang-dev              building OpenH264 from source (x86 assembly) and the webcam's V4L2 bindings
#   ffmpeg                         the video tests check our files with ffprobe and decode x264 High-profile clips
set -euo pipefail

PACKAGES=(python3-pip xvfb mesa-vulkan-drivers libvulkan1 xdotool x11-utils imagemagick python3-pil nasm libclang-dev ffmpeg)

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing system packages: ${missing[*]}"
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  SUDO=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
