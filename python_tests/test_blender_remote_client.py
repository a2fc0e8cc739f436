"""The real blender-remote 1.3.3 client (from PyPI, unchanged) against `blendwire serve`.

It opens a new socket per call, sends one request, reads ONCE with recv(8192) and closes.
"""

import threading

import pytest

blender_remote = pytest.importorskip("blender_remote")
from blender_remote.exceptions import BlenderCommandError  # noqa: E402


@pytest.fixture
def client(server):
    return blender_remote.connect_to_blender(host=server.host, port=server.port, timeout=60)


def test_test_connection(client):
    assert client.test_connection() is True


def test_get_scene_info(client):
    info = client.get_scene_info()
    for key in ("name", "object_count", "objects", "materials_count", "frame_current", "frame_start", "frame_end"):
        assert key in info, (key, info)
    assert info["object_count"] >= 3  # factory scene: Cube, Camera, Light
    by_name = {o["name"]: o for o in info["objects"]}
    assert {"Cube", "Camera", "Light"} <= set(by_name), info
    for obj in info["objects"]:
        assert set(obj) >= {"name", "type", "location", "visible"}, obj
        assert len(obj["location"]) == 3
        assert all(round(v, 2) == v for v in obj["location"]), obj  # rounded to 2 decimals
    assert by_name["Camera"]["type"] == "CAMERA" and by_name["Light"]["type"] == "LIGHT"


def test_get_object_info_cube(client):
    info = client.get_object_info("Cube")
    assert info["name"] == "Cube" and info["type"] == "MESH"
    for key in ("location", "rotation", "scale", "visible", "dimensions", "materials"):
        assert key in info, (key, info)
    assert info["mesh"] == {"vertices": 8, "edges": 12, "polygons": 6}
    assert info["dimensions"] == pytest.approx([2.0, 2.0, 2.0])


def test_execute_python_round_trips_stdout(client):
    assert client.execute_python("print('hello from blender')") == "hello from blender\n"
    assert client.execute_python("for i in range(3):\n    print(i, 'é✓')") == "0 é✓\n1 é✓\n2 é✓\n"


def test_execute_python_plain_encoding(client):
    out = client.execute_python("print(6 * 7)", send_as_base64=False, return_as_base64=False)
    assert out == "42\n"


def test_execute_python_sees_scene(client):
    assert client.execute_python("print(bpy.data.objects['Cube'].type)") == "MESH\n"


def test_failing_script_raises_command_error(client):
    with pytest.raises(BlenderCommandError) as e:
        client.execute_python("raise ValueError('bad things')")
    assert "bad things" in str(e.value)


def test_unknown_object_raises_command_error(client):
    with pytest.raises(BlenderCommandError):
        client.get_object_info("NoSuchObject_xyz")


def test_take_screenshot(client, server, tmp_path):
    path = str(tmp_path / "shot.png")
    if server.runtime == "gui":
        info = client.take_screenshot(path, max_size=300)
        assert info["success"] is True and info["width"] > 0 and info["height"] > 0
    else:
        with pytest.raises(BlenderCommandError):
            client.take_screenshot(path, max_size=300)


# ---- the seed's acceptance cases --------------------------------------------------------------


def test_ten_rapid_sequential_calls_each_from_a_new_client(server):
    for i in range(10):
        c = blender_remote.connect_to_blender(host=server.host, port=server.port, timeout=60)
        assert c.execute_python(f"print({i})") == f"{i}\n"


def test_hundred_operations_without_delays(client):
    for i in range(100):
        kind = i % 4
        if kind == 0:
            assert client.get_scene_info()["object_count"] >= 3
        elif kind == 1:
            assert client.get_object_info("Cube")["name"] == "Cube"
        elif kind == 2:
            assert client.execute_python(f"print({i})") == f"{i}\n"
        else:
            assert client.test_connection() is True


def test_eight_clients_at_once(server):
    n_threads, per = 8, 20
    failures, answers = [], {}

    def worker(t):
        c = blender_remote.connect_to_blender(host=server.host, port=server.port, timeout=120)
        for i in range(per):
            try:
                answers[(t, i)] = c.execute_python(f"print('{t}:{i}')")
            except Exception as e:
                failures.append(f"{t}:{i}: {e!r}")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "client threads still running"
    assert failures == []
    assert answers == {(t, i): f"{t}:{i}\n" for t in range(n_threads) for i in range(per)}


def _one_shot_connections(server, n):
    client = blender_remote.connect_to_blender(host=server.host, port=server.port, timeout=60)
    failures = []
    for i in range(n):
        try:
            if i % 2:
                assert client.execute_python(f"print({i})") == f"{i}\n"
            else:
                assert client.get_scene_info()["object_count"] >= 3
        except Exception as e:
            failures.append(f"{i}: {e!r}")
    assert failures == [], f"{len(failures)} of {n} failed, first: {failures[:5]}"


@pytest.mark.runtimes("background")
def test_two_thousand_sequential_one_shot_connections(server):
    _one_shot_connections(server, 2000)


@pytest.mark.slow
@pytest.mark.runtimes("bpy", "gui")
def test_two_thousand_sequential_one_shot_connections_other_runtimes(server):
    _one_shot_connections(server, 2000)
