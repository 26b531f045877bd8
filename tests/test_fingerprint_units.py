"""Unit tests of the fingerprint's parts on pure inputs: values, globals, locality, imports, pickles.

The end-to-end proof (real CLI, real workers, real edits) is `tests/test_never_stale.py`; these pin
down the rules themselves, fast, and name the rule when one breaks.
"""

from __future__ import annotations

import ast
import io
import json
import os
import pickle
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import cloudpickle
import pytest

from dsl import load_flow, locality
from dsl.locality import distribution_of, is_user_file, version_of
from runner.fingerprint import static_prints, value_hash
from runner.fingerprint.bytecode import code_names, global_names
from runner.fingerprint.imports import CannotSee, ImportScanner, imports_in
from runner.stable_pickle import StablePickler


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# ----- values -------------------------------------------------------------------------------------


def test_dict_order_is_part_of_a_values_hash_and_set_order_is_not():
    assert value_hash({"a": 1, "b": 2}) != value_hash({"b": 2, "a": 1})
    assert value_hash({"a", "b", "c"}) == value_hash({"c", "b", "a"})
    assert value_hash([{"x": [1, 2]}]) == value_hash([{"x": [1, 2]}])


# ----- globals ------------------------------------------------------------------------------------


def globals_of(code: types.CodeType) -> set[str]:
    return global_names(code, code_names(code))


def test_attribute_names_are_not_globals():
    def configs(c_values):
        return [split(c) for c in c_values.split(",")] + fit.predict  # noqa: F821

    assert globals_of(configs.__code__) == {"split", "fit"}

    def only_methods(frame):
        return frame.split(",").fit().transform()

    assert globals_of(only_methods.__code__) == set()


def test_globals_of_nested_code_and_class_bodies_count():
    source = "def outer():\n    class Inner:\n        size = LIMIT\n    return [helper(x) for x in ()]\n"
    namespace: dict[str, object] = {}
    exec(compile(source, "<test>", "exec"), namespace)
    assert globals_of(namespace["outer"].__code__) >= {"LIMIT", "helper"}  # type: ignore[union-attr]


def test_code_with_more_names_than_one_byte_arguments_hold_is_read_right():
    attributes = " + ".join(f"x.a{i}" for i in range(300))
    source = f"def wide(x):\n    return {attributes} + helper(x) + x.helper2\n"
    namespace: dict[str, object] = {}
    exec(compile(source, "<test>", "exec"), namespace)
    assert globals_of(namespace["wide"].__code__) == {"helper"}  # type: ignore[union-attr]


# ----- locality -----------------------------------------------------------------------------------


def test_flows_own_packages_are_never_user_code_even_installed_editable():
    assert not is_user_file(sys.modules["dsl.step"].__file__ or "")
    assert not is_user_file(str(Path(sys.modules["runner.fingerprint"].__file__ or "")))


def test_the_standard_library_and_installed_distributions_are_not_user_code():
    import json as stdlib_module

    assert not is_user_file(stdlib_module.__file__ or "")
    assert not is_user_file(cloudpickle.__file__ or "")
    name, version = distribution_of(cloudpickle.__file__ or "") or ("", "")
    assert (name, version.partition("+")[0]) == ("cloudpickle", cloudpickle.__version__)
    assert version_of(cloudpickle.__file__ or "", "cloudpickle").startswith(
        f"cloudpickle=={cloudpickle.__version__}+"
    )


def test_a_path_that_merely_mentions_site_packages_is_user_code(tmp_path):
    module = write(tmp_path / "my-site-packages-tool" / "site-packages-ish" / "helpers.py", "X = 1\n")
    assert is_user_file(str(module))


def test_a_file_listed_in_a_record_is_installed_and_one_beside_it_is_not(tmp_path):
    site = tmp_path / "site"
    write(site / "pkg-2.0.dist-info" / "RECORD", "pkg/__init__.py,,\npkg-2.0.dist-info/RECORD,,\n")
    installed = write(site / "pkg" / "__init__.py", "")
    dropped = write(site / "loose.py", "")
    name, version = distribution_of(str(installed)) or ("", "")
    assert (name, version.partition("+")[0]) == ("pkg", "2.0")
    assert not is_user_file(str(installed))
    assert is_user_file(str(dropped))


def test_an_unrecorded_file_in_the_interpreters_site_packages_is_installed(tmp_path, monkeypatch):
    """A legacy `setup.py install` writes no RECORD; its files are still not the user's code."""
    site = tmp_path / "lib" / "site-packages"
    legacy = write(site / "legacy_pkg" / "__init__.py", "")
    monkeypatch.setattr(locality, "_interpreter_site_dirs", lambda: (str(site.resolve()) + os.sep,))
    assert distribution_of(str(legacy)) == ("legacy_pkg", "unrecorded")
    assert not is_user_file(str(legacy))


def test_a_reinstall_with_changed_files_but_the_same_version_is_another_distribution(tmp_path):
    """Identity includes the RECORD, which holds each file's hash (one process per install)."""
    site = tmp_path / "site"
    record = site / "pkg-2.0.dist-info" / "RECORD"
    module = write(site / "pkg.py", "")
    probe = "import sys; from dsl.locality import version_of; print(version_of(sys.argv[1], 'pkg'))"
    versions = []
    for digest in ("sha256=aaa", "sha256=bbb"):
        write(record, f"pkg.py,{digest},0\n")
        versions.append(
            subprocess.run(
                [sys.executable, "-c", probe, str(module)], capture_output=True, text=True, check=True
            ).stdout.strip()
        )
    assert versions[0].startswith("pkg==2.0+") and versions[0] != versions[1]


# ----- imports ------------------------------------------------------------------------------------


