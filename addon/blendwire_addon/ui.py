"""The add-on's Blender classes: preferences, operators and the sidebar panel.

Preferences are looked up under `__package__`: "blendwire_addon" as a legacy add-on,
"bl_ext.<repo>.blendwire" as an extension; the same code serves both."""

import os
import sys
import time

import blendwire
import bpy
from blendwire import _core, config, logs, router
from blendwire import blender as bw
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, StringProperty

from . import model

ADDON_ID = __package__

_LOG_ITEMS = [("ENV", "From environment", "BLD_REMOTE_LOG_LEVEL, INFO when unset")] + [
    (name, name.title(), f"{name} and more severe") for name in model.LOG_LEVELS
]


_CORE = _core.defaults()


class Defaults:
    """The preference defaults, also what the add-on uses where preferences do not exist yet
    (the very first registration, or scripts that never enabled it through the UI). The core's
    defaults where it has one."""

    host = _CORE["host"]
    port = _CORE["port"]
    start_with_blender = False
    mcp_addon = False
    mcp_addon_port = _CORE["mcp_addon_port"]
    token = ""
    queue_size = _CORE["queue_capacity"]
    tick_budget_ms = _CORE["tick_budget_ms"]
    engine_url = ""
    username = ""
    watchdog_seconds = float(_CORE["watchdog_seconds"])
    ca_file = ""
    log_level = "ENV"
    checkpoints = _CORE["checkpoints"]
    checkpoint_mib = _CORE["checkpoint_bytes"] // (1024 * 1024)
    checkpoint_dir = ""


class BlendwirePreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    host: StringProperty(
        name="Host",
        default=Defaults.host,
        description="Address to listen on (127.0.0.1: this machine only; anything else needs a token)",
    )
    port: IntProperty(
        name="Port",
        default=Defaults.port,
        min=model.PORT_RANGE[0],
        max=model.PORT_RANGE[1],
        description="TCP port; env BLD_REMOTE_MCP_PORT wins when the service auto-starts from it",
    )
    mcp_addon: BoolProperty(
        name="Serve MCP add-on clients",
        default=Defaults.mcp_addon,
        description="Also listen for the clients of the blender-mcp and Blender Lab MCP add-ons "
        f"(off: env {_CORE['mcp_addon_port_env']} decides)",
    )
    mcp_addon_port: IntProperty(
        name="MCP add-on port",
        default=Defaults.mcp_addon_port,
        min=model.PORT_RANGE[0],
        max=model.PORT_RANGE[1],
        description=f"Port of the MCP add-on listener; both ecosystems expect {_CORE['mcp_addon_port']}",
    )
    start_with_blender: BoolProperty(
        name="Start with Blender",
        default=Defaults.start_with_blender,
        description="Start the service when the add-on loads (also in blender -b, "
        "where a script must then run blendwire.blender.run_until_shutdown())",
    )
    token: StringProperty(
        name="Token",
        default=Defaults.token,
        subtype="PASSWORD",
        description="Every request must carry this token (empty: env BLENDWIRE_TOKEN, or none on loopback)",
    )
    queue_size: IntProperty(
        name="Queue size",
        default=Defaults.queue_size,
        min=model.QUEUE_RANGE[0],
        max=model.QUEUE_RANGE[1],
        description="Commands waiting for the main thread; more are answered 'busy'",
    )
    tick_budget_ms: FloatProperty(
        name="Tick budget (ms)",
        default=Defaults.tick_budget_ms,
        min=model.TICK_BUDGET_RANGE[0],
        max=model.TICK_BUDGET_RANGE[1],
        description="Main-thread time per UI turn spent on commands",
    )
    log_level: EnumProperty(
        name="Log level",
        items=_LOG_ITEMS,
        default=Defaults.log_level,
        description="Level of the 'blendwire' logger (connections open/close at Debug)",
    )

    engine_url: StringProperty(
        name="Engine URL",
        default=Defaults.engine_url,
        description="cr8_engine base URL for the router, e.g. http://127.0.0.1:8000 (empty: env WS_URL)",
    )
    username: StringProperty(
        name="Username",
        default=Defaults.username,
        maxlen=model.USERNAME_MAX,
        description="Username sent when connecting (empty: env CR8_USERNAME or the login name)",
    )
    watchdog_seconds: FloatProperty(
        name="Watchdog (s)",
        default=Defaults.watchdog_seconds,
        min=model.WATCHDOG_RANGE[0],
        max=model.WATCHDOG_RANGE[1],
        description="Save the file and quit this long after the engine is lost for good (0: never)",
    )

    ca_file: StringProperty(
        name="CA file",
        default=Defaults.ca_file,
        subtype="FILE_PATH",
        description="PEM file of CA certificates trusted besides the system's, for an https:// engine with a "
        f"private CA (empty: env {_CORE['ca_file_env']})",
    )

    # Checkpoints (issue 22): kept before every job that may change data.
    checkpoints: IntProperty(
        name="Checkpoints",
        default=Defaults.checkpoints,
        min=0,
        description="How many checkpoints to keep (the scene before each job that may change data, "
        "for restore_checkpoint); 0: off",
    )
    checkpoint_mib: IntProperty(
        name="Checkpoint budget (MiB)",
        default=Defaults.checkpoint_mib,
        min=1,
        description="At most this much disk for the checkpoints; the oldest go first",
    )
    checkpoint_dir: StringProperty(
        name="Checkpoint folder",
        default=Defaults.checkpoint_dir,
        subtype="DIR_PATH",
        description="Where checkpoints are kept (empty: checkpoints/ in the user's state directory); "
        "one private folder per Blender process inside it",
    )

    def draw(self, context):
        col = self.layout.column()
        for prop in ("host", "port", "token", "start_with_blender", "queue_size", "tick_budget_ms", "log_level"):
            col.prop(self, prop)
        row = col.row()
        row.prop(self, "mcp_addon")
        sub = row.row()
        sub.enabled = self.mcp_addon
        sub.prop(self, "mcp_addon_port")
        col.separator()
        col.label(text="Router (cr8_engine)")
        for prop in ("engine_url", "ca_file", "username", "watchdog_seconds"):
            col.prop(self, prop)
        col.separator()
        col.label(text="Checkpoints")
        for prop in ("checkpoints", "checkpoint_mib", "checkpoint_dir"):
            col.prop(self, prop)
        problems = model.validate(self)
        if problems:
            box = self.layout.box()
            box.alert = True
            for text in problems:
                box.label(text=text, icon="ERROR")


