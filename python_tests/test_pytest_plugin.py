"""The pytest plugin (`blendwire.pytest_plugin`, found through the installed wheel's pytest11 entry
point), end to end: pytest runs in a subprocess on the example projects in `examples/` for each
runtime, and the outcomes come from its JUnit XML.

- examples/pytest_addon: outside-style (`blender` fixture) and in_blender tests of a tiny add-on;
- examples/pytest_addon_failures: a crash and a hang of Blender, from inside and from outside, and
  failing asserts: each fails alone, saying what happened, and the tests after them pass.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET

import pytest
from conftest import ALL_RUNTIMES, selected_runtimes

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
RUN_TIMEOUT = 600  # seconds for one pytest subprocess (Blender starts included)


@pytest.fixture(params=[pytest.param(r, id=r, marks=getattr(pytest.mark, r)) for r in ALL_RUNTIMES])
def runtime(request):
    if request.param not in selected_runtimes(request.config):
        pytest.skip(f"runtime {request.param} not selected (--runtimes)")
    return request.param


class Run:
    """One finished pytest subprocess: exit code, output, {test name: (outcome, message)}."""

    def __init__(self, proc: subprocess.CompletedProcess, junit: pathlib.Path):
        self.returncode = proc.returncode
        self.output = proc.stdout + proc.stderr
        self.outcomes: dict[str, tuple[str, str]] = {}
        if junit.exists():
            for case in ET.parse(junit).getroot().iter("testcase"):
                outcome, message = "passed", ""
                for child in case:
                    if child.tag in ("failure", "error", "skipped"):
                        outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                        message = (child.get("message") or "") + "\n" + (child.text or "")
                self.outcomes[case.get("name")] = (outcome, message)

    def names(self, outcome: str) -> set[str]:
        return {name for name, (o, _) in self.outcomes.items() if o == outcome}

    def message(self, name: str) -> str:
        return self.outcomes[name][1]


def run_pytest(cwd: pathlib.Path, tmp_path: pathlib.Path, *args: str) -> Run:
    junit = tmp_path / "junit.xml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", f"--junitxml={junit}", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    return Run(proc, junit)


def test_example_project_passes(runtime, tmp_path):
    run = run_pytest(EXAMPLES / "pytest_addon", tmp_path, f"--blender-runtime={runtime}")
    assert run.returncode == 0, run.output
    assert run.names("skipped") == {"test_skip_inside_blender"}, run.output
    assert run.names("failed") | run.names("error") == set(), run.output
    assert {
        "test_factory_scene",
        "test_operator_adds_a_row[3]",
        "test_fixture_values_come_along",
        "test_the_monkey_is_still_there",
        "test_fresh_scene_again",
        "test_fresh_scene",
        "test_add_row[4]",
        "test_scene_is_fresh_after_add_row",
        "test_load_a_blend",
    } <= run.names("passed"), run.output
    assert len(run.outcomes) == 15, run.output


def test_crash_and_hang_fail_alone(runtime, tmp_path):
    if runtime == "gui":
        # A minute of CI for three GUI restarts: the plugin's crash, hang and kill handling is the
        # same for every runtime (checked in background and bpy), and interrupting a job in the GUI
        # is test_interrupt's (gui).
        pytest.skip("the crash and hang paths are the same in every runtime; checked in background and bpy")
    run = run_pytest(EXAMPLES / "pytest_addon_failures", tmp_path, f"--blender-runtime={runtime}")
    assert run.returncode == 1, run.output
    assert run.names("failed") == {
        "test_crash_inside",
        "test_hang_inside",
        "test_stuck_inside",
        "test_crash_outside",
        "test_hang_outside",
        "test_assert_is_rewritten",
        "test_list_comparison_is_explained",
    }, run.output
    assert run.names("passed") == {
        "test_first_passes",
        "test_after_crash_inside_passes",
        "test_before_hang_inside_passes",
        "test_after_hang_inside_passes",
        "test_after_stuck_inside_passes",
        "test_after_crash_outside_passes",
        "test_last_passes",
    }, run.output
    for name in ("test_crash_inside", "test_crash_outside"):
        text = run.message(name)
        assert "Blender crashed" in text and "SIGSEGV" in text, text
        assert "a new Blender is started for the next test" in text, text
    for name, seconds in (("test_hang_inside", 5), ("test_hang_outside", 3)):  # ini; the test's mark
        text = run.message(name)
        # Interrupted in Blender at the test's timeout, where it was running; Blender kept.
        assert f"interrupted in Blender after running past {seconds} s (--blender-timeout, ini " in text, text
        assert "Blender is kept for the next test" in text and "interrupted after" in text, text
        assert "last frames" in text, text
    text = run.message("test_stuck_inside")  # swallows every interrupt: only a new Blender ends it
    assert "still running after 5 s (--blender-timeout, ini blender_timeout or " in text, text
    assert "Blender was killed" in text, text
    text = run.message("test_assert_is_rewritten")
    assert "assert count_objects() == 4" in text and "AssertionError: assert 3 == 4" in text, text
    assert "where 3 = count_objects()" in text, text
    assert 'test_failures.py", line' in text, text  # the traceback points into the test file
    text = run.message("test_list_comparison_is_explained")
    assert "At index 2 diff: 'Light' != 'Lamp'" in text, text


def test_xdist_one_blender_per_worker(runtime, tmp_path):
    """-n 2: every worker has its own Blender (its own pid, port chosen by the OS) for all its tests."""
    if runtime == "gui":
        pytest.skip("two UIs under Xvfb: checked in the background and bpy runtimes")
    project = tmp_path / "project"
    (project / "tests").mkdir(parents=True)
    (project / "pytest.ini").write_text(f"[pytest]\nblender = true\nblender_runtime = {runtime}\n")
    pids = tmp_path / "pids"
    pids.mkdir()
    (project / "tests" / "test_pids.py").write_text(
        textwrap.dedent(
            f"""
            import os
            import pytest

            @pytest.mark.parametrize("i", range(8))
            def test_outside(blender, i):
                pid = blender.run("import os; print(os.getpid())").strip()
                port = blender.client.port
                worker = os.environ["PYTEST_XDIST_WORKER"]
                open(os.path.join({str(pids)!r}, f"{{worker}}-{{pid}}-{{port}}"), "w").close()

            @pytest.mark.in_blender
            @pytest.mark.parametrize("i", range(8))
            def test_inside(i):
                import bpy
                assert len(bpy.context.scene.objects) == 3
            """
        )
    )
    run = run_pytest(project, tmp_path, "-n", "2")
    assert run.returncode == 0, run.output
    assert len(run.names("passed")) == 16, run.output
    seen = [name.split("-") for name in os.listdir(pids)]
    workers = {w for w, _, _ in seen}
    assert workers == {"gw0", "gw1"}, seen
    for worker in workers:  # one Blender per worker for all its tests
        assert len({(pid, port) for w, pid, port in seen if w == worker}) == 1, seen
    assert len({pid for _, pid, _ in seen}) == 2 and len({port for _, _, port in seen}) == 2, seen


def test_off_unless_asked(tmp_path):
    """Without --blender: nothing starts and nothing loads bpy; in_blender tests run as plain tests
    and the `blender` fixture skips saying how to turn the plugin on."""
    (tmp_path / "test_off.py").write_text(
        textwrap.dedent(
            """
            import os
            import sys
            import pytest

            @pytest.mark.in_blender
            def test_runs_here():
                assert "blendwire.pytest_plugin" in sys.modules  # loaded through the entry point
                assert "bpy" not in sys.modules
                assert "blendwire.blender_child" not in sys.modules and "blendwire.pytest_runner" not in sys.modules
                assert "blendwire.process" not in sys.modules
                children = [p for p in os.listdir("/proc") if p.isdigit() and _parent(p) == os.getpid()]
                assert children == []

            def _parent(pid):
                try:
                    with open(f"/proc/{pid}/stat") as f:
                        return int(f.read().rsplit(")", 1)[1].split()[1])
                except OSError:
                    return None

            def test_fixture(blender):
                pass
            """
        )
    )
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    run = run_pytest(tmp_path, tmp_path)
    assert run.returncode == 0, run.output
    assert run.names("passed") == {"test_runs_here"}, run.output
    assert run.names("skipped") == {"test_fixture"}, run.output
    assert "run pytest with --blender" in run.message("test_fixture"), run.output


def test_bad_options_are_usage_errors(tmp_path):
    (tmp_path / "pytest.ini").write_text("[pytest]\nblender = true\nblender_runtime = cycles\n")
    (tmp_path / "test_x.py").write_text("def test_x():\n    pass\n")
    run = run_pytest(tmp_path, tmp_path)
    assert run.returncode == 4, run.output
    assert "blender_runtime must be one of ['background', 'bpy', 'gui'], got 'cycles'" in run.output, run.output
    run = run_pytest(tmp_path, tmp_path, "--blender-runtime=background", "--blender-timeout=0")
    assert run.returncode == 4 and "--blender-timeout must be positive" in run.output, run.output


def test_blender_that_cannot_start_fails_each_test_once_started(tmp_path):
    """A Blender that cannot start fails the Blender tests with serve's reason, trying only once;
    the other tests still pass."""
    (tmp_path / "pytest.ini").write_text("[pytest]\nblender = true\n")
    (tmp_path / "test_x.py").write_text(
        textwrap.dedent(
            """
            import pytest

            def test_plain():
                pass

            def test_outside(blender):
                pass

            @pytest.mark.in_blender
            def test_inside():
                pass
            """
        )
    )
    run = run_pytest(tmp_path, tmp_path, f"--blender-exe={tmp_path / 'no-such-blender'}")
    assert run.returncode == 1, run.output
    assert run.names("passed") == {"test_plain"}, run.output
    for name in ("test_outside", "test_inside"):
        assert "Blender could not be started" in run.message(name), run.output
        assert "Blender not found" in run.message(name), run.output


def test_blender_file_is_the_scene_of_every_test(runtime, tmp_path):
    """--blender-file: Blender starts with it and every reset reopens it."""
    if runtime == "gui":
        pytest.skip("the reset path is the same in every runtime; checked in background and bpy")
    blend = tmp_path / "only_cube.blend"
    subprocess.run(
        [
            "blender",
            "-b",
            "--factory-startup",
            "--python-expr",
            "import bpy\nfor n in ('Camera', 'Light'):\n    bpy.data.objects.remove(bpy.data.objects[n])\n"
            f"bpy.ops.wm.save_as_mainfile(filepath={str(blend)!r})\n",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert blend.is_file()
    project = tmp_path / "project"
    project.mkdir()
    (project / "pytest.ini").write_text(f"[pytest]\nblender = true\nblender_runtime = {runtime}\n")
    (project / "test_file.py").write_text(
        textwrap.dedent(
            """
            import pytest

            @pytest.mark.in_blender
            def test_inside_adds_a_monkey():
                import bpy
                assert sorted(o.name for o in bpy.context.scene.objects) == ["Cube"]
                bpy.ops.mesh.primitive_monkey_add()

            def test_outside_sees_the_file_again(blender):
                assert [o["name"] for o in blender.call("get_scene_info")["objects"]] == ["Cube"]
                blender.run("bpy.ops.mesh.primitive_monkey_add()")
                blender.reset()
                assert blender.call("get_scene_info")["object_count"] == 1
            """
        )
    )
    # `=`: pytest looks for its ini file before it knows plugin options, taking a separate value
    # for a path argument (a .blend outside the project would move the rootdir).
    run = run_pytest(project, tmp_path, f"--blender-file={blend}")
    assert run.returncode == 0, run.output
    assert run.names("passed") == {"test_inside_adds_a_monkey", "test_outside_sees_the_file_again"}, run.output
