"""BLD Remote's scene and object info (`get_scene_info`, `get_object_info`), and the object list
blender-mcp's scene info shares. Result fields follow blender-remote 1.3.3 exactly."""

from __future__ import annotations

from typing import Any

import bpy

from ..errors import CommandError

__all__ = ["get_object_info", "get_scene_info", "scene_objects"]


def scene_objects(scene: Any, visible: bool = True, limit: int = 10) -> list[dict[str, Any]]:
    """The scene info's `objects`: the first `limit` objects' name, type and location (to 2 places),
    and with `visible` whether each is visible (blender-mcp's shape leaves that out)."""
    objects = []
    for obj in list(scene.objects)[:limit]:
        loc = obj.location
        entry = {
            "name": obj.name,
            "type": obj.type,
            "location": [round(float(loc.x), 2), round(float(loc.y), 2), round(float(loc.z), 2)],
        }
        if visible:
            entry["visible"] = obj.visible_get()
        objects.append(entry)
    return objects


def get_scene_info(params: dict[str, Any]) -> dict[str, Any]:
    scene = bpy.context.scene
    objects = scene_objects(scene)
    return {
        "name": scene.name,
        "object_count": len(scene.objects),
        "objects": objects,
        "materials_count": len(bpy.data.materials),
        "frame_current": scene.frame_current,
        "frame_start": scene.frame_start,
        "frame_end": scene.frame_end,
    }


def get_object_info(params: dict[str, Any]) -> dict[str, Any]:
    name = params.get("name")
    if not isinstance(name, str) or not name:
        raise CommandError(
            'get_object_info needs params.name, the object name, e.g. {"name": "Cube"}', "invalid_params"
        )
    obj = bpy.data.objects.get(name)
    if obj is None:
        raise CommandError(f"Object not found: {name}", "not_found")
    info = {
        "name": obj.name,
        "type": obj.type,
        "location": list(obj.location),
        "rotation": list(obj.rotation_euler),
        "scale": list(obj.scale),
        "visible": obj.visible_get(),
        "dimensions": list(obj.dimensions),
        "materials": [slot.material.name for slot in obj.material_slots if slot.material],
    }
    if obj.type == "MESH" and obj.data:
        mesh = obj.data
        info["mesh"] = {
            "vertices": len(mesh.vertices),
            "edges": len(mesh.edges),
            "polygons": len(mesh.polygons),
        }
    return info
