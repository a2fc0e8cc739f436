"""Checkpoints: the state before a job that may change data, kept so that it can be restored.

The keeper calls `before_job(info)` ahead of every such job; `list_checkpoints()` and
`restore_checkpoint({"id": ...})` are commands. A checkpoint is the whole .blend as it was, written
uncompressed with `save_as_mainfile(copy=True)` (the user's file path and saved state stay as they
are), plus a JSON sidecar (the job, the user's path and dirty state then). A restore opens it with
`open_mainfile(load_ui=False)` and gives the session back the user's own file path: Blender has no
API for that (3.4 and 4.2/5.0's `recover_auto_save` leave "" or the checkpoint's path, measured),
so `_set_main_filepath` writes it where `bpy.data.filepath` reads it, only after checking that the
bytes there are that very path.

Store: `<state dir>/checkpoints/<pid>-<start time>/` (one folder per Blender process: two Blenders
sharing a state directory never mix files), 0700, files 0600, pruned oldest first by count and
bytes. Cost: the default scene is written in 1-8 ms (3.4, 4.2, 5.0 measured), so a checkpoint per
job would dominate a busy agent's small jobs; a new one is only written when data changed since the
last one: the depsgraph reported an update (`depsgraph_update_post`, flushed here by
`evaluated_depsgraph_get()`, which also fires in `-b` and the bpy module) or a datablock was added
or removed (the collections' sizes; the depsgraph misses those), or the file was saved under
another path (its path is part of what a restore gives back). Otherwise the job is given the last
checkpoint's id (the state before it is the same). Edits the depsgraph is not told of alone do
not make a new one: custom properties, text contents, mesh data written with `foreach_set` or
`vertices.add` without `mesh.update()`; restoring the next job's checkpoint then also takes them
back. Main thread only.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import json
import os
import secrets
import shutil
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import bpy

from .. import _core
from ..errors import CommandError
from ..process import pid_alive

__all__ = [
    "CheckpointError",
    "Settings",
    "before_job",
    "configure",
    "list_checkpoints",
    "restore_checkpoint",
    "settings",
]


class CheckpointError(CommandError):
    """No checkpoint could be kept (unwritable folder, full disk); the message says why and what to
    do. A CommandError, so that the core passes its message on as is (no traceback)."""

    def __init__(self, message: str):
        super().__init__(message, "checkpoint_failed")


@dataclass(frozen=True)
class Settings:
    """How many checkpoints to keep (0 = off), their byte budget, and the folder holding the
    per-process folders."""

    count: int
    max_bytes: int
    folder: str


@dataclass
class _Entry:
    id: str
    time: float
    job: dict[str, Any]
    bytes: int
    path: str
    user_filepath: str
    user_dirty: bool


@dataclass
class _Store:
    settings: Settings
    entries: list[_Entry] = field(default_factory=list)  # oldest first
    folder: str | None = None  # this process's folder, made at the first checkpoint
    changed: bool = True  # data changed since the last checkpoint
    in_state_dir: bool = True  # the folder is the default one, inside the user's state directory
    sizes: tuple[Any, ...] = ()


_store: _Store | None = None
_STARTED = time.time()


def configure(count: int | None = None, max_bytes: int | None = None, folder: str | None = None) -> Settings:
    """Set the store's settings (None: the core's defaults, `_core.checkpoint_settings`); ValueError
    for a bad one. Kept checkpoints stay (pruned to the new limits at the next one)."""
    global _store
    resolved = _core.checkpoint_settings(count, max_bytes, folder)
    s = Settings(resolved["checkpoints"], resolved["checkpoint_bytes"], resolved["checkpoint_dir"])
    if _store is None:
        _store = _Store(s)
        _watch()
    else:
        _store.settings = s
        if os.path.abspath(s.folder) != os.path.dirname(_store.folder or ""):
            _store.folder = None  # the next checkpoint goes to the new folder
    _store.in_state_dir = not folder
    return s


def settings() -> Settings:
    return _the_store().settings


def _the_store() -> _Store:
    if _store is None:
        configure()
    assert _store is not None
    return _store


# ---- the change signal ---------------------------------------------------------------------------


@bpy.app.handlers.persistent
def _on_update(*_args: Any) -> None:
    if _store is not None:
        _store.changed = True


def _watch() -> None:
    for handlers in (bpy.app.handlers.depsgraph_update_post, bpy.app.handlers.load_post):
        if _on_update not in handlers:
            handlers.append(_on_update)


_COLLECTIONS: tuple[str, ...] | None = None


def _sizes() -> tuple[Any, ...]:
    """How many datablocks each of bpy.data's collections holds, and the file's path (a save under
    another path changes what a restore must give back; a few µs). Not the saved state: in the GUI
    every job's undo step marks the file modified, which would make each job a change."""
    global _COLLECTIONS
    if _COLLECTIONS is None:
        _COLLECTIONS = tuple(
            p.identifier
            for p in bpy.data.bl_rna.properties
            if p.type == "COLLECTION" and p.identifier not in ("window_managers", "workspaces", "screens")
        )
    return (bpy.data.filepath, *(len(getattr(bpy.data, name)) for name in _COLLECTIONS))


