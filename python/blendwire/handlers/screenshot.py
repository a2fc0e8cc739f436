"""BLD Remote's `get_viewport_screenshot` (blender-mcp's falls back to it too): the 3D viewport
grabbed to a file, or with `inline` as base64 data in the answer."""

from __future__ import annotations

import base64
import os
import tempfile
import uuid
from typing import Any

import bpy

from ..errors import CommandError

__all__ = ["FORMATS", "get_viewport_screenshot"]

# The peer only says "not available in background mode"; this also says what to do instead.
_NO_SCREENSHOT_IN_BACKGROUND = (
    "Viewport screenshots are not available in background mode (blender -b / bpy module); "
    "run Blender with a UI, e.g. `blendwire serve --gui`"
)
# The `format` values and Blender's file format for each.
FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG"}


def _invalid(message: str) -> CommandError:
    return CommandError(message, "invalid_params")


def _find_view3d() -> tuple[Any, Any]:
    for window in bpy.context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                return window, area
    raise CommandError("No 3D viewport found: open a 3D Viewport area in Blender", "not_found")


def get_viewport_screenshot(params: dict[str, Any]) -> dict[str, Any]:
    if bpy.app.background:
        raise CommandError(_NO_SCREENSHOT_IN_BACKGROUND, "unavailable_in_background")
    max_size = params.get("max_size", 800)
    fmt = str(params.get("format", "png")).lower()
    filepath = params.get("filepath")
    if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1:
        raise _invalid("max_size must be a positive integer (pixels of the longest side), e.g. 800")
    if fmt not in FORMATS:
        raise _invalid(f"format must be one of {sorted(FORMATS)}, got {fmt!r}")
    if filepath is not None and not isinstance(filepath, str):
        raise _invalid("filepath must be a string (a path on the Blender machine) or omitted")
    inline = params.get("inline", False)
    if not isinstance(inline, bool) or (inline and filepath):
        raise _invalid("inline must be true or false, and true only without filepath (the image comes as data)")
    if not filepath:
        filepath = os.path.join(tempfile.gettempdir(), f"blender_screenshot_{uuid.uuid4().hex}.{fmt}")
    filepath = os.path.abspath(filepath)  # Blender rejects relative paths

    window, area = _find_view3d()
    if hasattr(bpy.context, "temp_override"):
        with bpy.context.temp_override(window=window, screen=window.screen, area=area):
            bpy.ops.screen.screenshot_area(filepath=filepath)
    else:  # Blender < 3.2: context-override dict
        override = {"window": window, "screen": window.screen, "area": area}
        bpy.ops.screen.screenshot_area(override, filepath=filepath)

    img = bpy.data.images.load(filepath)
    try:
        width, height = img.size
        resize = max(width, height) > max_size
        if resize:
            scale = max_size / max(width, height)
            width, height = int(width * scale), int(height * scale)
            img.scale(width, height)
        if resize or fmt != "png":  # screenshot_area always writes PNG
            img.file_format = FORMATS[fmt]
            img.save()
    finally:
        bpy.data.images.remove(img)
    if inline:
        # The bytes in the answer: a client on another machine, in WSL or in a container cannot
        # read a path on this one.
        try:
            with open(filepath, "rb") as f:
                data = base64.b64encode(f.read()).decode("ascii")
        finally:
            os.remove(filepath)
        return {"success": True, "width": width, "height": height, "format": fmt, "data": data}
    return {"success": True, "width": width, "height": height, "filepath": filepath}
