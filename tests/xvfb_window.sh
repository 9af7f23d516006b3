#!/usr/bin/env bash
# End-to-end check of the desktop window on a virtual X server with a software Vulkan device (Mesa lavapipe).
#
# Starts Xvfb, runs the `window_demo` example on it with WGPU_BACKEND=vulkan, takes two screenshots a moment apart
# and checks that the side panel is drawn, the main view is drawn and moving, and its letterbox bars are black; then
# presses 2 (select identity), Space (recalibrate) and r (record) and checks the demo saw the commands and wrote its
# record marker; then closes the window with Ctrl+Q and checks it quit cleanly (Quit command, final settings).
#
# Needs: apt-get install -y xvfb mesa-vulkan-drivers libvulkan1 imagemagick xdotool x11-utils python3-pil
# Usage: tests/xvfb_window.sh [path/to/window_demo]   (default: builds and uses target/debug/examples/window_demo)
# Exit status: 0 pass, 1 fail, 2 missing tools. Artifacts (screenshots, logs) are kept in $ARTIFACTS (default: a
# temporary directory, printed at the end).
set -euo pipefail

cd "$(dirname "$0")/.."
BIN=${1:-target/debug/examples/window_demo}
DISPLAY_NUM=${XVFB_DISPLAY:-:99}
SCREEN_SIZE=1280x800
WINDOW_NAME='^MetaPortrait$'
XVFB_TIMEOUT_S=${XVFB_TIMEOUT_S:-30}
WINDOW_TIMEOUT_S=60
FIRST_FRAME_TIMEOUT_S=60
MARKER_TIMEOUT_S=10
QUIT_TIMEOUT_S=15
SHOT_GAP_S=1

for tool in Xvfb xdotool import xdpyinfo; do
    command -v "$tool" >/dev/null || { echo "SKIP: $tool missing (see the apt line in this script)"; exit 2; }
done
PY=
for candidate in python3 /usr/bin/python3; do   # a pyenv python3 may shadow the one python3-pil installs into
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import PIL' 2>/dev/null; then PY=$candidate; break; fi
done
[ -n "$PY" ] || { echo "SKIP: no python3 with PIL (apt-get install python3-pil)"; exit 2; }
if [ -z "${1:-}" ]; then
    cargo build --example window_demo
fi
[ -x "$BIN" ] || { echo "FAIL: no demo binary at $BIN"; exit 1; }

