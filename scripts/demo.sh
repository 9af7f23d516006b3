#!/usr/bin/env bash
# The project's main job on bundled defaults (README "Set-up", first command): provisions ONNX Runtime, builds (the
# same profile as the tests: dependencies optimised, so one compile serves both commands) and renders the bundled
# portrait, driven by a swaying virtual camera on it, into out/demo.mp4 (preview engine: no weights needed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-deps.sh
bash scripts/provision-ort.sh
cargo run --locked -- demo --output out/demo.mp4
