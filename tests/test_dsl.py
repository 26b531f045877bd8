"""The DSL users write flows in: decorators, wiring, parameters, graph building and rendering."""

from __future__ import annotations

import functools
import inspect
import re
import textwrap
import types

import pytest

from dsl import REQUIRED, Flow, FlowError, Step, build_graph, load_flow, param, step
from dsl import wiring as wiring_module
from dsl.step import plain_arguments


def load_text(write_flow, text: str, name: str = "flow_file.py"):
    return load_flow(write_flow(text, name=name))


# ----- @step -------------------------------------------------------------------------------------


def test_bare_step_is_still_a_plain_function():
    @step
    def add(x: int = 1, y: int = 2):
        """Adds."""
        return x + y

    assert isinstance(add, Step)
    assert add(3, 4) == 7
    assert add() == 3
    assert add.name == "add"
    assert add.__doc__ == "Adds."
    assert add.__name__ == "add"
    assert add.retries == 0 and add.timeout is None and add.cache is True
    assert add.trigger == "all_succeeded"


def test_a_step_wraps_its_function_as_functools_update_wrapper_does():
    """`Step` copies a plain function's attributes itself (faster): exactly what `update_wrapper`
    gives, the function's own attributes included; anything else still goes through it."""

    def work(x: int, y: str = "a") -> int:
        """Works."""
        return x

    work.owner = "data team"  # type: ignore[attr-defined]
    reference = functools.update_wrapper(types.SimpleNamespace(), work)
    wrapped = Step(work)
    for attr in (*functools.WRAPPER_ASSIGNMENTS, "__wrapped__", "owner"):
        assert getattr(wrapped, attr) == getattr(reference, attr), attr
    partial = functools.partial(work, 1)
    assert Step(partial, name="part").__wrapped__ is partial


def _signature_arguments(fn) -> tuple:
    return tuple((p.name, p.kind, p.default, p.annotation) for p in inspect.signature(fn).parameters.values())


def _plain(a, b: int, /, c, d: str = "x", *rest: float, e, f: bool = True, **more) -> int:
    return 0


def _keyword_only(*, lr=0.1, epochs: int = param(3, help="passes")):
    return lr


def _defaults_only(x=1, y=(1, 2), z=None):
    return x


def _nothing():
    return 0


def _positional(raw, features):
    return raw


def _wrapping(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)

    return wrapper


_KINDS = {
    "all-kinds": _plain,
    "keyword-only": _keyword_only,
    "defaults": _defaults_only,
    "no-arguments": _nothing,
    "positional": _positional,
    "wrapped": _wrapping(_plain),
}
"""Functions of every shape a step's arguments come in, by test id."""
_SIGNATURES = {**_KINDS, "lambda": lambda q, r=2: q, "partial": functools.partial(_plain, 1)}


@pytest.mark.parametrize("fn", list(_SIGNATURES.values()), ids=list(_SIGNATURES))
def test_a_steps_arguments_are_what_inspect_signature_reads(fn):
    """`Step.arguments` is read from the code object for a plain function (`plain_arguments`), and
    through `inspect.signature` for anything else (a wrapper's `__wrapped__`, a partial): the same
    names, kinds, defaults and annotations, in the same order, either way."""
    made = Step(fn, name="made")
    assert tuple(tuple(a) for a in made.arguments) == _signature_arguments(fn)
    assert made.signature == inspect.signature(fn)
    if isinstance(fn, types.FunctionType) and not fn.__dict__:
        assert plain_arguments(fn) == made.arguments


_BARE = {**_KINDS, "lambda": lambda q: q, "not-callable": 3}


@pytest.mark.parametrize("fn", list(_BARE.values()), ids=list(_BARE))
def test_the_bare_decorator_makes_the_step_every_default_option_makes(fn):
    """`@step` takes a short way (`Step.plain`): the same attributes with the same values, in the same
    order (a pickled step is the same bytes), as `Step(fn)`; the same error for what is no step."""
    try:
        expected = Step(fn)
    except FlowError as error:
        with pytest.raises(FlowError, match=re.escape(str(error))):
            step(fn)
        return
    made = step(fn)
    assert type(made) is Step
    assert list(vars(made).items()) == list(vars(expected).items())
    assert made.resources is not step(fn).resources  # a dict of its own
    if fn is _positional:
        assert made.arguments[0] is step(_positional).arguments[0]  # made once per name


