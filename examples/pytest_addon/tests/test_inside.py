"""Tests that run inside Blender (marked in_blender): bpy is there, asserts are rewritten by pytest
and failures come back into this pytest's report. Import bpy inside the tests: the module is also
imported by pytest outside Blender, to collect it."""

import contextlib

import pytest

pytestmark = pytest.mark.in_blender


@contextlib.contextmanager
def addon():
    import mesh_rows

    mesh_rows.register()
    try:
        yield mesh_rows
    finally:
        mesh_rows.unregister()


def test_factory_scene():
    import bpy

    assert {o.name for o in bpy.context.scene.objects} == {"Cube", "Camera", "Light"}


@pytest.mark.parametrize("count", [1, 3, 5])
def test_operator_adds_a_row(count):
    import bpy

    with addon():
        assert bpy.ops.mesh_rows.add_row(count=count, spacing=2.0) == {"FINISHED"}
    import mesh_rows

    rows = sorted((o for o in bpy.context.scene.objects if o.name.startswith("Row.")), key=lambda o: o.name)
    assert [round(o.location.x, 3) for o in rows] == [round(x, 3) for x in mesh_rows.row_positions(count, 2.0)]


def test_row_positions_are_centred():
    import mesh_rows

    assert mesh_rows.row_positions(3, 2.5) == [-2.5, 0.0, 2.5]


def test_fixture_values_come_along(tmp_path):
    import bpy

    path = tmp_path / "saved.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path), copy=True)
    assert path.is_file()


def test_skip_inside_blender():
    import bpy

    if bpy.app.version >= (0, 0, 0):
        pytest.skip("skipped from inside Blender")


@pytest.mark.blender_keep_scene
class TestKeepScene:
    def test_add_a_monkey(self):
        import bpy

        bpy.ops.mesh.primitive_monkey_add()
        assert "Suzanne" in bpy.data.objects

    def test_the_monkey_is_still_there(self):
        import bpy

        assert "Suzanne" in bpy.data.objects


def test_fresh_scene_again():
    import bpy

    assert "Suzanne" not in bpy.data.objects
