#!/usr/bin/env bash
# Provisions ONNX Runtime for the `ort` executor from PyPI into the project-local `.runtime/`, where
# src/runtime/ort.rs looks for it.
#
#   bash scripts/provision-ort.sh            the CPU build (PyPI `onnxruntime`) in .runtime/onnxruntime/capi/
#   bash scripts/provision-ort.sh --gpu      the CUDA build (PyPI `onnxruntime-gpu`) and the CUDA 13 / cuDNN 9
#                                            runtime wheels its CUDA provider loads, in .runtime/gpu/
#   ... --dry-run                            print the plan (packages, files, state) and change nothing
#
# With `--gpu` the binary prefers .runtime/gpu/ and, when CUDA is asked for, loads the CUDA libraries from
# .runtime/gpu/nvidia/ by their full paths before ONNX Runtime loads its CUDA provider: no LD_LIBRARY_PATH or
# ORT_DYLIB_PATH needed. The NVIDIA driver (libcuda.so.1, driver ≥ 580 for CUDA 13) comes from the system.
#
# Idempotent: does nothing when the pinned set is already there (a manifest lists what was installed). The GPU set
# is staged next to its final place and renamed when complete, so an interrupted install leaves nothing half-made.
# Needs python3 with pip (Debian 12: `apt-get install python3-pip`); `--target` installs bypass PEP 668.
# Environment (for tests and mirrors): METAPORTRAIT_RUNTIME_TARGET replaces .runtime/ as the install root;
# METAPORTRAIT_WHEELS=DIR installs from the wheels in DIR only (no index).
set -euo pipefail

ORT_VERSION="1.31.0"
# Exactly what onnxruntime-gpu's CUDA provider loads (its NEEDED entries: cuBLAS/cuBLASLt, cuRAND, the CUDA
# runtime; dlopened: cuDNN 9 and its sub-libraries, cuFFT, NVRTC), at the versions PyTorch 2.15 pins for CUDA 13.2
# so one machine can hold both. Each entry: pip requirement|files it must provide (relative to the GPU root).
CUDNN_LIB="nvidia/cudnn/lib"
CU_LIB="nvidia/cu13/lib"
GPU_SET=(
  "onnxruntime-gpu==$ORT_VERSION|onnxruntime/capi/libonnxruntime.so.$ORT_VERSION onnxruntime/capi/libonnxruntime_providers_shared.so onnxruntime/capi/libonnxruntime_providers_cuda.so"
  "nvidia-cuda-runtime==13.2.86|$CU_LIB/libcudart.so.13"
  "nvidia-cublas==13.4.1.3|$CU_LIB/libcublasLt.so.13 $CU_LIB/libcublas.so.13"
  "nvidia-curand==10.4.2.66|$CU_LIB/libcurand.so.10"
  "nvidia-cufft==12.2.0.57|$CU_LIB/libcufft.so.12"
  "nvidia-cuda-nvrtc==13.2.86|$CU_LIB/libnvrtc.so.13"
  "nvidia-cudnn-cu13==9.26.0.51|$CUDNN_LIB/libcudnn.so.9 $CUDNN_LIB/libcudnn_graph.so.9 $CUDNN_LIB/libcudnn_ops.so.9 $CUDNN_LIB/libcudnn_cnn.so.9 $CUDNN_LIB/libcudnn_adv.so.9 $CUDNN_LIB/libcudnn_heuristic.so.9 $CUDNN_LIB/libcudnn_engines_precompiled.so.9 $CUDNN_LIB/libcudnn_engines_runtime_compiled.so.9"
)
MANIFEST="provisioned.txt"

gpu=0
dry_run=0
for arg in "$@"; do
  case "$arg" in
    --gpu) gpu=1 ;;
    --dry-run) dry_run=1 ;;
    -h | --help)
      sed -n '2,20p' "$0"
      exit 0
      ;;
    *)
      echo "error: unknown argument \`$arg\` (expected --gpu and/or --dry-run)" >&2
      exit 2
      ;;
  esac
done

cd "$(dirname "$0")/.."
TARGET="${METAPORTRAIT_RUNTIME_TARGET:-$PWD/.runtime}"
CAPI="$TARGET/onnxruntime/capi"
GPU_ROOT="$TARGET/gpu"

find_lib() { compgen -G "$1/libonnxruntime.so*" | head -n 1; }

pip_sources=()
if [ -n "${METAPORTRAIT_WHEELS:-}" ]; then
  pip_sources=(--no-index --find-links "$METAPORTRAIT_WHEELS")
fi

require_pip() {
  if ! python3 -m pip --version >/dev/null 2>&1; then
    echo "error: python3 -m pip is not available (Debian/Ubuntu: sudo apt-get install python3-pip)" >&2
    exit 1
  fi
}

