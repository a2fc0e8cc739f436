"""`blendwire.Client`: a script-friendly client of a blendwire / BLD Remote service."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

from . import _core
from .config import env_token

__all__ = ["Client"]

# A call of `call_many`: a bare command type, or (type,) / (type, params).
Call = str | tuple[str] | tuple[str, Mapping[str, Any] | None]
# A `progress` callback: given each progress message (a dict) of the job.
Progress = Callable[[dict[str, Any]], Any]


class Client:
    """Persistent connections to the service (thread-safe: calls from several threads each use
    a connection of their own; reconnects with backoff and jitter when a connection is found
    closed before a call). See `_core.Client` for the error types.

        with blendwire.Client(port=6688) as c:
            print(c.execute("print(len(bpy.data.objects))"))

    Ctrl-C (KeyboardInterrupt) during a call cancels its job in Blender (queued: dropped; running:
    interrupted) before it is raised; so does `cancel()` from another thread.
    """

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        timeout: float | None = None,
        connect_timeout: float | None = None,
        token: str | None = None,
    ) -> None:
        # timeout bounds each call; connect_timeout bounds the (re)connect attempts within it;
        # None takes the core's default (127.0.0.1:6688, 33 s, 5 s: `_core.defaults()`).
        # token: for services started with BLENDWIRE_TOKEN (default: that variable, if set).
        if token is None:
            token = env_token()
        self._client = _core.Client(
            host,
            None if port is None else int(port),
            None if timeout is None else float(timeout),
            None if connect_timeout is None else float(connect_timeout),
            token,
        )

    def call(
        self,
        type: str,
        params: Mapping[str, Any] | None = None,
        *,
        progress: Progress | None = None,
        job_id: str | int | None = None,
    ) -> Any:
        """Send a command; return its `result`. Raises CommandError on `status: error`
        (`error_code == "cancelled"` when its job was cancelled).

        `progress`: a callable given each progress message of the job (a dict with `fraction`,
        `message`, `output` (text printed since the last one), `elapsed_s`, as far as known),
        at most ~20 a second, before the result; an exception it raises cancels the job and
        is raised here. `job_id`: the job's name for `cancel(job_id)` (default: a fresh one)."""
        return self._client.call(type, params, progress, job_id)

    def cancel(self, job_id: str | int | None = None) -> bool:
        """Cancel the job named `job_id`, or (None) every call of this client still waiting: a
        queued job is dropped, a running one interrupted; each call then raises CommandError with
        `error_code == "cancelled"`. Returns whether a job was found to cancel."""
        return self._client.cancel(job_id)

    def call_many(self, calls: Iterable[Call], *, return_errors: bool = False) -> list[Any]:
        """Send many commands without waiting for each answer (pipelined on the one connection;
        needs a blendwire service, the BLD Remote add-on takes one request at a time). `calls`:
        `(type, params)` pairs or bare types. Returns the results in order; the first failure
        raises its CommandError after all answers are read, unless `return_errors`, which puts
        the CommandError in that place of the list instead.

            infos = c.call_many(("get_object_info", {"name": n}) for n in names)
        """
        return self._client.call_many(calls, return_errors)

    def request(self, message: Mapping[str, Any]) -> dict[str, Any]:
        """Send any JSON object; return the whole response object."""
        return self._client.request(message)

    def execute(
        self,
        code: str,
        *,
        timeout_seconds: float | None = None,
        progress: Progress | None = None,
        job_id: str | int | None = None,
    ) -> str:
        """Run Python `code` in Blender (fresh globals with `bpy`); return what it printed.

        `timeout_seconds`: the job's deadline in Blender (`params._timeout_seconds`; default the
        service's): code still running then is interrupted, and this raises CommandError with
        `error_code == "interrupted"`. `progress`: called with each progress message while the
        code runs: what it reports with `blendwire.progress(fraction, message)`, what it prints
        (`output`), and the progress of renders it starts (see `call`)."""
        # Base64 both ways, as blender-remote's client does: survives any quoting or encoding.
        params: dict[str, Any] = {
            "code": base64.b64encode(code.encode("utf-8")).decode("ascii"),
            "code_is_base64": True,
            "return_as_base64": True,
        }
        if timeout_seconds is not None:
            params["_timeout_seconds"] = float(timeout_seconds)
        result = self.call("execute_code", params, progress=progress, job_id=job_id)
        text: str = result.get("result", "")
        if result.get("result_is_base64"):
            text = base64.b64decode(text).decode("utf-8")
        return text

    def scene_info(self) -> dict[str, Any]:
        info: dict[str, Any] = self.call("get_scene_info")
        return info

    def object_info(self, name: str) -> dict[str, Any]:
        info: dict[str, Any] = self.call("get_object_info", {"name": name})
        return info

    def shutdown(self) -> Any:
        """Ask the service to shut down (`server_shutdown`)."""
        return self.call("server_shutdown")

    def close(self) -> None:
        self._client.close()

    @property
    def connected(self) -> bool:
        return self._client.connected

    @property
    def host(self) -> str:
        return self._client.host

    @property
    def port(self) -> int:
        return self._client.port

    @property
    def timeout(self) -> float:
        return self._client.timeout

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "connected" if self.connected else "not connected"
        return f"<blendwire.Client {self.host}:{self.port} timeout={self.timeout}s {state}>"