def _unchanged(store: _Store) -> bool:
    with contextlib.suppress(Exception):
        bpy.context.evaluated_depsgraph_get()  # runs depsgraph_update_post for pending updates
    sizes = _sizes()
    same = not store.changed and sizes == store.sizes
    store.sizes = sizes
    return same


# ---- keeping -------------------------------------------------------------------------------------


def before_job(info: dict[str, Any]) -> str | None:
    """Keep a checkpoint before the job `info` describes; its id, or None when checkpoints are off.
    Raises CheckpointError when none could be written (the job still runs; its answer says why)."""
    store = _the_store()
    if store.settings.count <= 0:
        return None
    last = store.entries[-1] if store.entries else None
    if _unchanged(store) and last is not None and os.path.exists(last.path):
        return last.id
    entry = _write(store, info.get("job") or {})
    store.entries.append(entry)
    store.changed = False
    # A restore's own checkpoint must not prune the one it is about to open.
    if (info.get("job") or {}).get("command") != "restore_checkpoint":
        _prune(store)
    return entry.id


def _process_folder(store: _Store) -> str:
    if store.folder is None or not os.path.isdir(store.folder):
        root = store.settings.folder
        folder = os.path.join(root, f"{os.getpid()}-{int(_STARTED)}")
        try:
            if store.in_state_dir:
                _core.state_dir()  # made private (0700) if missing, refused if it is not the user's
            os.makedirs(root, mode=0o700, exist_ok=True)
            os.makedirs(folder, mode=0o700, exist_ok=True)
            os.chmod(folder, 0o700)
        except (OSError, RuntimeError) as e:
            raise CheckpointError(f"cannot make the checkpoint folder {folder} ({e}); {_WHERE}") from None
        store.folder = folder
        _sweep(root, folder)
    return store.folder


# How long the folder of a Blender process that ended stays (its files can still be opened by hand,
# e.g. after a crash); removed by the next Blender that makes its folder there.
_ENDED_KEPT_SECONDS = 24 * 3600


def _sweep(root: str, mine: str) -> None:
    now = time.time()
    with contextlib.suppress(OSError), os.scandir(root) as found:
        for d in found:
            pid, sep, _started = d.name.partition("-")
            if d.path == mine or not sep or not pid.isdigit() or not d.is_dir(follow_symlinks=False):
                continue
            with contextlib.suppress(OSError):
                if not pid_alive(int(pid)) and now - d.stat().st_mtime > _ENDED_KEPT_SECONDS:
                    shutil.rmtree(d.path, ignore_errors=True)


_WHERE = "choose a writable folder with --checkpoint-dir, or turn checkpoints off with --checkpoints 0"


