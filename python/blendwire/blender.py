"""The command service inside Blender: start, stop, address.

`start()` starts the BLD-Remote-compatible service of the core with `blendwire.handlers.bld_remote` as its
dispatcher and hands the main-thread loop (`blendwire.runtime`) its jobs: in the GUI a timer runs
them; in `blender -b` and the bpy module call `run_until_shutdown()` next. Main thread only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from . import _core, logs, runtime
from .config import env_audit_log, env_port, env_start_now, env_token
from .errors import ServiceError, require_main_thread
from .handlers import bld_remote, blender_lab, blender_mcp, keeper
from .handlers import checkpoints as checkpoint_store
from .runtime import ensure_timer, mode, request_stop

__all__ = [
    "address",
    "mcp_addon_address",
    "ensure_timer",
    "env_port",
    "env_start_now",
    "is_running",
    "mode",
    "request_stop",
    "run_until_shutdown",
    "start",
    "stop",
]

T = TypeVar("T")


def is_running() -> bool:
    return _core.service_address() is not None


def address() -> tuple[str, int] | None:
    """(host, port) while the service runs, else None."""
    return _core.service_address()


def mcp_addon_address() -> tuple[str, int] | None:
    """(host, port) of the MCP add-on listener (blender-mcp, Blender Lab) while it runs, else None."""
    return _core.mcp_addon_address()


def start(
    host: str | None = None,
    port: int | None = None,
    *,
    mcp_addon_port: int | None = None,
    queue_capacity: int | None = None,
    tick_budget_ms: float | None = None,
    default_timeout: float | None = None,
    max_request_bytes: int | None = None,
    quit_on_shutdown: bool = False,
    token: str | None = None,
    log_level: int | str | None = None,
    read_timeout: float | None = None,
    max_connections: int | None = None,
    audit_log: str | None = None,
    audit_code: str | None = None,
    audit_max_bytes: int | None = None,
    checkpoints: int | None = None,
    checkpoint_bytes: int | None = None,
    checkpoint_dir: str | None = None,
) -> tuple[str, int]:
    """Start the command service; return the bound (host, port).

    `port=None` takes `BLD_REMOTE_MCP_PORT` (default 6688); 0 picks a free port. Settings left at
    None take the core's defaults (`_core.defaults()`). In the GUI a timer runs the queued
    commands; in background/bpy call `run_until_shutdown()` next.
    `quit_on_shutdown`: in the GUI, quit Blender after a `server_shutdown` command (as
    `blendwire serve --gui` wants); otherwise only the service stops, like the peer add-on does.
    `token` (default: env `BLENDWIRE_TOKEN`): every request must then carry `"token"`; a host
    other than loopback is refused without one (execute_code runs arbitrary code).
    `log_level` (a `logging` level name or number; default: env `BLD_REMOTE_LOG_LEVEL`, else the
    core's INFO): the core's records and the `blendwire` logger; DEBUG shows connections open/close.
    `mcp_addon_port`: also listen there for the MCP add-ons' clients (blender-mcp and Blender Lab,
    told apart per connection; both expect 9876; 0 picks a free port; see `mcp_addon_address()`),
    with the same limits, token and queue; None: off.
    `audit_log` (default: env `BLENDWIRE_AUDIT_LOG`, else the state directory's `audit.jsonl`; "off":
    none), `audit_code` ("full" or "hash"), `audit_max_bytes`: the audit log of every request
    (`_core.set_audit`); a file that cannot be written is a ValueError naming `audit_log`.
    `checkpoints` (how many to keep, 0: off), `checkpoint_bytes` (their budget), `checkpoint_dir`
    (the folder): the checkpoints kept before every job that may change data
    (`blendwire.handlers.checkpoints`; None: the core's defaults, `_core.checkpoint_settings`).
    Raises PortInUse when the port is taken, ServiceError when already running or insecure,
    ValueError for a bad setting.
    """
    require_main_thread("blendwire.blender.start")
    running = _core.service_address()
    if running is not None:
        raise ServiceError(f"the blendwire service is already running on {running[0]}:{running[1]}; call stop() first")
    logs.apply_level(log_level)
    checkpoint_store.configure(_opt(int, checkpoints), _opt(int, checkpoint_bytes), checkpoint_dir)
    if queue_capacity is not None:
        _core.set_queue_capacity(int(queue_capacity))
    _core.set_dispatcher(bld_remote.dispatch)
    _core.set_dispatcher(blender_mcp.dispatch, dialect="blender_mcp")
    _core.set_dispatcher(blender_lab.dispatch, dialect="blender_lab")
    _core.set_keeper(keeper.keep)
    _start_audit(audit_log, audit_code, audit_max_bytes)
    bound = _core.start_service(
        host,
        env_port() if port is None else int(port),
        bld_remote.COMMANDS,
        mcp_addon_port=_opt(int, mcp_addon_port),
        default_timeout=_opt(float, default_timeout),
        max_request_bytes=_opt(int, max_request_bytes),
        max_connections=_opt(int, max_connections),
        read_timeout=_opt(float, read_timeout),
        token=token if token is not None else env_token(),
    )
    runtime.begin_serving(budget_ms=tick_budget_ms, quit_on_shutdown=quit_on_shutdown)
    return bound


def _start_audit(audit_log: str | None, audit_code: str | None, audit_max_bytes: int | None) -> None:
    _core.set_audit(
        audit_log=audit_log if audit_log is not None else env_audit_log(),
        audit_code=audit_code,
        audit_max_bytes=_opt(int, audit_max_bytes),
    )


def _opt(kind: Callable[[Any], T], value: Any) -> T | None:
    # As before the core took None for "its default": numbers given as other types still convert.
    return None if value is None else kind(value)


def stop(*, shutdown_core: bool = False, timeout: float | None = None) -> bool:
    """Stop the service (the port is free when this returns) and the GUI timer. Idempotent.

    `shutdown_core=True` also stops the router and ends the core's background threads (add-on
    unregister). `timeout`: seconds for each to stop (None: the core's `stop_timeout`). Returns True
    if the service was running."""
    require_main_thread("blendwire.blender.stop")
    if shutdown_core:
        _core.stop_router(timeout)
    was_running = bool(_core.stop_service(timeout))
    for dialect in (None, "blender_mcp", "blender_lab"):
        _core.set_dispatcher(None, dialect=dialect)
    runtime.end_serving()
    if shutdown_core:
        _core.shutdown(timeout)
    return was_running


def run_until_shutdown() -> str:
    """-b / bpy: serve commands on this thread until `server_shutdown`, SIGINT or SIGTERM (see
    `blendwire.runtime.run_until_shutdown`); returns the reason."""
    # A service that already got `server_shutdown` counts as started: the pump returns at once.
    if "port" not in _core.status()["service"]:
        raise ServiceError("the blendwire service is not running: call blendwire.blender.start() first")
    return runtime.run_until_shutdown()
