"""Packaging (issue 6): the versions agree, the wheel works in a plain Python without bpy, the
Blender extension passes Blender's own validation (bl_pkg from the bpy wheels) and installs into
bpy 5.0.1 and into bpy 4.2 LTS (the first Blender with extensions), and the legacy zip installs into
Debian's Blender 3.4, where a fresh Blender with that config serves commands with no other set-up.

These run once (no `server` fixture), in the `serve` phase; scripts/package builds the zips from
the wheel scripts/setup built.
"""

import ast
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile

import bwtest
import pytest
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.join(ROOT, "python_tests", "packaging")
VENV_PY = os.path.join(ROOT, ".venv", "bin", "python")
# Blender as a module, by version: the test venv's bpy 5.0.1, and bpy 4.2 LTS alone in its own venv.
BPY_VENVS = {"bpy-5.0": os.path.join(ROOT, ".venv"), "bpy-4.2": os.path.join(ROOT, ".venv-bpy42")}


def cargo_version():
    with open(os.path.join(ROOT, "Cargo.toml"), "rb") as f:
        return tomllib.load(f)["package"]["version"]


@pytest.fixture(scope="module")
def packages():
    """(version, wheel, extension zip, legacy zip), freshly built by scripts/package."""
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "package"), "--no-setup"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"scripts/package failed:\n{proc.stdout}\n{proc.stderr}"
    ext, legacy = proc.stdout.split()
    version = cargo_version()
    wheels = glob.glob(os.path.join(ROOT, "dist", f"blendwire-{version}-*.whl"))
    assert len(wheels) == 1, wheels
    return version, wheels[0], ext, legacy


