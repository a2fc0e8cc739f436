"""blendwire add-on: the BLD-Remote-compatible command service, on blendwire's Rust core.

Only declarations live here (preferences, two operators, a sidebar panel); the logic is in
`blendwire.blender`, which ships in the blendwire wheel.
"""

bl_info = {
    "name": "blendwire",
    "author": "blendwire",
    "version": (0, 1, 0),
    "blender": (3, 4, 0),
    "location": "3D Viewport > Sidebar (N) > blendwire",
    "description": "Remote-control service compatible with BLD Remote MCP, on a Rust networking core",
    "category": "Development",
}

import os
import sys
from types import SimpleNamespace

import bpy
from bpy.props import BoolProperty, FloatProperty, IntProperty, StringProperty

try:
    import blendwire
    from blendwire import blender as bw
    from blendwire import router
except ImportError as e:
    raise ImportError(
        f"blendwire add-on: the blendwire Python package cannot be imported by Blender's Python "
        f"({sys.version.split()[0]}): {e}. Install the blendwire wheel into that Python "
        f"(`{sys.executable} -m pip install blendwire-*.whl`) or append its site-packages "
        "directory to sys.path in a startup script, then enable the add-on again."
    ) from e

_DEFAULTS = SimpleNamespace(host="127.0.0.1", port=6688, start_with_blender=False,
                            queue_size=1024, tick_budget_ms=8.0,
                            engine_url="", username="", watchdog_seconds=300.0)


class BlendwirePreferences(bpy.types.AddonPreferences):
    bl_idname = __name__

    host: StringProperty(name="Host", default=_DEFAULTS.host,
                         description="Address to listen on (127.0.0.1: this machine only)")
    port: IntProperty(name="Port", default=_DEFAULTS.port, min=1024, max=65535,
                      description="TCP port; env BLD_REMOTE_MCP_PORT wins when the service auto-starts from it")
    start_with_blender: BoolProperty(name="Start with Blender", default=_DEFAULTS.start_with_blender,
                                     description="Start the service when the add-on loads")
    queue_size: IntProperty(name="Queue size", default=_DEFAULTS.queue_size, min=1, max=1_000_000,
                            description="Commands waiting for the main thread; more are answered 'busy'")
    tick_budget_ms: FloatProperty(name="Tick budget (ms)", default=_DEFAULTS.tick_budget_ms, min=0.5, max=100.0,
                                  description="Main-thread time per UI turn spent on commands")

    engine_url: StringProperty(name="Engine URL", default=_DEFAULTS.engine_url,
                               description="cr8_engine base URL for the router, e.g. http://127.0.0.1:8000 "
                                           "(empty: env WS_URL)")
    username: StringProperty(name="Username", default=_DEFAULTS.username,
                             description="Username sent when connecting (empty: env CR8_USERNAME or the login name)")
    watchdog_seconds: FloatProperty(name="Watchdog (s)", default=_DEFAULTS.watchdog_seconds, min=0.0,
                                    description="Save the file and quit this long after the engine is lost "
                                                "for good (0: never)")

    def draw(self, context):
        col = self.layout.column()
        for prop in ("host", "port", "start_with_blender", "queue_size", "tick_budget_ms"):
            col.prop(self, prop)
        col.separator()
        col.label(text="Router (cr8_engine)")
        for prop in ("engine_url", "username", "watchdog_seconds"):
            col.prop(self, prop)


def _settings():
    # Preferences may be missing (-b, or during the very first registration): fall back to defaults.
    try:
        addon = bpy.context.preferences.addons.get(__name__)
        if addon is not None and addon.preferences is not None:
            return addon.preferences
    except Exception:
        pass
    return _DEFAULTS


def _start(settings, port=None):
    return bw.start(settings.host, settings.port if port is None else port,
                    queue_capacity=settings.queue_size, tick_budget_ms=settings.tick_budget_ms)


class BLENDWIRE_OT_start(bpy.types.Operator):
    bl_idname = "blendwire.start"
    bl_label = "Start service"
    bl_description = "Start the blendwire command service"

    @classmethod
    def poll(cls, context):
        return not bw.is_running()

    def execute(self, context):
        try:
            host, port = _start(_settings())
        except blendwire.BlendwireError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        self.report({"INFO"}, f"blendwire serving on {host}:{port}")
        return {"FINISHED"}


class BLENDWIRE_OT_stop(bpy.types.Operator):
    bl_idname = "blendwire.stop"
    bl_label = "Stop service"
    bl_description = "Stop the blendwire command service and close its connections"

    @classmethod
    def poll(cls, context):
        return bw.is_running()

    def execute(self, context):
        bw.stop()
        return {"FINISHED"}


class BLENDWIRE_OT_router_start(bpy.types.Operator):
    bl_idname = "blendwire.router_start"
    bl_label = "Connect engine"
    bl_description = "Start the router: connect to the cr8_engine and keep connected"

    @classmethod
    def poll(cls, context):
        return not router.is_running()

    def execute(self, context):
        settings = _settings()
        try:
            router.start(settings.engine_url or None, watchdog_seconds=settings.watchdog_seconds,
                         username=settings.username or None)
        except (ValueError, blendwire.BlendwireError) as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        return {"FINISHED"}