def test_step_with_options():
    @step(name="renamed", retries=2, retry_delay=0.5, timeout=3, cache=False, version="v2")
    def original(x=1):
        return x * 10

    assert original.name == "renamed"
    assert (original.retries, original.retry_delay, original.timeout) == (2, 0.5, 3.0)
    assert original.cache is False and original.version == "v2"
    assert original(2) == 20


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"retries": -1}, "retries"),
        ({"retries": 1.5}, "retries"),
        ({"retry_delay": -1}, "retry_delay"),
        ({"timeout": 0}, "timeout"),
        ({"trigger": "sometimes"}, "trigger"),
        ({"name": "not an identifier"}, "identifier"),
        ({"foreach": "missing"}, "foreach"),
        ({"when": 3}, "when"),
    ],
)
def test_invalid_step_options_raise_flow_error_naming_the_step(options, fragment):
    def fn(x=1):
        return x

    with pytest.raises(FlowError) as info:
        step(**options)(fn)
    assert fragment in str(info.value)
    assert info.value.line == fn.__code__.co_firstlineno
    assert info.value.file == __file__


def test_step_rejects_a_non_function():
    with pytest.raises(FlowError):
        step(3)  # type: ignore[call-overload]


# ----- wiring -----------------------------------------------------------------------------------------

WIRING = """
    from dsl import step

    @step
    def a():
        return 1

    @step
    def b():
        return 2

    @step
    def c():
        return 3

    @step
    def d():
        return 4

    {wiring}
"""


@pytest.mark.parametrize(
    ("wiring", "edges"),
    [
        ("a >> b", {("a", "b")}),
        ("a >> b >> c", {("a", "b"), ("b", "c")}),
        ("a >> [b, c]", {("a", "b"), ("a", "c")}),
        ("[a, b] >> c", {("a", "c"), ("b", "c")}),
        ("b << a", {("a", "b")}),
        ("c << [a, b]", {("a", "c"), ("b", "c")}),
        ("[a, b] << c", {("c", "a"), ("c", "b")}),
        ("a >> [b, c] >> d", {("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")}),
        ("a >> (b, c)", {("a", "b"), ("a", "c")}),
    ],
)
def test_wiring_operators(write_flow, wiring, edges):
    loaded = load_text(write_flow, textwrap.dedent(WIRING).format(wiring=wiring))
    found = {(u, n) for n, node in loaded.graph.nodes.items() for u in node.upstream}
    assert found == edges
    for upstream, downstream in edges:
        assert downstream in loaded.graph.nodes[upstream].downstream
        assert loaded.graph.order.index(upstream) < loaded.graph.order.index(downstream)


def test_parameter_named_after_a_step_implies_the_edge(write_flow):
    loaded = load_text(
        write_flow,
        """
        from dsl import step

        @step
        def fetch(rows: int = 10):
            return list(range(rows))

        @step
        def build(fetch, scale: float = 2.0):
            return [x * scale for x in fetch]
        """,
    )
    graph = loaded.graph
    assert graph.nodes["build"].inputs == {"fetch": "fetch"}
    assert graph.nodes["build"].upstream == ["fetch"]
    assert set(graph.params) == {"rows", "scale"}
    assert graph.params["rows"].type is int and graph.params["rows"].default == 10
    assert graph.params["scale"].type is float
    assert graph.params["scale"].steps == ("build",)


def test_param_name_edge_cases(write_flow):
    loaded = load_text(
        write_flow,
        """
        from dsl import param, step

        @step
        def data():
            return 1

        @step
        def model(data, data_version: str = "v1", none_default=None, untyped="x"):
            return data

        @step
        def model_b(data, data_version: str = "v1"):
            return data
        """,
    )
    graph = loaded.graph
    assert graph.nodes["model"].inputs == {"data": "data"}
    assert set(graph.params) == {"data_version", "none_default", "untyped"}
    assert graph.params["data_version"].steps == ("model", "model_b")
    assert graph.params["none_default"].type is str  # None default: strings from -p
    assert graph.params["untyped"].type is str


def test_unannotated_parameters_can_be_set_with_p(flow_cli, write_flow):
    path = write_flow(
        """
        from dsl import step

        @step
        def s(n=5, name="x", ratio=0.5, flag=None):
            return (n, name, ratio, flag)
        """
    )
    result = flow_cli("run", str(path), "-p", "n=7", "-p", "name=y", "-p", "ratio=2", "-p", "flag=z")
    assert result.code == 0, result
    shown = flow_cli("show", "last", "--json").json()
    assert shown["params"] == {"n": 7, "name": "y", "ratio": 2.0, "flag": "z"}
    assert shown["steps"][0]["preview"] == "(7, 'y', 2.0, 'z')"


