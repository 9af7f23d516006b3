#!/usr/bin/env bash
# The project's test command (README "Set-up", second command; .ci/run runs exactly this).
# Installs missing system packages and ONNX Runtime, checks formatting and lints, runs every test against
# ../shared/fixtures, then the real-window tests on a virtual X server (the window demo, then `live` itself).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-deps.sh
bash scripts/provision-ort.sh
bash scripts/provision-id-model.sh
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
# The Vulkan training backend builds offline; lint it too (CI has no GPU to run it: scripts/gpu-check.sh does).
cargo clippy --all-targets --locked --features vulkan -- -D warnings
# The API documentation builds without warnings (every public item documented, no broken links).
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --lib --locked
# The wgpu readback tests must not skip here: lavapipe is installed above.
METAPORTRAIT_REQUIRE_WGPU=1 cargo test --all-targets --locked
# The examples in the documentation (`Ops`, the identity library, the channels) run too.
cargo test --doc --locked
cargo build --locked --example window_demo
bash tests/xvfb_window.sh target/debug/examples/window_demo
cargo build --locked --bin metaportrait
bash tests/xvfb_live.sh target/debug/metaportrait
