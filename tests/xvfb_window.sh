#!/usr/bin/env bash
# End-to-end check of the desktop window on a virtual X server with a software Vulkan device (Mesa lavapipe).
#
# Starts Xvfb, runs the `window_demo` example on it with WGPU_BACKEND=vulkan, takes two screenshots a moment apart
# and checks that the side panel is drawn, the main view is drawn and moving, and its letterbox bars are black; then
# presses 2 (select identity), Space (recalibrate) and r (record) and checks the demo saw the commands and wrote its
# record marker; then closes the window with Ctrl+Q and checks it quit cleanly (Quit command, final settings).
#
# Needs: see tests/xvfb_lib.sh.
# Usage: tests/xvfb_window.sh [path/to/window_demo]   (default: builds and uses target/debug/examples/window_demo)
# Exit status: 0 pass, 1 fail, 2 missing tools. Artifacts (screenshots, logs) are kept in $ARTIFACTS (default: a
# temporary directory, printed at the end).
set -euo pipefail

cd "$(dirname "$0")/.."
source tests/xvfb_lib.sh
BIN=${1:-target/debug/examples/window_demo}
MARKER_TIMEOUT_S=10
QUIT_TIMEOUT_S=15
SHOT_GAP_S=1

xvfb_require_tools
if [ -z "${1:-}" ]; then
    cargo build --example window_demo
fi
[ -x "$BIN" ] || { echo "FAIL: no demo binary at $BIN"; exit 1; }

xvfb_artifacts xvfb_window
MARKER="$ARTIFACTS/recording.marker"
rm -f "$MARKER"
fail() { echo "FAIL: $*"; echo "--- demo stdout"; tail -20 "$ARTIFACTS/demo.out" || true; echo "--- demo stderr"; tail -30 "$ARTIFACTS/demo.err" || true; exit 1; }

xvfb_start
START_S=$(date +%s.%N)
WGPU_BACKEND=vulkan RUST_LOG=${RUST_LOG:-info,wgpu=warn,naga=warn} "$BIN" --marker "$MARKER" \
    >"$ARTIFACTS/demo.out" 2>"$ARTIFACTS/demo.err" &
APP_PID=$!
xvfb_wait_window "$APP_PID"
# Wait for the first frames (lavapipe compiles shaders on first use).
xvfb_wait_drawn
echo "window drawn after $("$PY" -c "print(f'{$(date +%s.%N) - $START_S:.1f}')") s"

xvfb_shot "$ARTIFACTS/shot1.png"
sleep "$SHOT_GAP_S"
xvfb_shot "$ARTIFACTS/shot2.png"
xvfb_check letterboxed "$ARTIFACTS/shot1.png" "$ARTIFACTS/shot2.png" || fail "screenshot check"

xvfb_focus
xdotool key 2
xdotool key space
xdotool key r
for _ in $(seq $((MARKER_TIMEOUT_S * 10))); do [ -f "$MARKER" ] && break; sleep 0.1; done
[ -f "$MARKER" ] || fail "no record marker $MARKER ${MARKER_TIMEOUT_S}s after pressing r"
grep -q '^RECORDING_STARTED$' "$ARTIFACTS/demo.out" || fail "demo did not print RECORDING_STARTED"
grep -q 'COMMAND SelectIdentity("id-1")' "$ARTIFACTS/demo.out" || fail "key 2 did not select the second identity"
grep -q 'COMMAND Recalibrate' "$ARTIFACTS/demo.out" || fail "space did not recalibrate"
echo "record marker written; 2 selected identity 2; space recalibrated"
sleep 1
xvfb_shot "$ARTIFACTS/shot_recording.png"

xvfb_quit demo "$QUIT_TIMEOUT_S"
grep -q 'COMMAND Quit' "$ARTIFACTS/demo.out" || fail "no Quit command on close"
grep '^FINAL_SETTINGS ' "$ARTIFACTS/demo.out" || fail "no final settings printed"
echo "PASS"