def test_a_step_argument_named_like_the_step_itself_is_a_parameter(write_flow):
    loaded = load_text(
        write_flow,
        """
        from dsl import step

        @step
        def rows(rows: int = 5):
            return rows
        """,
    )
    assert set(loaded.graph.params) == {"rows"}
    assert loaded.graph.nodes["rows"].upstream == []


def test_conflicting_parameter_declarations_are_an_error(write_flow):
    with pytest.raises(FlowError) as info:
        load_text(
            write_flow,
            """
            from dsl import step

            @step
            def a(lr: float = 0.1):
                return lr

            @step
            def b(lr: float = 0.2):
                return lr
            """,
        )
    assert "'lr'" in str(info.value) and info.value.step == "b"


def test_param_with_help_and_choices(write_flow):
    loaded = load_text(
        write_flow,
        """
        from dsl import param, step

        @step
        def train(
            lr: float = param(0.1, help="learning rate"),
            opt: str = param("sgd", help="optimizer", choices=["sgd", "adam"]),
            dataset: str = param(help="required"),
        ):
            return lr
        """,
    )
    params = loaded.graph.params
    assert params["lr"].help == "learning rate" and params["lr"].default == 0.1
    assert params["opt"].choices == ("sgd", "adam")
    assert params["dataset"].required and params["dataset"].default is REQUIRED
    assert params["lr"].as_dict()["type"] == "float"
    p = param(3, help="h", choices=[1, 2, 3])
    assert (p.default, p.help, p.choices) == (3, "h", (1, 2, 3))


def test_flow_declaration_names_the_flow(write_flow):
    loaded = load_text(
        write_flow,
        """
        from dsl import Flow, step

        flow = Flow("train_and_eval", description="Train then evaluate")

        @step
        def s():
            return 1
        """,
    )
    assert loaded.name == "train_and_eval"
    assert loaded.description == "Train then evaluate"


def test_flow_name_defaults_to_the_file_stem(write_flow):
    text = "from dsl import step\n\n@step\ndef s():\n    return 1\n"
    loaded = load_text(write_flow, text, name="my_flow.py")
    assert loaded.name == "my_flow" and loaded.description == ""


def test_flow_declared_outside_a_load_does_not_crash():
    declared = Flow("x", description="y")
    assert declared.name == "x" and declared.description == "y"


def test_steps_imported_into_a_flow_are_nodes_and_the_file_loads_twice_identically(write_flow):
    path = write_flow("from dsl import step\n\n@step\ndef s(n: int = 1):\n    return n\n")
    first, second = load_flow(path), load_flow(path)
    assert first.graph.order == second.graph.order == ["s"]
    assert first.module is not second.module
    assert first.load_id != second.load_id


def test_layers():
    @step
    def root():
        return 1

    @step
    def mid1(root):
        return root

    @step
    def mid2(root):
        return root

    @step
    def leaf(mid1, mid2):
        return 0

    @step
    def alone():
        return 0

    graph = build_graph([root, mid1, mid2, leaf, alone], [])
    assert graph.layers() == [["root", "alone"], ["mid1", "mid2"], ["leaf"]]
    assert graph.descendants("root") == {"mid1", "mid2", "leaf"}
    assert graph.ancestors("leaf") == {"root", "mid1", "mid2"}


def test_definition_order_is_kept_where_edges_allow():
    @step
    def z():
        return 1

    @step
    def y():
        return 1

    @step
    def x(z):
        return 1

    graph = build_graph([z, y, x], [])
    assert graph.order == ["z", "y", "x"]


def test_cycle_error_names_the_path(write_flow):
    with pytest.raises(FlowError) as info:
        load_text(
            write_flow,
            """
            from dsl import step

            @step
            def a(c=None):
                return 1

            @step
            def b(a):
                return 2

            @step
            def c(b):
                return 3
            """,
        )
    assert "cycle" in str(info.value)
    text = str(info.value)
    assert all(n in text for n in ("a", "b", "c"))


def test_variadic_arguments_are_rejected():
    @step
    def v(*args):
        return args

    with pytest.raises(FlowError) as info:
        build_graph([v], [])
    assert "*args" in str(info.value)


def test_when_naming_nothing_is_an_error():
    @step(when=lambda nothing: True)
    def gated():
        return 1

    with pytest.raises(FlowError) as info:
        build_graph([gated], [])
    assert "nothing" in str(info.value)


