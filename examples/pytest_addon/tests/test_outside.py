"""Tests that drive Blender from outside through the `blender` fixture (a blendwire.Client to the
Blender the plugin started). Every test starts from a fresh scene."""

import pytest

ADD_ROW = """
import bpy, mesh_rows
if not hasattr(bpy.types, "MESH_ROWS_OT_add_row"):
    mesh_rows.register()
bpy.ops.mesh_rows.add_row(count={count})
print(len(bpy.context.scene.objects))
"""


def test_fresh_scene(blender):
    info = blender.call("get_scene_info")
    assert sorted(o["name"] for o in info["objects"]) == ["Camera", "Cube", "Light"]


@pytest.mark.parametrize("count", [1, 4])
def test_add_row(blender, count):
    assert blender.run(ADD_ROW.format(count=count)).strip() == str(3 + count)
    cube = blender.call("get_object_info", {"name": "Row.000"})
    assert cube["type"] == "MESH"


def test_scene_is_fresh_after_add_row(blender):
    assert blender.call("get_scene_info")["object_count"] == 3


def test_load_a_blend(blender, tmp_path):
    path = tmp_path / "one_cube.blend"
    blender.run(
        "import bpy\n"
        "bpy.data.objects.remove(bpy.data.objects['Camera'])\n"
        f"bpy.ops.wm.save_as_mainfile(filepath={str(path)!r})\n"
    )
    blender.reset()
    assert blender.call("get_scene_info")["object_count"] == 3
    blender.load(path)
    names = sorted(o["name"] for o in blender.call("get_scene_info")["objects"])
    assert names == ["Cube", "Light"]
