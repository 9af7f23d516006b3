#!/usr/bin/env bash
# Provisions ONNX Runtime for the `ort` executor: installs the PyPI `onnxruntime` wheel (CPU build) into the
# project-local `.runtime/`, where src/runtime/ort.rs looks for `onnxruntime/capi/libonnxruntime.so*`.
# Idempotent: does nothing when the pinned version is already there. Needs python3 with pip (Debian 12:
# `apt-get install python3-pip`); `--target` installs bypass PEP 668's externally-managed check.
set -euo pipefail

ORT_VERSION="1.31.0"
cd "$(dirname "$0")/.."
TARGET="$PWD/.runtime"
CAPI="$TARGET/onnxruntime/capi"

find_lib() { compgen -G "$CAPI/libonnxruntime.so*" | head -n 1; }

if [ -d "$TARGET/onnxruntime-$ORT_VERSION.dist-info" ] && lib="$(find_lib)" && [ -n "$lib" ]; then
  echo "ONNX Runtime $ORT_VERSION already provisioned: $lib"
  exit 0
fi

if ! python3 -m pip --version >/dev/null 2>&1; then
  echo "error: python3 -m pip is not available (Debian/Ubuntu: sudo apt-get install python3-pip)" >&2
  exit 1
fi

echo "Installing onnxruntime==$ORT_VERSION into $TARGET ..."
if ! python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --upgrade --target "$TARGET" \
  "onnxruntime==$ORT_VERSION"; then
  # No wheel for this interpreter's version: the shared library inside does not depend on Python, so fetch the
  # wheel built for a supported CPython and unpack it.
  echo "pip install failed; unpacking a CPython 3.12 wheel instead" >&2
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp --platform "manylinux_2_28_$(uname -m)" \
    -d "$tmp" "onnxruntime==$ORT_VERSION"
  rm -rf "$TARGET/onnxruntime" "$TARGET"/onnxruntime-*.dist-info
  python3 -m zipfile -e "$tmp"/onnxruntime-*.whl "$TARGET"
fi

lib="$(find_lib)"
if [ -z "$lib" ]; then
  echo "error: the onnxruntime wheel did not contain $CAPI/libonnxruntime.so*" >&2
  exit 1
fi
echo "ONNX Runtime $ORT_VERSION provisioned: $lib"