def test_wiring_records_in_the_current_wiring_only():
    @step
    def p():
        return 1

    @step
    def q():
        return 2

    recorded = wiring_module.push()
    try:
        p >> q
    finally:
        wiring_module.pop(recorded)
    assert [(e.upstream.name, e.downstream.name) for e in recorded.edges] == [("p", "q")]
    assert recorded is not wiring_module.current()


# ----- shared step modules --------------------------------------------------------------------------

SHARED = """
from dsl import step


@step
def extract():
    return [1, 2, 3]


@step
def clean(extract):
    return [x for x in extract if x]
"""


def test_two_flows_importing_the_same_shared_steps_get_independent_graphs(write_flow, tmp_path):
    (tmp_path / "project").mkdir(exist_ok=True)
    (tmp_path / "project" / "shared_steps.py").write_text(SHARED)
    flow_one = write_flow(
        """
        from dsl import step
        from shared_steps import clean, extract

        @step
        def train(clean):
            return sum(clean)

        @step
        def audit():
            return "audit"

        extract >> audit
        """,
        name="one.py",
    )
    flow_two = write_flow(
        """
        from dsl import step
        from shared_steps import clean, extract

        @step
        def publish(extract):
            return extract

        clean >> publish
        """,
        name="two.py",
    )
    one = load_flow(flow_one)
    two = load_flow(flow_two)
    again = load_flow(flow_one)
    assert set(one.graph.nodes) == {"extract", "clean", "train", "audit"}
    assert set(two.graph.nodes) == {"extract", "clean", "publish"}
    assert two.graph.nodes["extract"].downstream == ["clean", "publish"]
    assert "audit" not in two.graph.nodes["extract"].downstream
    assert set(one.graph.nodes["extract"].downstream) == {"clean", "audit"}
    assert two.graph.nodes["publish"].upstream == ["extract", "clean"]
    assert set(again.graph.nodes) == set(one.graph.nodes)
    assert set(again.graph.nodes["extract"].downstream) == {"clean", "audit"}


def test_shared_step_modules_run_independently(harness, write_flow, tmp_path):
    (tmp_path / "project").mkdir(exist_ok=True)
    (tmp_path / "project" / "shared_steps.py").write_text(SHARED)
    one = write_flow(
        "from dsl import step\nfrom shared_steps import clean, extract\n\n"
        "@step\ndef total(clean):\n    return sum(clean)\n",
        name="one.py",
    )
    two = write_flow(
        "from dsl import step\nfrom shared_steps import extract\n\n"
        "@step\ndef count(extract):\n    return len(extract)\n",
        name="two.py",
    )
    r1, r2 = harness.run(one), harness.run(two)
    assert r1.status == r2.status == "succeeded"
    assert {s.name: s.preview for s in r1.steps}["total"] == "6"
    assert {s.name: s.preview for s in r2.steps} == {"extract": "[1, 2, 3]", "count": "3"}


# ----- flow graph -----------------------------------------------------------------------------------

GRAPH_FLOW = """
    from dsl import Flow, param, step

    flow = Flow("graphy", description="for rendering")

    @step
    def fetch(rows: int = param(5, help="how many rows")):
        return rows

    @step(retries=2, timeout=10)
    def build(fetch):
        return fetch

    @step(when=lambda build: build > 0)
    def train(build):
        return build

    @step(trigger="all_done", cache=False)
    def notify(build):
        return 0

    @step(foreach="fetch_list")
    def each(fetch_list: list = [1, 2]):
        return fetch_list
"""


def test_graph_text(flow_cli, write_flow):
    path = write_flow(GRAPH_FLOW)
    result = flow_cli("graph", str(path))
    assert result.code == 0, result
    out = result.stdout
    assert out.startswith("flow graphy: 5 steps, 2 parameters")
    assert "for rendering" in out
    import re

    assert re.search(r"build +← fetch +\[retries 2, timeout 10s\]", out)
    assert re.search(r"train +← build +\[when\]", out)
    assert "trigger all_done" in out and "no cache" in out
    assert "foreach fetch_list" in out
    assert "rows: int = 5" in out and "how many rows" in out