def blender_env(tmp_path, **extra):
    """An environment for Debian's Blender with a throwaway user config and no venv anywhere."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("BLD_REMOTE", "BLENDWIRE", "PYTHON", "VIRTUAL_ENV"))
    }
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    # Made first: Blender 3.4 takes BLENDER_USER_CONFIG only if the folder exists, else the
    # user's own ~/.config/blender/3.4/config when that one does.
    for name in ("config", "scripts"):
        (tmp_path / name).mkdir(exist_ok=True)
    env["BLENDER_USER_CONFIG"] = str(tmp_path / "config")
    env["BLENDER_USER_SCRIPTS"] = str(tmp_path / "scripts")
    env.update(extra)
    return env


# ---- versions and the wheel --------------------------------------------------------------------


def test_versions_come_from_cargo_toml(packages):
    version, wheel, ext, legacy = packages
    import blendwire

    assert blendwire.__version__ == version
    assert f"blendwire-{version}-" in os.path.basename(wheel)
    with zipfile.ZipFile(ext) as z:
        manifest = tomllib.loads(z.read("blender_manifest.toml").decode())
    assert manifest["version"] == version
    assert manifest["wheels"] == [f"./wheels/{os.path.basename(wheel)}"]
    assert manifest["blender_version_min"] == "4.2.0" and manifest["platforms"] == ["linux-x64"]
    assert set(manifest["permissions"]) == {"network", "files"}
    with zipfile.ZipFile(legacy) as z:
        tree = ast.parse(z.read("blendwire_addon/__init__.py").decode())
    bl_info = next(
        ast.literal_eval(n.value)
        for n in tree.body
        if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "bl_info"
    )
    assert ".".join(map(str, bl_info["version"])) == version
    assert tuple(bl_info["blender"]) <= (3, 4, 0)


def test_wheel_is_abi3_manylinux_with_stubs(packages):
    _, wheel, _, _ = packages
    assert re.search(r"-cp310-abi3-manylinux_\d+_\d+_x86_64\.whl$", wheel), wheel
    listing = subprocess.run(["unzip", "-l", wheel], capture_output=True, text=True, check=True).stdout
    for name in (
        "blendwire/_core.abi3.so",
        "blendwire/_core.pyi",
        "blendwire/py.typed",
        "blendwire/client.py",
        "blendwire/handlers/bld_remote.py",
    ):
        assert name in listing, f"{name} not in the wheel:\n{listing}"
    with zipfile.ZipFile(wheel) as z:
        entry_points = next(z.read(n).decode() for n in z.namelist() if n.endswith("entry_points.txt"))
    assert "blendwire=blendwire.cli:main" in entry_points.replace(" ", "")


def test_pip_install_in_plain_python(packages, tmp_path):
    """A venv with nothing but the wheel (no bpy): the client, the command and the stubs."""
    _, wheel, _, _ = packages
    base = shutil.which("python3.11") or shutil.which("python3")
    venv = tmp_path / "plain"
    subprocess.run([base, "-m", "venv", str(venv)], check=True, timeout=120)
    py = str(venv / "bin" / "python")
    subprocess.run(
        [py, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--disable-pip-version-check", wheel],
        check=True,
        timeout=120,
    )
    code = (
        "import importlib.util, os, blendwire; "
        "assert importlib.util.find_spec('bpy') is None; "
        "d = os.path.dirname(blendwire.__file__); "
        "print(blendwire.__version__, blendwire.Client.__name__, "
        "os.path.isfile(os.path.join(d, '_core.pyi')), os.path.isfile(os.path.join(d, 'py.typed')))"
    )
    out = subprocess.run([py, "-c", code], capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [cargo_version(), "Client", "True", "True"]
    for cmd in ([py, "-m", "blendwire", "--help"], [str(venv / "bin" / "blendwire"), "--help"]):
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
        assert out.returncode == 0 and "serve" in out.stdout and "call" in out.stdout, (cmd, out.stdout, out.stderr)
    # The client works against nothing listening with the usual error.
    port = bwtest.free_port()
    out = subprocess.run(
        [str(venv / "bin" / "blendwire"), "call", "get_scene_info", "--port", str(port)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(tmp_path),
    )
    assert out.returncode == 1 and out.stderr.strip(), out


# ---- the extension (Blender 4.2+) ---------------------------------------------------------------


def _bpy_python(which):
    py = os.path.join(BPY_VENVS[which], "bin", "python")
    if not os.path.exists(py):
        pytest.fail(f"{BPY_VENVS[which]} is missing: run scripts/setup")
    return py


def _bl_pkg_cli(which="bpy-5.0"):
    found = glob.glob(
        os.path.join(
            BPY_VENVS[which],
            "lib",
            "python3*",
            "site-packages",
            "bpy",
            "*",
            "scripts",
            "addons_core",
            "bl_pkg",
            "cli",
            "blender_ext.py",
        )
    )
    if not found:
        pytest.fail(f"bl_pkg's blender_ext.py not found in the bpy wheel ({BPY_VENVS[which]}): run scripts/setup")
    return found[0]


@pytest.mark.parametrize("which", list(BPY_VENVS))
def test_extension_passes_bl_pkg_validation(packages, which):
    _, _, ext, _ = packages
    out = subprocess.run(
        [_bpy_python(which), _bl_pkg_cli(which), "validate", ext], capture_output=True, text=True, timeout=120
    )
    text = out.stdout + out.stderr
    assert out.returncode == 0 and "Success" in text and "ERROR" not in text.upper().replace("SUCCESS", ""), text


def test_bl_pkg_rejects_a_broken_manifest(packages, tmp_path):
    """The validation is real: the same package with an over-long permission reason fails."""
    _, _, ext, _ = packages
    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(ext) as src, zipfile.ZipFile(broken, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "blender_manifest.toml":
                data = re.sub(rb'network = "[^"]*"', b'network = "' + b"x" * 80 + b'"', data)
            dst.writestr(item, data)
    out = subprocess.run([VENV_PY, _bl_pkg_cli(), "validate", str(broken)], capture_output=True, text=True, timeout=120)
    assert "64" in out.stdout + out.stderr and "network" in out.stdout + out.stderr, out


@pytest.mark.parametrize("which", list(BPY_VENVS))
def test_extension_installs_into_bpy_and_serves(packages, tmp_path, which):
    _, wheel, ext, _ = packages
    port = bwtest.free_port()
    report = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BLD_REMOTE", "BLENDWIRE"))}
    env.update(
        BLENDER_USER_RESOURCES=str(tmp_path / "user"), BLD_REMOTE_MCP_START_NOW="1", BLD_REMOTE_MCP_PORT=str(port)
    )
    out = subprocess.run(
        [_bpy_python(which), os.path.join(HERE, "ext_in_bpy.py"), ext, str(report)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=str(tmp_path),
    )
    assert out.returncode == 0 and report.exists(), f"exit {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    r = json.loads(report.read_text())
    assert r["blender"].startswith(which[len("bpy-") :] + "."), r
    assert r["install"] == ["FINISHED"], r
    assert r["enabled"] == ["bl_ext.user_default.blendwire"], r
    # The extension's wheel, unpacked by Blender, is what runs (not the venv's blendwire).
    assert r["blendwire_file"].startswith(r["site"]), r
    assert r["prefs_port"] == 6688, r  # the preferences exist under the extension's __package__
    assert r["manifest_version"] == tuple(map(int, cargo_version().split("."))) or r["manifest_version"] == list(
        map(int, cargo_version().split("."))
    ), r
    assert r["address"] == ["127.0.0.1", port], r
    assert r["client_error"] is None and r["scene_name"], r
    assert r["reason"] == "shutdown", r


# ---- the legacy add-on (Blender 3.x - 4.1) ------------------------------------------------------


def test_legacy_zip_installs_into_blender_34_and_serves_after_restart(packages, tmp_path):
    _, _, _, legacy = packages
    blender = shutil.which("blender")
    if blender is None:
        pytest.fail("Debian's blender is not installed (scripts/setup installs it)")
    port = bwtest.free_port()
    env = blender_env(tmp_path)

    # 1: install + enable + save preferences (start with Blender, the port) in a throwaway config.
    out = subprocess.run(
        [
            blender,
            "-b",
            "--python-exit-code",
            "1",
            "--python",
            os.path.join(HERE, "legacy_install.py"),
            "--",
            legacy,
            str(port),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        cwd=str(tmp_path),
    )
    assert out.returncode == 0 and "LEGACY_INSTALLED" in out.stdout, f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    installed = tmp_path / "scripts" / "addons" / "blendwire_addon" / "vendor" / "blendwire" / "_core.abi3.so"
    assert installed.is_file(), "the vendored core was not installed into the user scripts"
    assert (tmp_path / "config" / "userpref.blend").is_file(), "preferences were not saved"

    # 2: a fresh Blender with that config serves, with nothing but the saved preferences.
    proc = subprocess.Popen(
        [blender, "-b", "--python-exit-code", "1", "--python", os.path.join(HERE, "legacy_serve.py")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=str(tmp_path),
        start_new_session=True,
    )
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith(("LEGACY_SERVING", "LEGACY_NOT_RUNNING")):
                break
        text = "".join(lines)
        assert f"LEGACY_SERVING {port}" in text, text
        vendored = re.search(r"^LEGACY_BLENDWIRE (\S+)", text, re.M)[1]
        assert vendored.startswith(str(tmp_path / "scripts" / "addons" / "blendwire_addon" / "vendor")), text
        assert "LEGACY_VENV_ON_PATH False" in text, text
        with bwtest.Conn(port) as c:
            scene = bwtest.assert_success(c.request({"type": "get_scene_info", "params": {}}))
            assert scene["name"] and "object_count" in scene, scene
            bwtest.assert_success(c.request({"type": "server_shutdown", "params": {}}))
        rest, _ = proc.communicate(timeout=60)
        text += rest
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
    assert proc.returncode == 0, text
    assert "LEGACY_STOPPED shutdown" in text, text
