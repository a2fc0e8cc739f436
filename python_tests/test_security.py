"""BLENDWIRE_TOKEN through `blendwire serve`, `blendwire call` and blendwire.Client, and the refusal
of a non-loopback host without a token (real Blender, background runtime)."""

import os
import subprocess

import blendwire
import bwtest
import pytest

pytestmark = pytest.mark.runtimes("background")

TOKEN = "t0ken-" + os.urandom(6).hex()


def _env_without_token():
    env = dict(os.environ)
    env.pop("BLENDWIRE_TOKEN", None)
    return env


def _call(port, *args, token=None):
    env = _env_without_token()
    if token:
        env["BLENDWIRE_TOKEN"] = token
    return subprocess.run(
        bwtest.blendwire_command() + ["call", *args, "--port", str(port)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def _shutdown_with_token(sp):
    with bwtest.Conn(sp.port) as c:
        bwtest.assert_success(c.request({"type": "server_shutdown", "token": TOKEN}))
    assert sp.wait_exit(bwtest.EXIT_TIMEOUT) == 0, sp.output()


def test_requests_without_the_token_are_refused_and_nothing_runs(serve_factory, tmp_path):
    sp = serve_factory("background", env={"BLENDWIRE_TOKEN": TOKEN})
    marker = tmp_path / "ran"
    code = f"open({str(marker)!r}, 'w').write('x')"
    try:
        with bwtest.Conn(sp.port) as c:
            for message in (
                {"type": "execute_code", "params": {"code": code}},
                {"type": "execute_code", "params": {"code": code}, "token": "wrong"},
                {"code": code},
            ):
                resp = bwtest.assert_error(c.request(message), "unauthorized")
                assert TOKEN not in resp["message"]
            assert not marker.exists(), "a request without the token ran"
            ok = c.request({"type": "execute_code", "params": {"code": code}, "token": TOKEN})
            bwtest.assert_success(ok)
            assert marker.exists()
        # blendwire call and blendwire.Client take the token from the environment or an argument.
        refused = _call(sp.port, "get_scene_info")
        assert refused.returncode == 1 and "token" in refused.stderr, refused
        accepted = _call(sp.port, "get_scene_info", token=TOKEN)
        assert accepted.returncode == 0, accepted
        with blendwire.Client(port=sp.port, token=TOKEN) as client:
            assert client.scene_info()["object_count"] >= 1
        with blendwire.Client(port=sp.port, token="") as client:
            with pytest.raises(blendwire.CommandError) as err:
                client.scene_info()
            assert err.value.error_code == "unauthorized"
    finally:
        _shutdown_with_token(sp)
    assert all(TOKEN not in line for line in sp.stdout_lines + sp.stderr_lines), "the token was logged"


def test_non_loopback_host_is_refused_without_a_token():
    sp = bwtest.ServeProcess(["--port", "0", "--host", "0.0.0.0"], env=_env_without_token())
    rc = sp.wait_exit(bwtest.START_TIMEOUT)
    if rc is None:
        sp.kill()
    assert rc not in (None, 0), sp.output()
    assert "BLENDWIRE_TOKEN" in "\n".join(sp.stdout_lines + sp.stderr_lines), sp.output()


def test_non_loopback_host_with_a_token_serves(serve_factory):
    sp = serve_factory("background", extra=["--host", "0.0.0.0"], env={"BLENDWIRE_TOKEN": TOKEN})
    try:
        assert sp.host == "0.0.0.0"
        with bwtest.Conn(sp.port) as c:  # reached through loopback only
            bwtest.assert_success(c.request({"type": "get_scene_info", "token": TOKEN}))
    finally:
        _shutdown_with_token(sp)