ARTIFACTS=${ARTIFACTS:-$(mktemp -d /tmp/xvfb_window.XXXXXX)}
mkdir -p "$ARTIFACTS"
MARKER="$ARTIFACTS/recording.marker"
rm -f "$MARKER"
XVFB_PID=
DEMO_PID=
cleanup() {
    [ -n "$DEMO_PID" ] && kill "$DEMO_PID" 2>/dev/null || true
    [ -n "$XVFB_PID" ] && kill "$XVFB_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    echo "artifacts: $ARTIFACTS"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; echo "--- demo stdout"; tail -20 "$ARTIFACTS/demo.out" || true; echo "--- demo stderr"; tail -30 "$ARTIFACTS/demo.err" || true; exit 1; }

# -noreset: without it the server resets whenever its last client disconnects, and a connection made during
# the reset (the next probe, or the demo itself) fails.
Xvfb "$DISPLAY_NUM" -screen 0 "${SCREEN_SIZE}x24" -nolisten tcp -noreset >"$ARTIFACTS/xvfb.log" 2>&1 &
XVFB_PID=$!
X_READY=
for _ in $(seq $((XVFB_TIMEOUT_S * 10))); do
    kill -0 "$XVFB_PID" 2>/dev/null || { cat "$ARTIFACTS/xvfb.log"; fail "Xvfb exited (is $DISPLAY_NUM taken? set XVFB_DISPLAY)"; }
    if xdpyinfo -display "$DISPLAY_NUM" >/dev/null 2>&1; then X_READY=1; break; fi
    sleep 0.1
done
if [ -z "$X_READY" ]; then
    echo "Xvfb log:"; cat "$ARTIFACTS/xvfb.log"; ls -la /tmp/.X11-unix
    grep -E 'State' "/proc/$XVFB_PID/status" || true; echo "wchan: $(cat "/proc/$XVFB_PID/wchan" 2>/dev/null)"
    xdpyinfo -display "$DISPLAY_NUM" 2>&1 | head -3
    fail "Xvfb did not answer within ${XVFB_TIMEOUT_S}s"
fi
export DISPLAY=$DISPLAY_NUM

START_S=$(date +%s.%N)
WGPU_BACKEND=vulkan RUST_LOG=${RUST_LOG:-info,wgpu=warn,naga=warn} "$BIN" --marker "$MARKER" \
    >"$ARTIFACTS/demo.out" 2>"$ARTIFACTS/demo.err" &
DEMO_PID=$!

WINDOW=
for _ in $(seq $((WINDOW_TIMEOUT_S * 5))); do
    kill -0 "$DEMO_PID" 2>/dev/null || fail "demo exited before its window appeared"
    WINDOW=$(xdotool search --onlyvisible --name "$WINDOW_NAME" 2>/dev/null | head -1 || true)
    [ -n "$WINDOW" ] && break
    sleep 0.2
done
[ -n "$WINDOW" ] || fail "no window named $WINDOW_NAME after ${WINDOW_TIMEOUT_S}s"
eval "$(xdotool getwindowgeometry --shell "$WINDOW")"   # sets X, Y, WIDTH, HEIGHT
echo "window $WINDOW at ${X},${Y} size ${WIDTH}x${HEIGHT}"

check() {  # check MODE shot1 [shot2]: image assertions; prints measured stats
    "$PY" - "$@" "$X" "$Y" "$WIDTH" "$HEIGHT" <<'PY'
import sys
from PIL import Image, ImageChops, ImageStat
mode, args = sys.argv[1], sys.argv[2:]
x, y, w, h = map(int, args[-4:])
shots = [Image.open(p).convert("RGB") for p in args[:-4]]
# Side panel: the right 280 px of the window (it is 320 pt wide at scale 1). Main view: the window left of it, minus
# a margin for the panel's resize handle.
panel_box = (x + w - 280, y, x + w, y + h)
main_box = (x, y, x + w - 360, y + h)
def stats(img, box):
    s = ImageStat.Stat(img.crop(box).convert("L"))
    colors = img.crop(box).getcolors(1 << 20)
    return s.mean[0], s.stddev[0], len(colors) if colors else 1 << 20
p_mean, p_std, p_colors = stats(shots[0], panel_box)
m_mean, m_std, m_colors = stats(shots[0], main_box)
print(f"panel: mean {p_mean:.1f} stddev {p_std:.1f} colors {p_colors}; main: mean {m_mean:.1f} stddev {m_std:.1f} colors {m_colors}")
ok = p_std > 5 and p_colors > 8 and m_std > 10 and m_colors > 64
if mode == "ready":
    sys.exit(0 if ok else 1)
diff = ImageChops.difference(shots[0].crop(main_box), shots[1].crop(main_box)).convert("L")
changed = sum(1 for v in diff.getdata() if v > 16)
total = diff.width * diff.height
panel_diff = ImageStat.Stat(ImageChops.difference(shots[0].crop(panel_box), shots[1].crop(panel_box)).convert("L")).mean[0]
print(f"main view: {changed}/{total} pixels changed by >16 ({100 * changed / total:.1f}%), mean diff {ImageStat.Stat(diff).mean[0]:.2f}; panel mean diff {panel_diff:.2f}")
# The demo's 4:3 frames in the wider-than-4:3 main view leave letterbox bars at the top and bottom: black.
bar_h = 20
bars = [ImageStat.Stat(shots[1].crop((x, yy, x + w - 360, yy + bar_h)).convert("L")) for yy in (y, y + h - bar_h)]
print(f"letterbox bars: top mean {bars[0].mean[0]:.2f} max {bars[0].extrema[0][1]}, bottom mean {bars[1].mean[0]:.2f} max {bars[1].extrema[0][1]}")
if not ok:
    print("blank region"); sys.exit(1)
if any(b.extrema[0][1] > 8 for b in bars):
    print("letterbox bars are not black"); sys.exit(1)
if changed < total * 0.01:
    print("main view is not moving"); sys.exit(1)
PY
}

# Wait for the first frames (lavapipe compiles shaders on first use).
READY=
for i in $(seq $((FIRST_FRAME_TIMEOUT_S * 2))); do
    import -display "$DISPLAY_NUM" -window root "$ARTIFACTS/wait.png"
    if check ready "$ARTIFACTS/wait.png" >"$ARTIFACTS/wait.txt"; then READY=1; break; fi
    sleep 0.5
done
[ -n "$READY" ] || { cat "$ARTIFACTS/wait.txt"; fail "window stayed blank"; }
echo "window drawn after $("$PY" -c "print(f'{$(date +%s.%N) - $START_S:.1f}')") s"

import -display "$DISPLAY_NUM" -window root "$ARTIFACTS/shot1.png"
sleep "$SHOT_GAP_S"
import -display "$DISPLAY_NUM" -window root "$ARTIFACTS/shot2.png"
check compare "$ARTIFACTS/shot1.png" "$ARTIFACTS/shot2.png" || fail "screenshot check"

# Keyboard: focus the window (no window manager here, so windowactivate may be refused; windowfocus works).
xdotool windowactivate --sync "$WINDOW" 2>/dev/null || xdotool windowfocus --sync "$WINDOW"
xdotool mousemove --window "$WINDOW" 200 200
sleep 0.3
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
import -display "$DISPLAY_NUM" -window root "$ARTIFACTS/shot_recording.png"

xdotool key ctrl+q
for _ in $(seq $((QUIT_TIMEOUT_S * 10))); do kill -0 "$DEMO_PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$DEMO_PID" 2>/dev/null; then fail "demo still running ${QUIT_TIMEOUT_S}s after ctrl+q"; fi
wait "$DEMO_PID" || fail "demo exited with status $?"
DEMO_PID=
grep -q 'COMMAND Quit' "$ARTIFACTS/demo.out" || fail "no Quit command on close"
grep '^FINAL_SETTINGS ' "$ARTIFACTS/demo.out" || fail "no final settings printed"
echo "PASS"
