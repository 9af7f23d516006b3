#!/usr/bin/env bash
# The project's test command (README "Set-up", second command; .ci/run runs exactly this).
# Provisions ONNX Runtime, then checks formatting, lints, and runs every test against ../shared/fixtures.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/provision-ort.sh
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked
