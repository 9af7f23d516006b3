#!/usr/bin/env bash
# End-to-end check of `metaportrait live` on a virtual X server with a software Vulkan device (Mesa lavapipe).
#
# Renders a driving clip with `metaportrait demo` (the bundled portrait filmed by a swaying virtual camera), starts
# `live --input` on it with a fresh METAPORTRAIT_HOME and the preview engine on wgpu (lavapipe), and checks: the window shows the panel and a moving output;
# pressing r starts a recording and pressing it again finishes a real MP4 in <home>/recordings that ffprobe decodes;
# Ctrl+Q quits cleanly and leaves settings.json; the log names the engine in use and how to install weights.
#
# Needs: see tests/xvfb_lib.sh, plus ffprobe (ffmpeg).
# Usage: tests/xvfb_live.sh [path/to/metaportrait]   (default: target/debug/metaportrait, built if missing)
# Exit status: 0 pass, 1 fail, 2 missing tools. Artifacts are kept in $ARTIFACTS (default: a temporary directory).
set -euo pipefail

cd "$(dirname "$0")/.."
source tests/xvfb_lib.sh
BIN=${1:-target/debug/metaportrait}
RECORD_S=3
RECORDING_TIMEOUT_S=20
QUIT_TIMEOUT_S=20
SHOT_GAP_S=1
MIN_RECORDED_FRAMES=10

xvfb_require_tools
command -v ffprobe >/dev/null || { echo "SKIP: ffprobe missing (apt-get install ffmpeg)"; exit 2; }
[ -x "$BIN" ] || cargo build
[ -x "$BIN" ] || { echo "FAIL: no binary at $BIN"; exit 1; }

xvfb_artifacts xvfb_live
HOME_DIR="$ARTIFACTS/home"
rm -rf "$HOME_DIR"
fail() { echo "FAIL: $*"; echo "--- live stderr"; tail -40 "$ARTIFACTS/live.err" || true; exit 1; }

"$BIN" demo --output "$ARTIFACTS/drive.mp4" >"$ARTIFACTS/demo.log" 2>&1 || { cat "$ARTIFACTS/demo.log"; fail "demo clip"; }

xvfb_start
NO_COLOR=1 METAPORTRAIT_HOME="$HOME_DIR" WGPU_BACKEND=vulkan METAPORTRAIT_LOG=${METAPORTRAIT_LOG:-info,wgpu=warn,naga=warn,ort=warn} \
    "$BIN" live --input "$ARTIFACTS/drive.mp4" --preview-device gpu >"$ARTIFACTS/live.out" 2>"$ARTIFACTS/live.err" &
APP_PID=$!
xvfb_wait_window "$APP_PID"
xvfb_wait_drawn
xvfb_shot "$ARTIFACTS/shot1.png"
sleep "$SHOT_GAP_S"
xvfb_shot "$ARTIFACTS/shot2.png"
xvfb_check moving "$ARTIFACTS/shot1.png" "$ARTIFACTS/shot2.png" || fail "screenshot check"
grep -q 'preview engine' "$ARTIFACTS/live.err" || fail "the log does not say how to install the neural engine"
grep -q 'live: engine.*device="gpu: ' "$ARTIFACTS/live.err" || fail "the preview engine does not run on the GPU path"
[ -d "$HOME_DIR/identities" ] && [ -n "$(ls "$HOME_DIR/identities")" ] || fail "the bundled portrait was not added as an identity"

xvfb_focus
xdotool key r
sleep "$RECORD_S"
xvfb_shot "$ARTIFACTS/shot_recording.png"
xdotool key r
RECORDING=
for _ in $(seq $((RECORDING_TIMEOUT_S * 10))); do
    RECORDING=$(find "$HOME_DIR/recordings" -name 'recording-*.mp4' ! -name '*.partial.mp4' 2>/dev/null | head -1)
    [ -n "$RECORDING" ] && break
    sleep 0.1
done
[ -n "$RECORDING" ] || fail "no finished recording in $HOME_DIR/recordings ${RECORDING_TIMEOUT_S}s after pressing r twice"
FRAMES=$(ffprobe -v error -count_frames -select_streams v:0 -show_entries stream=nb_read_frames,width,height \
    -of csv=p=0 "$RECORDING") || fail "ffprobe cannot read $RECORDING"
echo "recording $RECORDING: width,height,frames = $FRAMES"
N=${FRAMES##*,}
[ "$N" -ge "$MIN_RECORDED_FRAMES" ] || fail "recording has only $N frames"

xvfb_quit live "$QUIT_TIMEOUT_S"
[ -f "$HOME_DIR/settings.json" ] || fail "no settings.json after quitting"
grep -q '"selected_identity": "' "$HOME_DIR/settings.json" || fail "settings do not remember the selected identity"
echo "PASS"
