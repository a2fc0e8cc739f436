"""The status panel in the real UI (Debian's Blender 3.4 under Xvfb, `gui` phase).

A GUI Blender with the add-on enabled (BLD_REMOTE_MCP_START_NOW: the add-on itself starts the
service and its timer) is driven over one persistent connection: open the 3D viewport's sidebar,
switch it to the "blendwire" tab, draw, take a screenshot (python_tests/artifacts/panel.png, and a
crop of the sidebar, panel_crop.png), and compare the rows the panel drew with `blendwire.status()`
read in the same main-thread call.

Blender 3.4 has no Python API for the sidebar's active tab (Region.active_panel_category is 4.2+),
so the test cycles tabs with simulated Ctrl+wheel events over the tab strip
(`--enable-event-simulate`) until the panel draws.
"""

import json
import os
import shutil
import signal
import subprocess
import sys

import bwtest
import pytest

pytestmark = pytest.mark.gui

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARTIFACTS = os.path.join(ROOT, "python_tests", "artifacts")

BOOT = """
import glob, site, sys
# The venv's site-packages APPENDED (the blendwire wheel; Blender's own modules keep precedence).
for p in glob.glob({root!r} + '/.venv/lib/python3*/site-packages'):
    site.addsitedir(p)
sys.path.insert(0, {root!r} + '/addon')
import addon_utils, bpy
bpy.context.preferences.view.show_splash = False  # a modal splash would swallow the simulated events
assert addon_utils.enable('blendwire_addon', default_set=True) is not None
"""

OPEN_SIDEBAR = """
import bpy
win = bpy.context.window_manager.windows[0]
area = next(a for a in win.screen.areas if a.type == 'VIEW_3D')
area.spaces.active.show_region_ui = True
"""

# One step of tab cycling: report whether the panel has drawn; if not, one Ctrl+wheel over the tabs.
CYCLE_TAB = """
import bpy, sys, json
ui = sys.modules['blendwire_addon.ui']
win = bpy.context.window_manager.windows[0]
area = next(a for a in win.screen.areas if a.type == 'VIEW_3D')
reg = next(r for r in area.regions if r.type == 'UI')
drawn = ui.LAST_DRAWN['time'] is not None
if not drawn:
    x, y = reg.x + reg.width - 8, reg.y + reg.height - 40  # the tab strip at the sidebar's right edge
    win.event_simulate(type='MOUSEMOVE', value='NOTHING', x=x, y=y)
    win.event_simulate(type='WHEELDOWNMOUSE', value='PRESS', x=x, y=y, ctrl=True)
print(json.dumps(drawn))
"""

# Draw now (inside this call, so the numbers are this moment's), screenshot, crop the sidebar.
CAPTURE = """
import bpy, sys, json, blendwire
ui = sys.modules['blendwire_addon.ui']
win = bpy.context.window_manager.windows[0]
area = next(a for a in win.screen.areas if a.type == 'VIEW_3D')
reg = next(r for r in area.regions if r.type == 'UI')
ui.LAST_DRAWN['time'] = None
reg.tag_redraw()
with bpy.context.temp_override(window=win, area=area):
    bpy.ops.wm.redraw_timer(type='DRAW_WIN_SWAP', iterations=1)
    shot = bpy.ops.screen.screenshot(filepath={full!r}, check_existing=False)
now = blendwire.status()
# The sidebar's top part, for docs/install.md (small enough to commit).
img = bpy.data.images.load({full!r})
w, h = img.size
import numpy as np
px = np.empty(w * h * 4, dtype=np.float32)
img.pixels.foreach_get(px)
px = px.reshape(h, w, 4)
top = reg.y + reg.height
crop = px[max(0, top - 360):top, max(0, reg.x - 40):reg.x + reg.width].copy()
out = bpy.data.images.new('panel_crop', crop.shape[1], crop.shape[0])
out.pixels.foreach_set(crop.ravel())
out.filepath_raw = {crop!r}
out.file_format = 'PNG'
out.save()
print(json.dumps({{"shot": sorted(shot), "drew": ui.LAST_DRAWN['time'] is not None,
                  "rows": ui.LAST_DRAWN['rows'], "status_drawn": ui.LAST_DRAWN['status'],
                  "status_now": now, "size": [w, h], "window": [win.width, win.height]}}))
"""