def settings():
    """The add-on's preferences, or Defaults where they do not exist (-b before the first save,
    the very first registration)."""
    try:
        addon = bpy.context.preferences.addons.get(ADDON_ID)
        if addon is not None and addon.preferences is not None:
            return addon.preferences
    except Exception:
        pass
    return Defaults


def effective_log_level(s):
    return model.log_level(getattr(s, "log_level", "ENV"), config.env_log_level())


def mcp_addon_port(s):
    """The MCP add-on listener's port from the preferences (else env BLENDWIRE_MCP_ADDON_PORT),
    None: off. ValueError with a sentence for the UI when the variable is not a number."""
    if getattr(s, "mcp_addon", False):
        return int(s.mcp_addon_port)
    try:
        return _core.mcp_addon_port_from_env()
    except ValueError as e:
        raise ValueError(model.sentence(str(e))) from None


def start_service(s, port=None):
    """Validate, then start. Returns (host, port); raises ValueError with a sentence for the UI."""
    port = int(s.port if port is None else port)
    addon_port = mcp_addon_port(s)
    problems = model.validate(s)
    if not (model.PORT_RANGE[0] <= port <= model.PORT_RANGE[1]):
        problems.append(f"Port {port} is out of range: use {model.PORT_RANGE[0]}-{model.PORT_RANGE[1]}.")
    if problems:
        raise ValueError(" ".join(problems))
    host = s.host.strip()
    if addon_port is not None:
        problems = model.sentences(_core.check_service_settings(port=port, mcp_addon_port=addon_port))
        if problems:
            raise ValueError(" ".join(problems))
    for p in (port, addon_port):
        taken = model.port_problem(host, p) if p else None
        if taken:
            raise ValueError(taken)
    level = effective_log_level(s)
    logs.setup(level)
    try:
        return bw.start(
            host,
            port,
            mcp_addon_port=addon_port,
            queue_capacity=s.queue_size,
            tick_budget_ms=s.tick_budget_ms,
            token=s.token or None,
            log_level=level,
            **checkpoint_settings(s),
        )
    except blendwire.BlendwireError as e:
        raise ValueError(str(e)) from e


def checkpoint_settings(s):
    """The preferences' checkpoint settings as `blendwire.blender.start` takes them."""
    folder = getattr(s, "checkpoint_dir", "")
    return {
        "checkpoints": int(getattr(s, "checkpoints", Defaults.checkpoints)),
        "checkpoint_bytes": int(getattr(s, "checkpoint_mib", Defaults.checkpoint_mib)) * 1024 * 1024,
        "checkpoint_dir": os.path.abspath(model.bpy_abspath(folder)) if folder else None,
    }


