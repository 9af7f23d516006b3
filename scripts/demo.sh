#!/usr/bin/env bash
# The project's main job on bundled defaults (README "Set-up", first command): provisions ONNX Runtime, builds (the
# same profile as the tests: dependencies optimised, so one compile serves both commands) and benchmarks the
# generator at the official configuration with random weights of the official shapes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/provision-ort.sh
cargo run --locked -- bench generator --config official --iters 3 --threads 2 --device auto
