"""Wall time of a suite of small Blender tests: blendwire's pytest plugin against pytest-blender.

    .venv/bin/python benches/pytest_plugin_bench.py [--tests 200] [--rounds 3] [--only NAME,...]

The suite: N tests in files of 20, each creating a mesh with bpy and asserting on it, written three
ways (plain for pytest-blender, `in_blender`, and outside-style with the `blender` fixture). Each
variant is a whole `pytest` run in a subprocess (Blender start included); the table shows the best
and the median of the rounds.

pytest-blender 3.0.8 runs the whole pytest session inside `blender -b`, so pytest must be
importable in Blender's Python. Debian's Blender 3.4 uses the system Python 3.11, which is
externally managed (PEP 668: pip refuses to install into it without --break-system-packages), so
this script installs pytest and pytest-blender with `pip install --target DIR` into a directory
of its own (`--pb-dir`, default <tmp>/blendwire-bench-pytest-blender) and runs Blender with
`--python-use-system-env` and PYTHONPATH=DIR (Blender ignores PYTHONPATH without that flag); the
outer pytest (which starts Blender) runs from a venv in the same directory.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import pytest

__all__ = ["main"]

PB_VERSION = "3.0.8"
PER_FILE = 20

PLAIN = """
def test_{i}():
    import bpy

    mesh = bpy.data.meshes.new("m{i}")
    assert mesh.name.startswith("m{i}")
    assert len(mesh.vertices) == 0
"""
# The same with about 25 ms of work in Blender's Python each: where one Blender per worker pays.
HEAVY = """
def test_{i}():
    import bpy

    mesh = bpy.data.meshes.new("m{i}")
    assert sum(k * k for k in range(300_000)) > 0
    assert mesh.name.startswith("m{i}")
"""
OUTSIDE = """
def test_{i}(blender):
    out = blender.run("mesh = bpy.data.meshes.new('m{i}')\\nprint(mesh.name, len(mesh.vertices))")
    assert out.startswith("m{i}") and out.split()[-1] == "0"
"""


def write_suite(root: str, kind: str, n: int) -> str:
    """N tests of one kind in files of PER_FILE under root/kind; returns the directory."""
    folder = os.path.join(root, kind)
    os.makedirs(os.path.join(folder, "tests"), exist_ok=True)
    with open(os.path.join(folder, "pytest.ini"), "w") as f:
        f.write("[pytest]\n")
    header = {
        "plain": "",
        "inside": "import pytest\n\npytestmark = pytest.mark.in_blender\n",
        "inside_keep": "import pytest\n\npytestmark = [pytest.mark.in_blender, pytest.mark.blender_keep_scene]\n",
        "outside": "",
        "heavy": "import pytest\n\npytestmark = pytest.mark.in_blender\n",
    }[kind]
    body = {"outside": OUTSIDE, "heavy": HEAVY}.get(kind, PLAIN)
    for start in range(0, n, PER_FILE):
        with open(os.path.join(folder, "tests", f"test_{start // PER_FILE:03d}.py"), "w") as f:
            f.write(header + "".join(body.format(i=i) for i in range(start, min(n, start + PER_FILE))))
    return folder


def setup_pytest_blender(pb_dir: str) -> tuple[str, str]:
    """(outer pytest executable, the --target directory for Blender's Python), installed if missing."""
    venv = os.path.join(pb_dir, "venv")
    site = os.path.join(pb_dir, "site")
    pins = [f"pytest=={pytest.__version__}", f"pytest-blender=={PB_VERSION}"]
    outer = os.path.join(venv, "bin", "pytest")
    if not os.path.exists(outer):
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q", *pins], check=True)
    if not os.path.isdir(os.path.join(site, "pytest_blender")):
        subprocess.run(
            [os.path.join(venv, "bin", "pip"), "install", "-q", "--target", site, *pins],
            check=True,
        )
    return outer, site


def timed(cmd: list[str], cwd: str, env: dict | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    tail = (proc.stdout.strip().splitlines() or ["?"])[-1]
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return elapsed, tail


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tests", type=int, default=200)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--only", help="comma-separated variant names")
    p.add_argument("--pb-dir", default=os.path.join(tempfile.gettempdir(), "blendwire-bench-pytest-blender"))
    args = p.parse_args(argv)

    root = tempfile.mkdtemp(prefix="blendwire-pytest-bench-")
    kinds = ("plain", "inside", "inside_keep", "outside", "heavy")
    suites = {kind: write_suite(root, kind, args.tests) for kind in kinds}
    ours = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--blender"]
    variants: dict[str, tuple[list[str], str, dict | None]] = {
        "pytest-blender 3.0.8 (one blender -b, no isolation)": ([], "plain", None),
        "blendwire in_blender, -b, fresh scene per test": (ours, "inside", None),
        "blendwire in_blender, -b, fresh scene, -n 2": (ours + ["-n", "2"], "inside", None),
        "blendwire in_blender, -b, scene kept": (ours, "inside_keep", None),
        "blendwire blender fixture, -b, fresh scene per test": (ours, "outside", None),
        "blendwire in_blender, bpy runtime, fresh scene per test": (ours + ["--blender-runtime=bpy"], "inside", None),
        "heavier tests (~25 ms each): blendwire in_blender, -b": (ours, "heavy", None),
        "heavier tests (~25 ms each): blendwire in_blender, -b, -n 2": (ours + ["-n", "2"], "heavy", None),
    }
    if args.only:
        wanted = [w.strip() for w in args.only.split(",")]
        variants = {k: v for k, v in variants.items() if any(w in k for w in wanted)}
    if any(k.startswith("pytest-blender") for k in variants):
        outer, site = setup_pytest_blender(args.pb_dir)
        env = dict(os.environ, PYTHONPATH=site)
        blender = shutil.which("blender") or "blender"
        variants["pytest-blender 3.0.8 (one blender -b, no isolation)"] = (
            [outer, "-p", "no:cacheprovider", "-q", "--blender-executable", blender, "tests", "--"]
            + ["--python-use-system-env"],
            "plain",
            env,
        )

    print(f"{args.tests} tests, {args.rounds} rounds, {os.cpu_count()} cores; suites in {root}", flush=True)
    rows = []
    for name, (cmd, kind, env) in variants.items():
        times = []
        for _ in range(args.rounds):
            elapsed, tail = timed(cmd, suites[kind], env)
            times.append(elapsed)
        rows.append((name, min(times), statistics.median(times), tail))
        print(f"  {name}: best {min(times):.2f} s, median {statistics.median(times):.2f} s ({tail})", flush=True)
    print()
    print("| variant | best (s) | median (s) | ms/test (best) |")
    print("|---|---:|---:|---:|")
    for name, best, median, _ in rows:
        print(f"| {name} | {best:.2f} | {median:.2f} | {best / args.tests * 1000:.1f} |")
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
