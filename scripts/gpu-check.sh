#!/usr/bin/env bash
# GPU checks, for a machine with an NVIDIA GPU (CI has none; see README "GPU"): parity of the CUDA path (ONNX Runtime's
# CUDA provider reading and writing cudarc device buffers) and of burn on Vulkan against the tiny fixtures, then the
# official-size benchmarks. Each step is time-limited and logged; the script goes on after a failed step and exits
# non-zero if any failed.
#
#   scripts/gpu-check.sh BIN FIXTURES_DIR LOG
#
# BIN is a `metaportrait` built with `--features vulkan`; ONNX Runtime's GPU build is found the usual way
# (ORT_DYLIB_PATH, METAPORTRAIT_RUNTIME_DIR). CUDA's user-space libraries (cuBLAS, cuDNN, cuRAND, cudart) must be on
# LD_LIBRARY_PATH.
set -u
BIN=$1
FIX=$2
LOG=$3
GEN=$FIX/generator
TSR=$FIX/tsr
WORK=$(mktemp -d)
STEP_TIMEOUT=${STEP_TIMEOUT:-150}
OUTPUTS=warp.deformation,warp.flow,warp.occlusion_map,warp.deformed,refine.prediction
failed=()

exec > >(tee -a "$LOG") 2>&1

# Largest absolute difference per named tensor between two safetensors files (f32), against a tolerance.
compare() {
    python3 - "$@" <<'PY'
import array, json, struct, sys
def load(path):
    raw = open(path, 'rb').read()
    n = struct.unpack('<Q', raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    out = {}
    for k, v in header.items():
        if k == '__metadata__':
            continue
        s, e = v['data_offsets']
        a = array.array('f')
        a.frombytes(raw[8 + n + s:8 + n + e])
        out[k] = a
    return out
got, want = load(sys.argv[1]), load(sys.argv[2])
tol = float(sys.argv[4])
worst = 0.0
for key in sys.argv[3].split(','):
    d = max(abs(x - y) for x, y in zip(got[key], want[key]))
    scale = max(abs(y) for y in want[key])
    print(f'  {key}: max |diff| {d:.2e} (max |ref| {scale:.2f})')
    worst = max(worst, d)
print(f'  worst {worst:.2e}, tolerance {tol:.0e}: ' + ('PASS' if worst <= tol else 'FAIL'))
sys.exit(0 if worst <= tol else 1)
PY
}

step() {
    local name=$1
    shift
    echo "== $name"
    local started=$SECONDS
    if declare -F "$1" > /dev/null; then
        "$@"
    else
        timeout "$STEP_TIMEOUT" "$@"
    fi
    local rc=$?
    echo "== $name: rc=$rc in $((SECONDS - started)) s"
    [ "$rc" = 0 ] || failed+=("$name")
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

# CUDA first: ONNX Runtime's CUDA provider on device buffers.
step generator-forward-ort-cuda "$BIN" model forward --config "$GEN/tiny_config.json" \
    --weights "$GEN/tiny_weights.safetensors" --inputs "$GEN/tiny_io.safetensors" \
    --output "$WORK/gen-cuda.safetensors" --executor ort --device cuda
step generator-parity-ort-cuda compare "$WORK/gen-cuda.safetensors" "$GEN/tiny_io.safetensors" "$OUTPUTS" 1e-4
step tsr-forward-ort-cuda "$BIN" tsr forward --config tiny --weights "$TSR/tsr_tiny_weights.safetensors" \
    --inputs "$TSR/tsr_tiny_io.safetensors" --output "$WORK/tsr-cuda.safetensors" --device cuda
step tsr-parity-ort-cuda compare "$WORK/tsr-cuda.safetensors" "$TSR/tsr_tiny_io.safetensors" output 1e-4
step bench-generator-cuda-fp32 "$BIN" bench generator --config official --device cuda --iters 20
step bench-generator-cuda-tf32 env METAPORTRAIT_CUDA_TF32=1 "$BIN" bench generator --config official --device cuda --iters 20
step bench-tsr-cuda-fp32 "$BIN" bench tsr --config official --device cuda --iters 5
step bench-tsr-cuda-tf32 env METAPORTRAIT_CUDA_TF32=1 "$BIN" bench tsr --config official --device cuda --iters 5
# CUDA graphs replay the whole run from the fixed IoBinding buffers: same numbers, fewer launches.
step generator-forward-ort-cuda-graph env METAPORTRAIT_CUDA_GRAPH=1 "$BIN" model forward \
    --config "$GEN/tiny_config.json" --weights "$GEN/tiny_weights.safetensors" --inputs "$GEN/tiny_io.safetensors" \
    --output "$WORK/gen-cuda-graph.safetensors" --executor ort --device cuda
step generator-parity-ort-cuda-graph compare "$WORK/gen-cuda-graph.safetensors" "$GEN/tiny_io.safetensors" \
    "$OUTPUTS" 1e-4
step bench-generator-cuda-tf32-graph env METAPORTRAIT_CUDA_TF32=1 METAPORTRAIT_CUDA_GRAPH=1 "$BIN" bench generator \
    --config official --device cuda --iters 50
# Live 512² end to end (generator + streaming TSR), sequential and pipelined as `live` runs them.
step bench-e2e-cuda-tf32-graph env METAPORTRAIT_CUDA_TF32=1 METAPORTRAIT_CUDA_GRAPH=1 "$BIN" bench e2e \
    --device cuda --frames 60

# Then burn on Vulkan (SPIR-V kernels compiled by the driver on first use).
step generator-forward-burn-vulkan "$BIN" model forward --config "$GEN/tiny_config.json" \
    --weights "$GEN/tiny_weights.safetensors" --inputs "$GEN/tiny_io.safetensors" \
    --output "$WORK/gen-vulkan.safetensors" --executor burn --device vulkan
step generator-parity-burn-vulkan compare "$WORK/gen-vulkan.safetensors" "$GEN/tiny_io.safetensors" "$OUTPUTS" 1e-4
# Personalization steps keep parameters and Adam moments on the GPU; the host optimizer is timed for comparison.
# burn autotunes every convolution and matrix-product shape on first use (forward and backward): the first step
# pays for it, so the whole K = 24 loop gets a longer limit. The step trains personalization's loss; its perceptual
# term needs the VGG-19 weights at the default location (.runtime/id-model/, ~80 MB, more than a device call carries):
# without them the JSON's `terms` lack "perceptual" and the time is a lower bound.
STEP_TIMEOUT=$((STEP_TIMEOUT * 2)) step bench-step-vulkan-k24 "$BIN" bench step --config official --device vulkan \
    --iters 23
step bench-step-vulkan-host-optimizer "$BIN" bench step --config official --device vulkan --iters 4 --host-optimizer
# The L1-only step, comparable with the numbers measured before the bench stepped personalization's full loss.
step bench-step-vulkan-l1 "$BIN" bench step --config official --device vulkan --iters 4 --loss l1
step bench-generator-burn-vulkan "$BIN" bench generator --config official --executor burn --device vulkan --iters 3

rm -rf "$WORK"
if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED: ${failed[*]}"
    exit 1
fi
echo "all GPU checks passed"
