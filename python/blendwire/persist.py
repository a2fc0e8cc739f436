"""In-memory key/value store that lives as long as the Blender session.

Backs the `put_persist_data` / `get_persist_data` / `remove_persist_data` commands and can be used
directly from scripts running inside Blender (e.g. code sent with `execute_code`):

    from blendwire import persist
    persist.put("mesh_stats", {"verts": 8})
    persist.get("mesh_stats")          # {'verts': 8}

Values are kept by reference (any Python object), but only JSON-serialisable values can be read back
over the network. Touch it from Blender's main thread only, like everything else in bpy.
The `*_data` aliases mirror the API of blender-remote's `bld_remote.persist`.
"""

from collections.abc import Hashable
from typing import Any

_store: dict = {}


def put(key: Hashable, data: Any) -> None:
    """Store `data` under `key`, replacing any previous value."""
    _store[key] = data


def get(key: Hashable, default: Any = None) -> Any:
    """The value stored under `key`, or `default`."""
    return _store.get(key, default)


def contains(key: Hashable) -> bool:
    return key in _store


def remove(key: Hashable) -> bool:
    """Remove `key`; True if it was there."""
    return _store.pop(key, _MISSING) is not _MISSING


def keys() -> list[Hashable]:
    return list(_store)


def clear() -> None:
    _store.clear()


_MISSING = object()

# Same names as blender-remote's persist module, so scripts written for it keep working.
put_data = put
get_data = get
remove_data = remove
get_keys = keys
clear_data = clear
