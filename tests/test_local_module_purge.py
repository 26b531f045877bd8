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