def _blender_gui_command(boot):
    blender = shutil.which("blender")
    if blender is None:
        pytest.fail("Debian's blender is not installed (scripts/setup installs it)")
    cmd = [blender, "--factory-startup", "--enable-event-simulate", "--python-exit-code", "2", "--python-expr", boot]
    if not os.environ.get("DISPLAY"):
        xvfb = shutil.which("xvfb-run")
        if xvfb is None:
            pytest.fail("no DISPLAY and no xvfb-run")
        cmd = [xvfb, "-a", "-s", "-screen 0 1280x1024x24"] + cmd
    return cmd


def _run(conn, code):
    result = bwtest.assert_success(conn.request({"type": "execute_code", "params": {"code": code}}))
    return json.loads(bwtest.stdout_of(result).strip().splitlines()[-1])


def test_status_panel_shows_the_status(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "addon"))
    from blendwire_addon import model

    os.makedirs(ARTIFACTS, exist_ok=True)
    full, crop = os.path.join(ARTIFACTS, "panel.png"), os.path.join(ARTIFACTS, "panel_crop.png")
    for path in (full, crop):
        if os.path.exists(path):
            os.remove(path)
    port = bwtest.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BLD_REMOTE", "BLENDWIRE"))}
    # Made first: Blender 3.4 takes BLENDER_USER_CONFIG only if the folder exists, else it writes
    # to the user's own ~/.config/blender/3.4/config.
    for name in ("config", "scripts"):
        (tmp_path / name).mkdir(exist_ok=True)
    env.update(
        BLD_REMOTE_MCP_START_NOW="1",
        BLD_REMOTE_MCP_PORT=str(port),
        BLENDER_USER_CONFIG=str(tmp_path / "config"),
        BLENDER_USER_SCRIPTS=str(tmp_path / "scripts"),
    )
    log = open(tmp_path / "blender.log", "w+")
    proc = subprocess.Popen(
        _blender_gui_command(BOOT.format(root=ROOT)),
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=str(tmp_path),
    )
    try:
        bwtest.wait_for(
            lambda: proc.poll() is not None or not bwtest.connection_refused(port),
            120,
            "the add-on's service in the GUI Blender",
            interval=0.1,
        )
        assert proc.poll() is None, "Blender exited:\n" + (tmp_path / "blender.log").read_text()[-3000:]
        with bwtest.Conn(port) as conn:
            _run(conn, OPEN_SIDEBAR + "\nprint('null')")
            bwtest.wait_for(lambda: _run(conn, CYCLE_TAB), 60, "the blendwire tab to draw", interval=0.3)
            cap = _run(conn, CAPTURE.format(full=full, crop=crop))
            # Exit through the UI, one turn later (quit_blender returns a set: wrap it for the timer).
            conn.request(
                {
                    "type": "execute_code",
                    "params": {
                        "code": (
                            "import bpy; bpy.app.timers.register(lambda: (bpy.ops.wm.quit_blender(), None)[1], "
                            "first_interval=0.2)"
                        )
                    },
                }
            )
        assert proc.wait(60) == 0, (tmp_path / "blender.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()

    assert cap["shot"] == ["FINISHED"] and cap["drew"], cap
    with open(full, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert cap["size"] == cap["window"], cap  # the whole window
    assert os.path.getsize(crop) < 200_000

    rows = {key: (text, value) for key, text, icon, alert, value in cap["rows"]}
    # The panel draws exactly the rows model builds from the status it read...
    drawn = cap["status_drawn"]
    assert [list(r) for r in model.service_rows(drawn) + model.router_rows(drawn)] == cap["rows"]
    # ...and that is this moment's status (read right after, in the same main-thread call).
    now = cap["status_now"]
    svc, bridge = now["service"], now["bridge"]
    assert rows["service"] == (f"On: 127.0.0.1:{port}", f"127.0.0.1:{port}")
    assert rows["clients"] == ("Clients: 1", 1) == (f"Clients: {svc['connections_open']}", svc["connections_open"])
    assert rows["calls"] == (f"Calls served: {svc['requests']}", svc["requests"])
    assert svc["requests"] >= 3  # open sidebar, >= 1 tab step, this capture
    assert rows["errors"] == (f"Errors: {model.error_count(svc)}", model.error_count(svc)) == ("Errors: 0", 0)
    assert rows["queue"] == (f"Queue: {bridge['queue_depth']} / {bridge['capacity']}", bridge["queue_depth"])
    assert rows["latency"][1] == drawn["bridge"]["last_latency_ms"] > 0
    assert rows["router"] == ("Engine: off", "stopped") and now["router"]["state"] == "stopped"