def test_imports_in_code_resolve_relative_names_and_literal_import_module_calls():
    tree = ast.parse(
        "import a.b\nfrom . import c\nfrom ..d import e\nimport importlib\n"
        "importlib.import_module('f.g')\n__import__('h')\nimportlib.import_module('.i', 'pkg')\n"
    )
    found = set(imports_in(tree, "pkg.sub", "test"))
    assert found >= {"a.b", "pkg.sub.c", "pkg.d", "pkg.d.e", "f.g", "h", "pkg.i"}


def test_a_computed_module_name_cannot_be_seen():
    tree = ast.parse("import importlib\nname = 'x'\nimportlib.import_module(name)\n")
    with pytest.raises(CannotSee, match="computed name"):
        list(imports_in(tree, "", "step"))


def test_an_import_closure_covers_what_the_module_imports_in_turn(tmp_path):
    write(tmp_path / "top.py", "import middle\n")
    write(tmp_path / "middle.py", "def f():\n    from pkg import leaf\n")
    leaf = write(tmp_path / "pkg" / "leaf.py", "X = 1\n")
    write(tmp_path / "pkg" / "__init__.py", "")
    before = ImportScanner([str(tmp_path)]).closure("top")
    assert {Path(p).name for p in before.files} == {"top.py", "middle.py", "leaf.py", "__init__.py"}
    leaf.write_text("X = 2\n")
    assert ImportScanner([str(tmp_path)]).closure("top").digest != before.digest


# ----- static prints of loaded flows -------------------------------------------------------------


def prints_of(path: Path) -> dict[str, str]:
    """step -> everything its load-time fingerprint is made of, as one string."""
    return {
        name: json.dumps([p.code, p.helpers, p.options, p.untrusted])
        for name, p in static_prints(load_flow(path)).items()
    }


FACTORY_FLOW = """
from dsl import step

def make(factor):
    return lambda x: x * factor

double = make(2)
triple = make(3)

@step
def use():
    return double(1) + triple(1)
"""


def test_closures_from_one_factory_are_keyed_by_what_they_hold(tmp_path):
    path = write(tmp_path / "flow.py", FACTORY_FLOW)
    before = prints_of(path)
    write(path, FACTORY_FLOW.replace("make(3)", "make(30)"))
    assert prints_of(path) != before


def test_a_step_named_like_a_method_a_sibling_calls_is_not_its_helper(tmp_path):
    text = """
    from dsl import step

    @step
    def split():
        rows = [1]
        return rows

    @step
    def configs():
        return "a,b".split(",")
    """
    path = write(tmp_path / "flow.py", text)
    before = prints_of(path)
    write(path, text.replace("rows = [1]\n        return rows", "data = [1]\n        return data"))
    after = prints_of(path)
    assert after["split"] != before["split"] and after["configs"] == before["configs"]


# ----- stable pickles -----------------------------------------------------------------------------

PICKLE_A_USER_OBJECT = """
import hashlib, io, sys, types
import cloudpickle
sys.path.insert(0, {repo!r})
from runner.stable_pickle import StablePickler

def user_object(name):
    module = types.ModuleType(name)
    exec("class Model:\\n    def __init__(self, w):\\n        self.w = w\\n", module.__dict__)
    sys.modules[name] = module
    cloudpickle.register_pickle_by_value(module)
    return module.Model([1, 2])

buffer = io.BytesIO()
StablePickler(buffer, protocol=5).dump(user_object("users_flow"))
plain = cloudpickle.dumps(user_object("users_flow_again"), protocol=5)
print(hashlib.sha256(buffer.getvalue()).hexdigest(), hashlib.sha256(plain).hexdigest())
"""


def test_an_object_of_a_class_pickled_by_value_has_the_same_bytes_in_every_process():
    repo = str(Path(__file__).resolve().parent.parent)
    script = PICKLE_A_USER_OBJECT.format(repo=repo)
    first, second = (
        subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True
        ).stdout.split()
        for _ in range(2)
    )
    assert first[0] == second[0]  # stable
    assert first[1] != second[1]  # plain cloudpickle: a random class id per process


def test_different_classes_get_different_ids_and_round_trip():
    namespace: dict[str, object] = {"__name__": "__main__"}
    exec("class A:\n    x = 1\nclass B:\n    x = 2\n", namespace)
    blobs = []
    for name in ("A", "B"):
        buffer = io.BytesIO()
        StablePickler(buffer, protocol=5).dump(namespace[name])
        blobs.append(buffer.getvalue())
    assert blobs[0] != blobs[1]
    assert [pickle.loads(blob).x for blob in blobs] == [1, 2]


CLASS_FLOW = """
from dsl import step

class Config:
    threshold = 1

Config.threshold = {value}

@step
def use():
    return Config.threshold
"""


def test_a_class_attribute_set_after_the_class_body_counts(tmp_path):
    path = write(tmp_path / "flow.py", CLASS_FLOW.format(value=5))
    before = prints_of(path)
    write(path, CLASS_FLOW.format(value=6))
    assert prints_of(path) != before


def test_sha_of_parts_is_the_digest_stores_were_keyed_by() -> None:
    """Each part is followed by a NUL byte, as the fingerprints already in users' stores were
    computed: a faster `sha` that changed a digest would make every cached result miss once."""
    import hashlib

    from runner.fingerprint.values import sha

    assert sha() == hashlib.sha256(b"").hexdigest()
    assert sha("code", "") == hashlib.sha256(b"code\0\0").hexdigest()
    assert (
        sha("h:a=1", "p:é=\udcff")
        == hashlib.sha256("h:a=1\0p:é=\udcff\0".encode("utf-8", "surrogatepass")).hexdigest()
    )
