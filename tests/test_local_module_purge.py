"""Each load forgets the user's modules under the project imported in this process (a step body's import
run in-process), so the next import reads their source again; it finds them by their real path, so a
module reached through a symlink is forgotten too, and nothing outside the project is."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from dsl import load_flow
from runner.engine import RunRequest
from tests.conftest import EngineHarness


def _import(name: str) -> None:
    importlib.import_module(name)
    assert name in sys.modules


def test_a_load_forgets_project_modules_reached_through_symlinks(
    write_flow: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    flow = write_flow("from dsl import step\n\n@step\ndef a():\n    return 1\n")
    project = flow.parent
    (project / "lib").mkdir()
    (project / "lib" / "purge_via_linked_dir.py").write_text("X = 1\n")
    (project / "purge_real_file.py").write_text("Y = 1\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "linked").symlink_to(project / "lib", target_is_directory=True)
    (outside / "files").mkdir()
    (outside / "files" / "purge_via_linked_file.py").symlink_to(project / "purge_real_file.py")
    (outside / "files" / "purge_not_the_projects.py").write_text("Z = 1\n")
    monkeypatch.syspath_prepend(str(outside / "linked"))
    monkeypatch.syspath_prepend(str(outside / "files"))
    load_flow(flow)  # the project is now a root
    names = ("purge_via_linked_dir", "purge_via_linked_file", "purge_not_the_projects")
    try:
        for name in names:
            _import(name)
        load_flow(flow)
        assert "purge_via_linked_dir" not in sys.modules  # its directory links into the project
        assert "purge_via_linked_file" not in sys.modules  # the file itself links into the project
        assert "purge_not_the_projects" in sys.modules  # outside the project: left alone
    finally:
        for name in names:
            sys.modules.pop(name, None)


def test_every_load_of_a_flow_knows_its_local_modules_and_where_they_were_found(
    write_flow: Callable[..., Path], store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reload (a save in `--watch` or the TUI) listed no local module: they were already imported
    when the load looked at what it imported, so a fresh worker after a save lacked the directory a
    step body imports from, and local modules went inside every bundle of step code again."""
    monkeypatch.setattr(sys, "path", list(sys.path))  # the flow inserts its lib directory
    flow = write_flow(
        """
        import sys
        from pathlib import Path

        sys.path.insert(0, str(Path(__file__).parent / "lib"))

        import reload_lib_helper
        from dsl import step


        @step
        def uses():
            import reload_lib_helper as again  # imported where the step runs

            return again.VALUE + reload_lib_helper.VALUE
        """
    )
    (flow.parent / "lib").mkdir()
    (flow.parent / "lib" / "reload_lib_helper.py").write_text("VALUE = 7\n")
    first, second = load_flow(flow), load_flow(flow)
    lib = str((flow.parent / "lib").resolve())
    assert (
        first.local_modules
        == second.local_modules
        == {"reload_lib_helper": str(flow.parent.resolve() / "lib" / "reload_lib_helper.py")}
    )
    assert first.search_paths == second.search_paths == (lib,)
    fresh = EngineHarness(store_dir, workers=1)  # workers that never saw the first load
    try:
        handle = fresh.engine.run(RunRequest(second, {}))
        run = fresh.store.get_run(handle.id)
        (step,) = fresh.store.get_steps(handle.id)
        assert run is not None and run.status == "succeeded", step.error
        assert step.preview == "14"
    finally:
        fresh.close()