def test_graph_mermaid(flow_cli, write_flow):
    path = write_flow(GRAPH_FLOW)
    result = flow_cli("graph", str(path), "--format", "mermaid")
    assert result.code == 0, result
    lines = result.stdout.splitlines()
    assert lines[0] == "flowchart LR"
    assert "  fetch --> build" in lines
    assert "  build --> train" in lines  # data edges are plain; `when` is the step's (issue 14)
    assert '  train{{"train<br/>when"}}' in lines
    assert "  build --> notify" in lines


def test_graph_dot(flow_cli, write_flow):
    path = write_flow(GRAPH_FLOW)
    result = flow_cli("graph", str(path), "--format", "dot")
    assert result.code == 0, result
    out = result.stdout
    assert out.startswith('digraph "graphy" {')
    assert '"fetch" -> "build";' in out
    assert '"build" -> "train";' in out  # data edges are plain; `when` is the step's (issue 14)
    assert '"train" [label="train\\nwhen", style=rounded, peripheries=2];' in out
    assert out.rstrip().endswith("}")
    assert out.count("{") == out.count("}")


def test_check_reports_steps_and_params(flow_cli, write_flow):
    result = flow_cli("check", str(write_flow(GRAPH_FLOW)), "-p", "rows=9")
    assert result.code == 0, result
    assert "graphy has 5 steps and 2 parameters" in result.stdout and "rows=9" in result.stdout


# ----- parameter conversion (property-based) ----------------------------------------------------------

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from dsl.graph import ParamSpec  # noqa: E402
from runner.fingerprint import value_hash  # noqa: E402
from runner.params import convert, resolve_params  # noqa: E402


@given(st.integers())
def test_int_parameters_round_trip_from_the_command_line(value):
    spec = ParamSpec("n", 0, int, steps=("s",))
    assert convert(spec, str(value)) == value
    assert convert(spec, f"  {value} ") == value


@given(st.floats(allow_nan=False))
def test_float_parameters_round_trip_from_the_command_line(value):
    spec = ParamSpec("lr", 0.1, float, steps=("s",))
    assert convert(spec, repr(value)) == value
    assert convert(spec, 3) == 3.0 and isinstance(convert(spec, 3), float)


@given(st.text())
def test_string_parameters_are_never_evaluated(value):
    spec = ParamSpec("name", "x", str, steps=("s",))
    assert convert(spec, value) == value


@given(st.lists(st.integers()))
def test_list_parameters_parse_json(values):
    import json

    spec = ParamSpec("xs", [], list, steps=("s",))
    assert convert(spec, json.dumps(values)) == values


@given(st.sampled_from(["1", "true", "YES", "on", "0", "false", "No", "off"]))
def test_bool_parameters(text):
    spec = ParamSpec("flag", False, bool, steps=("s",))
    assert convert(spec, text) is (text.lower() in ("1", "true", "yes", "on"))


@given(
    st.text().filter(
        lambda t: (
            t.strip().lower() not in {"1", "true", "yes", "on", "y", "t", "0", "false", "no", "off", "n", "f"}
        )
    )
)
def test_bad_bool_values_are_flow_errors(text):
    spec = ParamSpec("flag", False, bool, steps=("s",))
    with pytest.raises(FlowError):
        convert(spec, text)


def test_resolve_params_precedence_and_required():
    specs = {
        "a": ParamSpec("a", 1, int, steps=("s",)),
        "b": ParamSpec("b", REQUIRED, str, steps=("s",)),
    }
    assert resolve_params(specs, {"b": "x"}) == {"a": 1, "b": "x"}
    assert resolve_params(specs, {"a": "3", "b": "x"}, {"a": 2}) == {"a": 3, "b": "x"}
    assert resolve_params(specs, {"b": "x"}, {"a": 2}) == {"a": 2, "b": "x"}
    with pytest.raises(FlowError):
        resolve_params(specs, {})
    with pytest.raises(FlowError):
        resolve_params(specs, {"b": "x", "c": "1"})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_value_hash_is_deterministic_and_type_sensitive(value):
    assert value_hash(value) == value_hash(value)
    import copy

    assert value_hash(copy.deepcopy(value)) == value_hash(value)


def test_value_hash_distinguishes_types_and_orders():
    assert value_hash(1) != value_hash(1.0) != value_hash("1")
    assert value_hash(True) != value_hash(1)
    assert value_hash([1, 2]) != value_hash([2, 1])
    assert value_hash((1, 2)) != value_hash([1, 2])
    assert value_hash({"a": 1, "b": 2}) != value_hash({"b": 2, "a": 1})  # dicts are ordered (issue 13)
    assert value_hash({1, 2, 3}) == value_hash({3, 2, 1})
