# Shared helpers of the Xvfb window tests (sourced, not run): tool checks, the artifacts folder and exit clean-up, a
# virtual X server, waiting for the window, screenshots and the image checks on them, quitting. Callers define `fail`
# and put the app's process id in APP_PID.
#
# Needs: apt-get install -y xvfb mesa-vulkan-drivers libvulkan1 imagemagick xdotool x11-utils python3-pil

DISPLAY_NUM=${XVFB_DISPLAY:-:99}
SCREEN_SIZE=1280x800
WINDOW_NAME='^MetaPortrait$'
XVFB_TIMEOUT_S=${XVFB_TIMEOUT_S:-30}
WINDOW_TIMEOUT_S=60
FIRST_FRAME_TIMEOUT_S=60
XVFB_PID=
APP_PID=

# Exits 2 (skip) when a tool is missing; sets PY to a python3 that has PIL.
xvfb_require_tools() {
    for tool in Xvfb xdotool import xdpyinfo; do
        command -v "$tool" >/dev/null || { echo "SKIP: $tool missing (see the apt line in tests/xvfb_lib.sh)"; exit 2; }
    done
    PY=
    for candidate in python3 /usr/bin/python3; do   # a pyenv python3 may shadow the one python3-pil installs into
        if command -v "$candidate" >/dev/null && "$candidate" -c 'import PIL' 2>/dev/null; then PY=$candidate; break; fi
    done
    [ -n "$PY" ] || { echo "SKIP: no python3 with PIL (apt-get install python3-pil)"; exit 2; }
}

# xvfb_artifacts NAME: sets ARTIFACTS (default: a fresh /tmp/NAME.XXXXXX) and, on exit, stops the app and the X
# server and prints where the artifacts are.
xvfb_artifacts() {
    ARTIFACTS=${ARTIFACTS:-$(mktemp -d "/tmp/$1.XXXXXX")}
    mkdir -p "$ARTIFACTS"
    trap xvfb_cleanup EXIT
}

xvfb_cleanup() {
    [ -n "$APP_PID" ] && kill "$APP_PID" 2>/dev/null || true
    xvfb_stop
    wait 2>/dev/null || true
    echo "artifacts: $ARTIFACTS"
}

# xvfb_quit NAME TIMEOUT_S: presses Ctrl+Q and waits up to TIMEOUT_S for the app to exit with status 0.
xvfb_quit() {
    xdotool key ctrl+q
    for _ in $(seq $(($2 * 10))); do kill -0 "$APP_PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$APP_PID" 2>/dev/null; then fail "$1 still running ${2}s after ctrl+q"; fi
    wait "$APP_PID" || fail "$1 exited with status $?"
    APP_PID=
}

# Starts Xvfb on $DISPLAY_NUM and exports DISPLAY once it answers.
xvfb_start() {
    # -noreset: without it the server resets whenever its last client disconnects, and a connection made during
    # the reset (the next probe, or the app itself) fails.
    Xvfb "$DISPLAY_NUM" -screen 0 "${SCREEN_SIZE}x24" -nolisten tcp -noreset >"$ARTIFACTS/xvfb.log" 2>&1 &
    XVFB_PID=$!
    for _ in $(seq $((XVFB_TIMEOUT_S * 10))); do
        kill -0 "$XVFB_PID" 2>/dev/null || { cat "$ARTIFACTS/xvfb.log"; fail "Xvfb exited (is $DISPLAY_NUM taken? set XVFB_DISPLAY)"; }
        if xdpyinfo -display "$DISPLAY_NUM" >/dev/null 2>&1; then export DISPLAY=$DISPLAY_NUM; return 0; fi
        sleep 0.1
    done
    echo "Xvfb log:"; cat "$ARTIFACTS/xvfb.log"; ls -la /tmp/.X11-unix
    fail "Xvfb did not answer within ${XVFB_TIMEOUT_S}s"
}

xvfb_stop() {
    [ -n "$XVFB_PID" ] && kill "$XVFB_PID" 2>/dev/null || true
}

# xvfb_wait_window PID: waits for the window of process PID; sets WINDOW, X, Y, WIDTH, HEIGHT.
xvfb_wait_window() {
    WINDOW=
    for _ in $(seq $((WINDOW_TIMEOUT_S * 5))); do
        kill -0 "$1" 2>/dev/null || fail "the app exited before its window appeared"
        WINDOW=$(xdotool search --onlyvisible --name "$WINDOW_NAME" 2>/dev/null | head -1 || true)
        [ -n "$WINDOW" ] && break
        sleep 0.2
    done
    [ -n "$WINDOW" ] || fail "no window named $WINDOW_NAME after ${WINDOW_TIMEOUT_S}s"
    eval "$(xdotool getwindowgeometry --shell "$WINDOW")"   # sets X, Y, WIDTH, HEIGHT
    echo "window $WINDOW at ${X},${Y} size ${WIDTH}x${HEIGHT}"
}

xvfb_shot() {
    import -display "$DISPLAY_NUM" -window root "$1"
}

# xvfb_check MODE shot1 [shot2]: MODE `ready` (panel and main view drawn), `moving` (also: the main view changed
# between the shots) or `letterboxed` (also: black bars above and below the main view's picture).
xvfb_check() {
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
if not ok:
    print("blank region"); sys.exit(1)
diff = ImageChops.difference(shots[0].crop(main_box), shots[1].crop(main_box)).convert("L")
changed = sum(1 for v in diff.getdata() if v > 16)
total = diff.width * diff.height
print(f"main view: {changed}/{total} pixels changed by >16 ({100 * changed / total:.2f}%), mean diff {ImageStat.Stat(diff).mean[0]:.2f}")
if changed < total * 0.01:
    print("main view is not moving"); sys.exit(1)
if mode == "letterboxed":
    bar_h = 20
    bars = [ImageStat.Stat(shots[1].crop((x, yy, x + w - 360, yy + bar_h)).convert("L")) for yy in (y, y + h - bar_h)]
    print(f"letterbox bars: top mean {bars[0].mean[0]:.2f} max {bars[0].extrema[0][1]}, bottom mean {bars[1].mean[0]:.2f} max {bars[1].extrema[0][1]}")
    if any(b.extrema[0][1] > 8 for b in bars):
        print("letterbox bars are not black"); sys.exit(1)
PY
}

# xvfb_wait_drawn: screenshots until the window shows a drawn panel and main view.
xvfb_wait_drawn() {
    for _ in $(seq $((FIRST_FRAME_TIMEOUT_S * 2))); do
        xvfb_shot "$ARTIFACTS/wait.png"
        if xvfb_check ready "$ARTIFACTS/wait.png" >"$ARTIFACTS/wait.txt"; then return 0; fi
        sleep 0.5
    done
    cat "$ARTIFACTS/wait.txt"
    fail "window stayed blank"
}

# Focuses the window for keyboard input (no window manager here, so windowactivate may be refused).
xvfb_focus() {
    xdotool windowactivate --sync "$WINDOW" 2>/dev/null || xdotool windowfocus --sync "$WINDOW"
    xdotool mousemove --window "$WINDOW" 200 200
    sleep 0.3
}
