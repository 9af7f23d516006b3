#!/usr/bin/env bash
# The project's main job on bundled defaults (README "Set-up", first command): provisions ONNX Runtime, builds in
# release mode and benchmarks the generator at the official configuration (random weights of the official shapes).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/provision-ort.sh
cargo run --release --locked -- bench generator --config official --iters 3 --threads 2 --device auto