class BLENDWIRE_OT_start(bpy.types.Operator):
    bl_idname = "blendwire.start"
    bl_label = "Start service"
    bl_description = "Start the blendwire command service with the add-on's preferences"

    @classmethod
    def poll(cls, context):
        return not bw.is_running()

    def execute(self, context):
        try:
            host, port = start_service(settings())
        except ValueError as e:
            self.report({"ERROR"}, f"blendwire: {e}")
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
        s = settings()
        problems = [p for p in model.validate(s) if p.startswith(("Engine URL", "CA file", "Username", "Watchdog"))]
        if problems:
            self.report({"ERROR"}, "blendwire: " + " ".join(problems))
            return {"CANCELLED"}
        try:
            router.start(
                s.engine_url.strip() or None,
                watchdog_seconds=s.watchdog_seconds,
                username=s.username or None,
                ca_file=model.bpy_abspath(s.ca_file.strip()) if s.ca_file.strip() else None,
            )
        except (ValueError, blendwire.BlendwireError) as e:
            self.report({"ERROR"}, f"blendwire: {e}")
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


# What the panel drew last: the status it read and the rows it showed (tests compare them).
LAST_DRAWN = {"time": None, "status": None, "rows": None}


def _draw_rows(layout, rows):
    col = layout.column(align=True)
    for row in rows:
        sub = col.row()
        sub.alert = row.alert
        sub.label(text=row.text, icon=row.icon)


class BLENDWIRE_PT_status(bpy.types.Panel):
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "blendwire"
    bl_label = "blendwire"

    def draw(self, context):
        st = blendwire.status()
        service, engine = model.service_rows(st), model.router_rows(st)
        LAST_DRAWN.update(time=time.monotonic(), status=st, rows=service + engine)
        _draw_rows(self.layout, service)
        row = self.layout.row(align=True)
        # Short texts: the sidebar is narrow by default.
        row.operator(BLENDWIRE_OT_start.bl_idname, text="Start", icon="PLAY")
        row.operator(BLENDWIRE_OT_stop.bl_idname, text="Stop", icon="PAUSE")
        self.layout.separator()
        _draw_rows(self.layout, engine)
        row = self.layout.row(align=True)
        row.operator(BLENDWIRE_OT_router_start.bl_idname, text="Connect", icon="PLAY")
        row.operator(BLENDWIRE_OT_router_stop.bl_idname, text="Disconnect", icon="PAUSE")
        _keep_fresh()


# ---- live numbers: redraw the sidebar once a second while the panel is being drawn -------------

_REFRESH_S = 1.0


def _keep_fresh():
    if not bpy.app.timers.is_registered(_refresh_tick):
        bpy.app.timers.register(_refresh_tick, first_interval=_REFRESH_S)


def _refresh_tick():
    try:
        drawn = LAST_DRAWN["time"]
        if drawn is None or time.monotonic() - drawn > 3 * _REFRESH_S:
            return None  # the panel is closed or hidden: stop until it draws again
        for window in bpy.context.window_manager.windows:
            for area in window.screen.areas:
                if area.type == "VIEW_3D":
                    for region in area.regions:
                        if region.type == "UI":
                            region.tag_redraw()
    except Exception:
        return None
    return _REFRESH_S


classes = (
    BlendwirePreferences,
    BLENDWIRE_OT_start,
    BLENDWIRE_OT_stop,
    BLENDWIRE_OT_router_start,
    BLENDWIRE_OT_router_stop,
    BLENDWIRE_PT_status,
)


def register():
    for cls in classes:
        bpy.utils.register_class(cls)
    s = settings()
    from_env = bw.env_start_now()
    if bw.is_running() or not (from_env or s.start_with_blender):
        return
    try:
        # BLD_REMOTE_MCP_PORT, when set, wins as it does for the peer; else the preference.
        host, port = start_service(s, port=config.env_port_if_set() if from_env else None)
    except ValueError as e:
        print(f"blendwire: could not start the service: {e}", file=sys.stderr)
        return
    print(f"blendwire: serving on {host}:{port}", flush=True)
    if bw.mode() != "gui":
        print(
            "blendwire: no UI here, so nothing runs the commands until a script calls "
            "blendwire.blender.run_until_shutdown() (or use `blendwire serve`)",
            file=sys.stderr,
        )


def unregister():
    # Port free, router stopped and core threads gone before the module goes: enable/disable cycles
    # leave nothing.
    if bpy.app.timers.is_registered(_refresh_tick):
        bpy.app.timers.unregister(_refresh_tick)
    LAST_DRAWN.update(time=None, status=None, rows=None)
    bw.stop(shutdown_core=True)
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
