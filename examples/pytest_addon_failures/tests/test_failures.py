"""Deliberate failures (python_tests/test_pytest_plugin.py checks each outcome): a crash and a hang
of Blender, inside and outside (a hang is interrupted at the timeout and Blender kept; code that
swallows the interrupt gets Blender replaced), and a failing assert whose rewritten message must
come back."""

import os

import pytest

CRASH = "import ctypes\nctypes.string_at(0)\n"  # a segfault in Blender's process
HANG = "import time\ndeadline = time.monotonic() + 600\nwhile time.monotonic() < deadline:\n    pass\n"
# Catches every interrupt and goes on: nothing but a new Blender ends it.
STUCK = "import time\nwhile True:\n    try:\n        time.sleep(600)\n    except BaseException:\n        pass\n"
PIDS = []  # Blender's pid around the hangs (outside tests run in this process)


def blender_pid(blender):
    return int(blender.run("import os\nprint(os.getpid())"))


@pytest.mark.in_blender
def test_first_passes():
    import bpy

    assert len(bpy.context.scene.objects) == 3


@pytest.mark.in_blender
def test_crash_inside():
    exec(CRASH)


@pytest.mark.in_blender
def test_after_crash_inside_passes():
    import bpy

    bpy.ops.mesh.primitive_monkey_add()
    assert len(bpy.context.scene.objects) == 4


def test_before_hang_inside_passes(blender):
    PIDS.append(blender_pid(blender))


@pytest.mark.in_blender
def test_hang_inside():
    exec(HANG)


def test_after_hang_inside_passes(blender):
    assert blender.call("get_scene_info")["object_count"] == 3
    assert blender_pid(blender) == PIDS[-1] != os.getpid()  # the same Blender: the hang was interrupted


@pytest.mark.in_blender
def test_stuck_inside():
    exec(STUCK)


def test_after_stuck_inside_passes(blender):
    assert blender_pid(blender) != PIDS[-1]  # a new Blender: the stuck one was killed


def test_crash_outside(blender):
    blender.run(CRASH)


def test_after_crash_outside_passes(blender):
    assert blender.run("print(len(bpy.context.scene.objects))").strip() == "3"


@pytest.mark.blender_timeout(3)  # instead of the ini's 5 s
def test_hang_outside(blender):
    blender.run(HANG)


def count_objects():
    import bpy

    return len(bpy.context.scene.objects)


@pytest.mark.in_blender
def test_assert_is_rewritten():
    assert count_objects() == 4


@pytest.mark.in_blender
def test_list_comparison_is_explained():
    import bpy

    assert sorted(o.name for o in bpy.context.scene.objects) == ["Camera", "Cube", "Lamp"]


@pytest.mark.in_blender
def test_last_passes():
    import bpy

    assert bpy.context.scene.objects["Cube"].type == "MESH"