def _write(store: _Store, job: dict[str, Any]) -> _Entry:
    folder = _process_folder(store)
    cid = secrets.token_hex(4)
    path = os.path.join(folder, f"{cid}.blend")
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    if free is not None and store.entries and free < store.entries[-1].bytes * 2:
        raise CheckpointError(f"the disk holding {folder} is almost full ({free} bytes free); {_WHERE}")
    user_filepath, user_dirty = bpy.data.filepath, bool(bpy.data.is_dirty)
    try:
        # Uncompressed: compression costs more time than the disk it saves here. relative_remap off:
        # relative paths stay relative to the user's file, whose path the restore gives back.
        with _no_preview(), _quiet():
            result = bpy.ops.wm.save_as_mainfile(filepath=path, copy=True, compress=False, relative_remap=False)
        if "FINISHED" not in result:
            raise RuntimeError(f"save_as_mainfile answered {sorted(result)}")
        os.chmod(path, 0o600)
        size = os.path.getsize(path)
    except (RuntimeError, OSError) as e:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise CheckpointError(f"cannot write a checkpoint to {folder} ({_short(e)}); {_WHERE}") from None
    entry = _Entry(cid, time.time(), dict(job), size, path, user_filepath, user_dirty)
    side = {k: v for k, v in entry.__dict__.items() if k != "path"}
    try:
        fd = os.open(path[: -len(".blend")] + ".json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(side, f)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise CheckpointError(f"cannot write a checkpoint to {folder} ({e}); {_WHERE}") from None
    return entry


_LIBC = ctypes.CDLL(None)


@contextlib.contextmanager
def _quiet() -> Any:
    """Blender prints its reports ("Info: Saved copy as ...", "Read blend: ...") to the process's
    stdout, which `blendwire serve` keeps for its own lines: this C-level output goes to /dev/null
    while a checkpoint is written or opened (the main thread is ours meanwhile: no job prints)."""
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    try:
        saved = os.dup(1)
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        yield
        return
    _LIBC.fflush(None)
    os.dup2(devnull, 1)
    os.close(devnull)
    try:
        yield
    finally:
        _LIBC.fflush(None)
        os.dup2(saved, 1)
        os.close(saved)


@contextlib.contextmanager
def _no_preview() -> Any:
    """The GUI renders a thumbnail into every saved file: about 200 ms of a 1 ms checkpoint
    (measured, Blender 3.4 under xvfb). Off while a checkpoint is written; the preference and its
    unsaved-changes flag are put back."""
    prefs = bpy.context.preferences
    paths = getattr(prefs, "filepaths", None)
    if bpy.app.background or paths is None or not hasattr(paths, "file_preview_type"):
        yield
        return
    kept, dirty = paths.file_preview_type, prefs.is_dirty
    paths.file_preview_type = "NONE"
    try:
        yield
    finally:
        paths.file_preview_type = kept
        with contextlib.suppress(Exception):
            prefs.is_dirty = dirty


def _short(e: Exception) -> str:
    return " ".join(str(e).split())[:300]


def _remove(entry: _Entry) -> None:
    for p in (entry.path, entry.path[: -len(".blend")] + ".json"):
        with contextlib.suppress(OSError):
            os.unlink(p)


def _prune(store: _Store) -> None:
    """Oldest first, while over the count or the byte budget; the newest one always stays."""
    s = store.settings
    while len(store.entries) > 1 and (
        len(store.entries) > s.count or sum(e.bytes for e in store.entries) > s.max_bytes
    ):
        _remove(store.entries.pop(0))


# ---- the commands --------------------------------------------------------------------------------


def _iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat(timespec="milliseconds")


def list_checkpoints(params: dict[str, Any]) -> dict[str, Any]:
    """`list_checkpoints`: the kept checkpoints, newest first."""
    store = _the_store()
    return {
        "checkpoints": [
            {"id": e.id, "time": _iso(e.time), "job": e.job, "bytes": e.bytes}
            for e in reversed(store.entries)
            if os.path.exists(e.path)
        ]
    }


def restore_checkpoint(params: dict[str, Any]) -> dict[str, Any]:
    """`restore_checkpoint {"id": ID}`: the scene as it was before that checkpoint's job, with the
    user's file path of then (see below for the saved state)."""
    cid = params.get("id")
    if not isinstance(cid, str) or not cid:
        raise CommandError(
            'restore_checkpoint needs params.id, a checkpoint id from list_checkpoints, e.g. {"id": "1a2b3c4d"}',
            "invalid_params",
        )
    store = _the_store()
    entry = next((e for e in store.entries if e.id == cid), None)
    if entry is None or not os.path.exists(entry.path):
        raise CommandError(
            f"no checkpoint {cid!r} is kept (unknown, or pruned: at most {store.settings.count} and "
            f"{store.settings.max_bytes} bytes are kept); list_checkpoints lists the ones that are",
            "not_found",
        )
    try:
        with _quiet():
            bpy.ops.wm.open_mainfile(filepath=entry.path, load_ui=False)
    except RuntimeError as e:
        raise CommandError(f"could not open checkpoint {cid} ({_short(e)})", "execution_error") from None
    store.changed = True
    path_restored = _set_main_filepath(entry.path, entry.user_filepath)
    with contextlib.suppress(OSError):
        # `blendwire list` shows the open file: the load handler wrote the checkpoint's path there.
        _core.update_instance(bpy.data.filepath or None)
    # Not given back: the GUI's "unsaved changes" mark. Blender's load marks the file saved, also
    # after an undo push right after it (the GUI handles the load in a later turn) and an undo push
    # then changes nothing (measured, 3.4): a restore of a checkpoint taken with unsaved changes
    # shows the file as saved; `was_dirty` says it had some. (-b and the bpy module keep no mark.)
    return {
        "restored": cid,
        "job": entry.job,
        "filepath": bpy.data.filepath,
        "filepath_restored": path_restored,
        "is_dirty": bool(bpy.data.is_dirty),
        "was_dirty": entry.user_dirty,
    }


# Where `Main.filepath` (what `bpy.data.filepath` reads) sits in Blender's Main struct: after its
# `next`/`prev` pointers in 3.4, 4.2 and 5.0 (checked before every write, see below).
_FILEPATH_OFFSET = 16
_FILE_MAX = 1024


def _set_main_filepath(current: str, wanted: str) -> bool:
    """Give the open file the path `wanted` ("" = never saved) instead of `current` (the checkpoint's),
    without writing any file. Only when the bytes at the known place are exactly `current`: else
    nothing is written and False returned (the restore then says so)."""
    if bpy.data.filepath != current:
        return bpy.data.filepath == wanted
    raw, new = current.encode() + b"\0", wanted.encode() + b"\0"
    if len(new) > _FILE_MAX:
        return False
    address = bpy.data.as_pointer() + _FILEPATH_OFFSET
    if ctypes.string_at(address, len(raw)) != raw:
        return False
    ctypes.memmove(address, new, len(new))
    return bpy.data.filepath == wanted
