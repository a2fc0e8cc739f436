"""The `blendwire` commands about what is kept of agents' work: `undo` (take back blendwire's last
undo step), `checkpoints` and `restore` (the checkpoints kept before each changing job) and `audit`
(the audit log). `add_commands` adds them to the command's subparsers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from . import audit
from .cli_common import Fail, service_call

__all__ = ["add_commands"]


def add_commands(sub: Any, d: dict[str, Any]) -> None:
    """Add undo, checkpoints, restore and audit to `sub` (argparse's subparsers); `d`: the defaults."""
    u = sub.add_parser(
        "undo",
        help="take back blendwire's last undo step (a GUI Blender)",
        description="Take back the undo step of blendwire's last job that changed data, in a Blender "
        "with its UI (the command undo_last); refused when the last step is the user's own. Blender in "
        "background has no undo stack: restore a checkpoint there.",
    )
    u.add_argument("--host", default=d["host"])
    u.add_argument("--port", type=int, help=f"default: $BLD_REMOTE_MCP_PORT or {d['port']}")
    u.add_argument("--timeout", type=float, default=d["client_timeout"], help="seconds (default %(default)s)")
    u.add_argument("--json", action="store_true", help='print {"undone", "now_at"} as JSON')
    u.set_defaults(func=_cmd_undo)

    for name, helptext, description in (
        (
            "checkpoints",
            "list the checkpoints a running service kept (newest first)",
            "List the checkpoints the running service kept before each job that may change data: id, time, "
            "size and the job (command, client, listener, request id). `blendwire restore ID` goes back to one.",
        ),
        (
            "restore",
            "restore the scene as it was before a checkpoint's job",
            "Restore the scene of the running service as it was before the job of checkpoint ID (see "
            "`blendwire checkpoints`); the file path is the user's of then. The restore "
            "itself is checkpointed first.",
        ),
    ):
        cp = sub.add_parser(name, help=helptext, description=description)
        if name == "restore":
            cp.add_argument("id", metavar="ID", help="a checkpoint id from `blendwire checkpoints`")
        else:
            cp.add_argument("--json", action="store_true", help="print the JSON list (for scripts)")
        cp.add_argument("--host", default=d["host"])
        cp.add_argument("--port", type=int, help=f"default: $BLD_REMOTE_MCP_PORT or {d['port']}")
        cp.add_argument("--timeout", type=float, default=d["client_timeout"], help="seconds (default %(default)s)")
        cp.set_defaults(func=_cmd_restore if name == "restore" else _cmd_checkpoints)

    a = sub.add_parser(
        "audit",
        help="show the audit log: who ran what, when, with which outcome",
        description="Read the audit log `blendwire serve` keeps (one JSON line per request, on every "
        "listener) as a table, one row per request; a job whose start was logged but never its end "
        "(Blender crashed in it) shows as unfinished.",
    )
    a.add_argument("-f", "--follow", action="store_true", help="keep printing requests as they are logged")
    a.add_argument("--json", action="store_true", help="print the JSON lines themselves")
    a.add_argument(
        "--since",
        metavar="DURATION|TIME",
        help="only requests since 30s, 10m, 2h, 1d ago or an ISO time (reads the rotated files too)",
    )
    a.add_argument("--path", help="the log's file (default: $BLENDWIRE_AUDIT_LOG or the state directory's)")
    a.set_defaults(func=_cmd_audit)


# ---- undo ----------------------------------------------------------------------------------------


def _cmd_undo(args: argparse.Namespace) -> int:
    """`undo_last`: take back blendwire's last undo step in a GUI Blender."""
    result = service_call(args, "undo_last", {}).get("result", {})
    if args.json:
        print(json.dumps(result, ensure_ascii=False), flush=True)
    else:
        print(f"undone: {result.get('undone')} (now at: {result.get('now_at')})", flush=True)
    return 0


# ---- checkpoints ---------------------------------------------------------------------------------


_CHECKPOINT_COLUMNS = ("ID", "TIME", "SIZE", "COMMAND", "CLIENT", "LISTENER", "REQUEST")


def _fmt_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _cmd_checkpoints(args: argparse.Namespace) -> int:
    kept = service_call(args, "list_checkpoints", {}).get("result", {}).get("checkpoints", [])
    if args.json:
        print(json.dumps(kept, indent=2), flush=True)
        return 0
    if not kept:
        print("no checkpoint is kept yet (one is kept before each job that may change data)", flush=True)
        return 0
    rows = [
        (
            c["id"],
            c["time"],
            _fmt_bytes(c["bytes"]),
            str(c["job"].get("command") or "-"),
            str(c["job"].get("client") or "-"),
            str(c["job"].get("listener") or "-"),
            "-" if c["job"].get("id") is None else str(c["job"]["id"]),
        )
        for c in kept
    ]
    widths = [max(len(r[i]) for r in [_CHECKPOINT_COLUMNS, *rows]) for i in range(len(_CHECKPOINT_COLUMNS))]
    for row in [_CHECKPOINT_COLUMNS, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip(), flush=True)
    return 0


def _cmd_restore(args: argparse.Namespace) -> int:
    response = service_call(args, "restore_checkpoint", {"id": args.id})
    result = response.get("result", {})
    before = response.get("checkpoint")
    where = result.get("filepath") or "(unsaved)"
    print(f"restored checkpoint {args.id}: the scene as before {result.get('job', {}).get('command')}; file {where}")
    if before:
        print(f"the state before this restore is checkpoint {before} (`blendwire restore {before}` takes it back)")
    elif response.get("checkpoint_error"):
        print(f"note: {response['checkpoint_error']}")
    return 0


def _cmd_audit(args: argparse.Namespace) -> int:
    path = args.path or audit.default_path()
    try:
        since = audit.parse_since(args.since) if args.since else None
    except ValueError as e:
        raise Fail(str(e)) from None
    # Followed: the current file is read through the handle that then follows it.
    tail = audit.Tail(path) if args.follow else None
    try:
        paths = [p for p in audit.files(path, rotated=since is not None) if tail is None or p != path]
        log = list(audit.lines(paths, since))
        if tail is not None:
            log += [line for line in tail.read() if audit.since_filter(line, since)]
    except OSError as e:
        raise Fail(f"cannot read the audit log: {e}") from None
    if not log and not args.follow and not os.path.exists(path):
        raise Fail(f"no audit log at {path} (is `blendwire serve` running with --audit-log off, or elsewhere?)")
    if args.json:
        for line in log:
            print(json.dumps(line), flush=False)
    else:
        print(audit.table(audit.rows(log)))
    sys.stdout.flush()
    if tail is None:
        return 0

    def emit(line: dict[str, Any]) -> None:
        if args.json:
            print(json.dumps(line), flush=True)
        else:
            if line.get("event") == "start":
                line = {**line, "outcome": "started"}
            print(audit.table([line]).split("\n", 1)[1], flush=True)

    tail.follow(emit, out=sys.stdout)
    return 0
