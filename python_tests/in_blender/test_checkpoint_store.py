"""The checkpoint store on Blender's main thread (`blendwire.handlers.checkpoints`): pruning by count
and bytes, a new checkpoint only after a change, restoring the file path, the folders of ended
Blenders, and a folder that cannot be made. Each test has a store of its own in a temp folder."""

import os
import time

import bpy
import pytest
from blendwire.errors import CommandError
from blendwire.handlers import checkpoints

INFO = {"job": {"command": "execute_code", "client": "test", "listener": "service", "id": 1}}


@pytest.fixture
def store(tmp_path):
    bpy.ops.wm.read_homefile(use_empty=False)
    checkpoints.configure(3, None, str(tmp_path))
    yield tmp_path
    checkpoints.configure()
    bpy.ops.wm.read_homefile(use_empty=False)


def change(i=0):
    bpy.data.objects["Cube"].location.x = float(i)


def test_pruned_oldest_first_by_count(store):
    ids = []
    for i in range(5):
        change(i + 1)
        ids.append(checkpoints.before_job(INFO))
    assert len(set(ids)) == 5
    listed = [c["id"] for c in checkpoints.list_checkpoints({})["checkpoints"]]
    assert listed == ids[:1:-1]  # the newest 3, newest first
    with pytest.raises(CommandError, match="list_checkpoints") as e:
        checkpoints.restore_checkpoint({"id": ids[0]})
    assert e.value.error_code == "not_found"


def test_pruned_by_bytes_but_the_newest_stays(store):
    budget = 1024 * 1024  # the default scene's file: ~0.9 MB (3.4), ~0.5 MB (5.0)
    checkpoints.configure(10, budget, str(store))
    for i in range(3):
        change(i + 1)
        last = checkpoints.before_job(INFO)
    listed = checkpoints.list_checkpoints({})["checkpoints"]
    assert listed[0]["id"] == last and len(listed) < 3 and sum(c["bytes"] for c in listed) <= budget
    checkpoints.configure(10, budget, str(store))
    mesh = bpy.data.meshes["Cube"]
    mesh.vertices.add(100_000)  # a file larger than the budget: kept all the same
    mesh.update()  # what makes the change seen (the depsgraph is told)
    last = checkpoints.before_job(INFO)
    listed = checkpoints.list_checkpoints({})["checkpoints"]
    assert [c["id"] for c in listed] == [last] and listed[0]["bytes"] > budget, listed


def test_a_new_one_only_after_a_change_and_the_path_given_back(store):
    first = checkpoints.before_job(INFO)
    assert checkpoints.before_job(INFO) == first  # nothing changed
    bpy.data.meshes.new("added").use_fake_user = True  # added: the depsgraph does not see it, the sizes do
    second = checkpoints.before_job(INFO)
    assert second != first
    user = str(store / "user.blend")
    bpy.ops.wm.save_as_mainfile(filepath=user)
    third = checkpoints.before_job(INFO)  # a save changes what a restore gives back
    assert third != second
    for o in list(bpy.data.objects):
        bpy.data.objects.remove(o)
    answer = checkpoints.restore_checkpoint({"id": third})
    assert answer["filepath_restored"] is True and bpy.data.filepath == user
    assert "added" in bpy.data.meshes and len(bpy.data.objects) == 3
    answer = checkpoints.restore_checkpoint({"id": first})
    assert bpy.data.filepath == "" and "added" not in bpy.data.meshes


def test_folders_of_ended_blenders_go_after_a_day(store):
    old, recent, alive = (store / "999999998-1"), (store / "999999999-1"), (store / f"{os.getpid()}-2")
    for d in (old, recent, alive):
        d.mkdir()
    day_ago = time.time() - 2 * 86400
    os.utime(old, (day_ago, day_ago))
    os.utime(alive, (day_ago, day_ago))
    checkpoints.before_job(INFO)
    assert not old.exists() and recent.exists() and alive.exists()


def test_a_folder_that_cannot_be_made_raises_a_clear_error(store):
    blocker = store / "a-file"
    blocker.write_text("")
    checkpoints.configure(3, None, str(blocker / "sub"))
    with pytest.raises(checkpoints.CheckpointError, match="--checkpoint-dir"):
        checkpoints.before_job(INFO)
    checkpoints.configure(0, None, str(blocker / "sub"))
    assert checkpoints.before_job(INFO) is None  # off