class BLENDWIRE_OT_router_stop(bpy.types.Operator):
    bl_idname = "blendwire.router_stop"
    bl_label = "Disconnect engine"
    bl_description = "Stop the router and close its connection (the watchdog stops with it)"

    @classmethod
    def poll(cls, context):
        return router.is_running()

    def execute(self, context):
        router.stop()
        return {"FINISHED"}


def _draw_router(layout, rt):
    col = layout.column(align=True)
    state = rt.get("state", "stopped")
    if state == "stopped":
        col.label(text="Engine: off", icon="UNLINKED")
    else:
        col.label(text=f"Engine: {state}", icon="LINKED" if state == "connected" else "TIME")
        col.label(text=f"Attempts: {rt.get('attempts', 0)} (failed in a row: {rt.get('consecutive_failures', 0)})")
        if rt.get("watchdog_s") is not None:
            col.alert = True
            col.label(text=f"Saving and quitting in {rt['watchdog_s']:.0f} s", icon="ERROR")
        col.label(text=f"Commands: {rt.get('commands_completed', 0)} ok, {rt.get('commands_failed', 0)} failed")
        if rt.get("queued_replies"):
            col.label(text=f"Replies waiting: {rt['queued_replies']}")
    row = layout.row(align=True)
    row.operator(BLENDWIRE_OT_router_start.bl_idname, icon="PLAY")
    row.operator(BLENDWIRE_OT_router_stop.bl_idname, icon="PAUSE")


class BLENDWIRE_PT_status(bpy.types.Panel):
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "blendwire"
    bl_label = "blendwire"

    def draw(self, context):
        st = blendwire.status()
        svc, bridge = st.get("service") or {}, st.get("bridge") or {}
        col = self.layout.column(align=True)
        if svc.get("running"):
            col.label(text=f"On: {svc.get('host')}:{svc.get('port')}", icon="LINKED")
        else:
            col.label(text="Off", icon="UNLINKED")
        errors = svc.get("errors")
        n_errors = sum(errors.values()) if isinstance(errors, dict) else (errors or 0)
        col.label(text=f"Connections: {svc.get('connections_open', 0)}")
        col.label(text=f"Calls served: {bridge.get('completed', 0)}")
        col.label(text=f"Errors: {n_errors}")
        col.label(text=f"Queue: {bridge.get('queue_depth', 0)} / {bridge.get('capacity', '?')}")
        row = self.layout.row(align=True)
        row.operator(BLENDWIRE_OT_start.bl_idname, icon="PLAY")
        row.operator(BLENDWIRE_OT_stop.bl_idname, icon="PAUSE")
        self.layout.separator()
        _draw_router(self.layout, st.get("router") or {})
        if (st.get("router") or {}).get("watchdog_s") is not None:
            _redraw_while_counting()


def _redraw_while_counting():
    # The countdown must move without the mouse over the panel: redraw once a second while armed.
    if not bpy.app.timers.is_registered(_redraw_tick):
        bpy.app.timers.register(_redraw_tick, first_interval=1.0)


def _redraw_tick():
    try:
        for window in bpy.context.window_manager.windows:
            for area in window.screen.areas:
                if area.type == "VIEW_3D":
                    area.tag_redraw()
        armed = (blendwire.status().get("router") or {}).get("watchdog_s") is not None
    except Exception:
        return None
    return 1.0 if armed else None


_classes = (BlendwirePreferences, BLENDWIRE_OT_start, BLENDWIRE_OT_stop, BLENDWIRE_OT_router_start,
            BLENDWIRE_OT_router_stop, BLENDWIRE_PT_status)


def register():
    for cls in _classes:
        bpy.utils.register_class(cls)
    settings = _settings()
    from_env = bw.env_start_now()
    if bw.is_running() or not (from_env or settings.start_with_blender):
        return
    try:
        # BLD_REMOTE_MCP_PORT, when set, wins as it does for the peer; else the preference.
        env_port = from_env and "BLD_REMOTE_MCP_PORT" in os.environ
        host, port = _start(settings, port=bw.env_port() if env_port else None)
    except blendwire.BlendwireError as e:
        print(f"blendwire: could not start the service: {e}", file=sys.stderr)
        return
    print(f"blendwire: serving on {host}:{port}")
    if bw.mode() != "gui":
        print("blendwire: no UI here, so nothing runs the commands until a script calls "
              "blendwire.blender.run_until_shutdown() (or use `blendwire serve`)", file=sys.stderr)


def unregister():
    # Port free, router stopped and core threads gone before the module goes: enable/disable cycles
    # leave nothing.
    if bpy.app.timers.is_registered(_redraw_tick):
        bpy.app.timers.unregister(_redraw_tick)
    bw.stop(shutdown_core=True)
    for cls in reversed(_classes):
        bpy.utils.unregister_class(cls)