# Installs requirements into a directory with pip; when no wheel fits this interpreter, unpacks the CPython 3.12
# wheels instead (the shared libraries inside do not depend on Python).
pip_install() {
  local dir=$1
  shift
  if python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --upgrade \
    "${pip_sources[@]}" --target "$dir" "$@"; then
    return 0
  fi
  echo "pip install failed; unpacking CPython 3.12 wheels instead" >&2
  local tmp
  tmp="$(mktemp -d)"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: "${pip_sources[@]}" \
    --python-version 3.12 --implementation cp --platform "manylinux_2_28_$(uname -m)" -d "$tmp" "$@"
  for wheel in "$tmp"/*.whl; do
    python3 -m zipfile -e "$wheel" "$dir"
  done
  rm -rf "$tmp"
}

# ---- CPU build (the default; what CI uses) ----
if [ "$gpu" = 0 ]; then
  if [ "$dry_run" = 1 ]; then
    echo "target $TARGET"
    echo "package onnxruntime==$ORT_VERSION"
    echo "file onnxruntime/capi/libonnxruntime.so.$ORT_VERSION"
    if [ -d "$TARGET/onnxruntime-$ORT_VERSION.dist-info" ] && [ -n "$(find_lib "$CAPI")" ]; then
      echo "state provisioned"
    else
      echo "state missing"
    fi
    exit 0
  fi
  if [ -d "$TARGET/onnxruntime-$ORT_VERSION.dist-info" ] && lib="$(find_lib "$CAPI")" && [ -n "$lib" ]; then
    echo "ONNX Runtime $ORT_VERSION already provisioned: $lib"
    exit 0
  fi
  require_pip
  echo "Installing onnxruntime==$ORT_VERSION into $TARGET ..."
  mkdir -p "$TARGET"
  rm -rf "$TARGET/onnxruntime" "$TARGET"/onnxruntime-*.dist-info
  pip_install "$TARGET" "onnxruntime==$ORT_VERSION"
  lib="$(find_lib "$CAPI")"
  if [ -z "$lib" ]; then
    echo "error: the onnxruntime wheel did not contain $CAPI/libonnxruntime.so*" >&2
    exit 1
  fi
  echo "ONNX Runtime $ORT_VERSION provisioned: $lib"
  exit 0
fi

# ---- GPU build ----
requirements=()
files=()
for entry in "${GPU_SET[@]}"; do
  requirements+=("${entry%%|*}")
  read -r -a provided <<<"${entry#*|}"
  files+=("${provided[@]}")
done
wanted_manifest="$(printf '%s\n' "${requirements[@]}")"

# The set is complete when the manifest names exactly the pinned requirements and every file is in place.
gpu_state() {
  [ -f "$GPU_ROOT/$MANIFEST" ] || { echo missing; return; }
  [ "$(cat "$GPU_ROOT/$MANIFEST")" = "$wanted_manifest" ] || { echo outdated; return; }
  local f
  for f in "${files[@]}"; do
    [ -f "$GPU_ROOT/$f" ] || { echo "incomplete ($f)"; return; }
  done
  echo provisioned
}

if [ "$dry_run" = 1 ]; then
  echo "target $GPU_ROOT"
  for entry in "${GPU_SET[@]}"; do
    echo "package ${entry%%|*}"
    for f in ${entry#*|}; do
      echo "file $f ${entry%%|*}"
    done
  done
  echo "state $(gpu_state)"
  exit 0
fi

state="$(gpu_state)"
if [ "$state" = provisioned ]; then
  echo "ONNX Runtime $ORT_VERSION GPU build and its CUDA libraries already provisioned in $GPU_ROOT"
  exit 0
fi
require_pip
echo "Installing the ONNX Runtime $ORT_VERSION GPU build and CUDA 13 / cuDNN 9 runtime into $GPU_ROOT ($state):"
printf '  %s\n' "${requirements[@]}"
mkdir -p "$TARGET"
staging="$TARGET/gpu.partial"
rm -rf "$staging"
trap 'rm -rf "$staging"' EXIT
mkdir -p "$staging"
pip_install "$staging" "${requirements[@]}"
missing=()
for f in "${files[@]}"; do
  [ -f "$staging/$f" ] || missing+=("$f")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "error: the wheels did not provide: ${missing[*]}" >&2
  exit 1
fi
printf '%s\n' "${requirements[@]}" >"$staging/$MANIFEST"
rm -rf "$GPU_ROOT"
mv "$staging" "$GPU_ROOT"
trap - EXIT
echo "ONNX Runtime $ORT_VERSION GPU build provisioned: $(find_lib "$GPU_ROOT/onnxruntime/capi")"
echo "CUDA libraries: $GPU_ROOT/$CU_LIB, $GPU_ROOT/$CUDNN_LIB (loaded by the binary when CUDA is asked for)"
