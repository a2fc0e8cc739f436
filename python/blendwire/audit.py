"""Reading the audit log (`blendwire audit`): its JSON lines, from the rotated files too, as rows a
person reads (one per request: a job's start and end lines paired by pid and seq; a start without
its end is `unfinished`, e.g. a job that crashed Blender) or as the lines themselves.

The log is written by the core (`journal::audit`); its file is `_core.defaults()["audit_log"]`
unless `blendwire serve --audit-log` (or `$BLENDWIRE_AUDIT_LOG`) named another. No bpy here.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any, TextIO

from . import _core, config

__all__ = ["UNFINISHED", "Tail", "default_path", "files", "lines", "parse_since", "rows", "since_filter", "table"]

UNFINISHED = "unfinished"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def default_path() -> str:
    """The file `blendwire serve` writes by default: `$BLENDWIRE_AUDIT_LOG`, else the core's."""
    env = config.env_audit_log()
    return env if env and env != "off" else str(_core.defaults()["audit_log"])


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`10m`, `2h`, `30s`, `1d` ago, or an ISO 8601 time (UTC when it names no zone).
    ValueError says what is accepted."""
    m = _DURATION.match(text)
    if m:
        return (now or datetime.now(timezone.utc)) - timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
    try:
        at = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"--since takes a duration (30s, 10m, 2h, 1d) or an ISO time (2026-01-31T12:00:00Z), got {text!r}"
        ) from None
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def files(path: str, rotated: bool) -> list[str]:
    """The log's files, oldest first: `path.N` .. `path.1` (when `rotated`), then `path`."""
    found = []
    if rotated:
        n = 1
        while os.path.exists(f"{path}.{n}"):
            found.append(f"{path}.{n}")
            n += 1
        found.reverse()
    if os.path.exists(path):
        found.append(path)
    return found


def _time(line: dict[str, Any]) -> datetime | None:
    try:
        return datetime.fromisoformat(str(line["ts"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return None


def since_filter(line: dict[str, Any], since: datetime | None) -> bool:
    """Whether `line` is at or after `since` (every line when None)."""
    return since is None or ((t := _time(line)) is not None and t >= since)


def lines(paths: Iterable[str], since: datetime | None = None) -> Iterator[dict[str, Any]]:
    """The JSON lines of `paths` in order (at or after `since`); a line that is not JSON (cut by a
    crash mid-write) is skipped."""
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as f:
            for raw in f:
                line = _parse(raw)
                if line is not None and since_filter(line, since):
                    yield line


def _parse(raw: str) -> dict[str, Any] | None:
    try:
        line = json.loads(raw)
    except ValueError:
        return None
    return line if isinstance(line, dict) else None


def rows(log: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per request, in the order they came: the end line, or the start line marked
    `unfinished` when its end never came."""
    out: list[dict[str, Any]] = []
    started: dict[tuple[Any, Any], int] = {}
    for line in log:
        key = (line.get("pid"), line.get("seq"))
        if line.get("event") == "start":
            started[key] = len(out)
            out.append({**line, "outcome": UNFINISHED})
        elif key in started:
            # The row is the end line at the time the request came (its start line's).
            i = started.pop(key)
            out[i] = {**line, "ts": out[i].get("ts", line.get("ts"))}
        else:
            out.append(line)
    return out


_COLUMNS = ("time", "listener/dialect", "peer", "command", "outcome", "ms", "checkpoint")


def _cells(row: dict[str, Any]) -> tuple[str, ...]:
    ts = str(row.get("ts", "")).replace("T", " ")
    duration = row.get("duration_ms")
    checkpoint = row.get("checkpoint") or ("failed" if row.get("checkpoint_error") else "-")
    return (
        ts,
        f"{row.get('listener', '?')}/{row.get('dialect', '?')}",
        str(row.get("peer") or "-"),
        str(row.get("command", "")),
        str(row.get("outcome") or "-"),
        "-" if duration is None else f"{duration:.1f}",
        str(checkpoint),
    )


def table(rows_: Iterable[dict[str, Any]]) -> str:
    """Rows as an aligned text table with a header."""
    cells = [_COLUMNS, *(_cells(r) for r in rows_)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(_COLUMNS))]
    return "\n".join("  ".join(c[i].ljust(widths[i]) for i in range(len(c))).rstrip() for c in cells)


class Tail:
    """The current log file read from its start, then followed from where the reading ended (no
    line is missed or shown twice); a rotated file is finished and the new one followed from its
    start. (A CLI follow: it polls.)"""

    def __init__(self, path: str) -> None:
        self.path = path
        self.file: TextIO | None = None
        self.ident: tuple[int, int] | None = None
        self.pending = ""

    def _open(self) -> bool:
        try:
            f = open(self.path, encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return False
        if self.file is not None:
            self.file.close()
        st = os.fstat(f.fileno())
        self.file, self.ident, self.pending = f, (st.st_dev, st.st_ino), ""
        return True

    def read(self) -> list[dict[str, Any]]:
        """The whole lines that arrived since the last read (the file's start on the first)."""
        got: list[dict[str, Any]] = []
        if self.file is None and not self._open():
            return got
        try:
            st = os.stat(self.path)
            moved = (st.st_dev, st.st_ino) != self.ident
        except FileNotFoundError:
            moved = False
        self.pending = _drain(self.file, self.pending, got.append)
        if moved and self._open():
            self.pending = _drain(self.file, self.pending, got.append)
        return got

    def follow(
        self, emit: Callable[[dict[str, Any]], None], *, interval: float = 0.2, out: TextIO | None = None
    ) -> None:
        """`emit(line)` for every line from here on, until interrupted."""
        while True:
            for line in self.read():
                emit(line)
            if out is not None:
                out.flush()
            time.sleep(interval)


def _drain(f: TextIO | None, pending: str, emit: Callable[[dict[str, Any]], None]) -> str:
    if f is None:
        return pending
    data = pending + f.read()
    *whole, rest = data.split("\n")
    for raw in whole:
        line = _parse(raw)
        if line is not None:
            emit(line)
    return rest
