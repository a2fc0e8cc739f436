"""Running instances: every `blendwire serve` announces itself in the user's runtime directory
($XDG_RUNTIME_DIR/blendwire, one 0600 JSON file per instance), `blendwire list` prints them,
`_core.choose_instance` picks one, and a file goes with its service (stale ones are removed by
readers). Each test has a runtime directory of its own.
"""

import json
import os
import stat
import subprocess

import bwtest
import pytest
from blendwire import _core

TOKEN = "s3cret-token-never-written"


@pytest.fixture
def runtime_dir(tmp_path, monkeypatch):
    d = tmp_path / "run"
    d.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(d))
    return d


def blendwire_list(runtime_dir, *args):
    p = subprocess.run(
        [*bwtest.blendwire_command(), "list", *args],
        env=dict(os.environ, XDG_RUNTIME_DIR=str(runtime_dir)),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    return p.stdout


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def dead_pid():
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


@pytest.mark.background
@pytest.mark.bpy
def test_two_serves_are_listed_chosen_and_removed_on_exit(serve_factory, runtime_dir, tmp_path):
    env = {"XDG_RUNTIME_DIR": str(runtime_dir)}
    bg = serve_factory("background", env=env)
    bp = serve_factory("bpy", env=env)
    # Written before the ready handshake: no wait needed.
    found = {i["port"]: i for i in _core.discover_instances()}
    assert set(found) == {bg.port, bp.port}
    bg_pid = found[bg.port]["pid"]
    assert bg_pid in bwtest.descendants(bg.proc.pid), "the Blender child serves -b"
    assert found[bp.port]["pid"] == bp.proc.pid, "--bpy serves in the blendwire process"
    for sp, pid in ((bg, bg_pid), (bp, bp.proc.pid)):
        i = found[sp.port]
        assert (i["runtime"], i["blender_version"], i["host"]) == (sp.runtime, sp.version, sp.host)
        assert (i["token_required"], i["mcp_addon_port"], i["blend_file"]) == (False, None, None)
        assert i["blendwire_version"] == _core.__version__
        assert mode_of(runtime_dir / "blendwire" / f"{pid}-{sp.port}.json") == 0o600
    assert mode_of(runtime_dir / "blendwire") == 0o700

    table = blendwire_list(runtime_dir).splitlines()
    assert table[0].split()[:3] == ["ADDRESS", "PID", "RUNTIME"]
    assert [line.split()[:3] for line in table[1:]] == [
        [f"127.0.0.1:{bg.port}", str(bg_pid), "background"],
        [f"127.0.0.1:{bp.port}", str(bp.proc.pid), "bpy"],
    ]
    assert json.loads(blendwire_list(runtime_dir, "--json")) == list(found.values())

    with pytest.raises(LookupError, match="^2 blendwire instances are running; choose one by port, pid") as e:
        _core.choose_instance()
    assert f"port {bg.port}, pid {bg_pid}, unsaved file (background" in str(e.value)
    assert _core.choose_instance(str(bg.port))["runtime"] == "background"
    assert _core.choose_instance(str(bp.proc.pid))["port"] == bp.port

    # Saving under a new name rewrites the file (a save_post handler): choose it by name.
    shot = tmp_path / "Shot010.blend"
    bwtest.assert_success(bwtest.execute(bg.port, f"import bpy; bpy.ops.wm.save_as_mainfile(filepath={str(shot)!r})"))
    assert _core.choose_instance("shot01")["blend_file"] == str(shot)
    with pytest.raises(LookupError, match='no running blendwire instance matches "nope"'):
        _core.choose_instance("nope")

    bg.shutdown()
    assert not (runtime_dir / "blendwire" / f"{bg_pid}-{bg.port}.json").exists()
    assert _core.choose_instance()["port"] == bp.port
    bp.shutdown()
    assert os.listdir(runtime_dir / "blendwire") == []


def test_the_file_goes_with_the_service_and_never_holds_the_token(runtime_dir):
    with pytest.raises(RuntimeError, match="service is not running"):
        _core.announce_instance("bpy", "5.0.1")
    _core.start_service("127.0.0.1", 0, [], token=TOKEN)
    try:
        path = _core.announce_instance("bpy", "5.0.1")
        assert path == os.path.join(_core.instances_dir(), f"{os.getpid()}-{_core.service_address()[1]}.json")
        assert _core.instances_dir() == str(runtime_dir / "blendwire")
        assert TOKEN not in open(path).read()
        (i,) = _core.discover_instances()
        assert (i["token_required"], i["blend_file"]) == (True, None)
        assert _core.update_instance("/projects/a.blend") is True
        assert _core.update_instance("/projects/a.blend") is False
        assert _core.discover_instances()[0]["blend_file"] == "/projects/a.blend"
        assert mode_of(path) == 0o600
    finally:
        _core.stop_service(2.0)
    assert not os.path.exists(path)
    assert _core.update_instance("/projects/b.blend") is False


def test_stale_files_are_ignored_and_removed(runtime_dir):
    d = runtime_dir / "blendwire"
    d.mkdir(mode=0o700)
    entry = {
        "format": 1,
        "process_start": None,
        "host": "127.0.0.1",
        "mcp_addon_port": None,
        "token_required": False,
        "blend_file": None,
        "blender_version": "4.2.0",
        "runtime": "background",
        "blendwire_version": _core.__version__,
        "started_at": 1.0,
    }
    gone = d / f"{dead_pid()}-6688.json"  # the process is gone
    gone.write_text(json.dumps({**entry, "pid": int(gone.name.split("-")[0]), "port": 6688}))
    port = bwtest.free_port()
    silent = d / f"{os.getpid()}-{port}.json"  # its pid lives, but nothing answers on its port
    silent.write_text(json.dumps({**entry, "pid": os.getpid(), "port": port}))
    assert _core.discover_instances() == []
    assert not gone.exists() and not silent.exists()
    assert "no blendwire instance is running" in blendwire_list(runtime_dir)
    assert json.loads(blendwire_list(runtime_dir, "--json")) == []


def test_choosing_with_none_running_says_how_to_start_one(runtime_dir):
    with pytest.raises(LookupError, match=r"^no blendwire instance is running; start one with `blendwire serve"):
        _core.choose_instance()
    with pytest.raises(LookupError, match="no blendwire instance is running"):
        _core.choose_instance("6688")


@pytest.mark.gui
def test_a_gui_serve_is_listed_and_follows_its_file(serve_factory, runtime_dir, tmp_path):
    sp = serve_factory("gui", env={"XDG_RUNTIME_DIR": str(runtime_dir)})
    (i,) = _core.discover_instances()
    assert (i["port"], i["runtime"], i["blend_file"]) == (sp.port, "gui", None)
    shot = tmp_path / "gui_shot.blend"
    bwtest.assert_success(bwtest.execute(sp.port, f"import bpy; bpy.ops.wm.save_as_mainfile(filepath={str(shot)!r})"))
    assert _core.choose_instance("gui_shot")["port"] == sp.port
    bwtest.assert_success(bwtest.execute(sp.port, "import bpy; bpy.ops.wm.read_homefile()"))  # File > New
    assert _core.choose_instance()["blend_file"] is None
    sp.shutdown()
    assert os.listdir(runtime_dir / "blendwire") == []
