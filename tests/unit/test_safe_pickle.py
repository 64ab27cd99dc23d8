"""The restricted unpickler: river models load, code-running payloads never do."""

from __future__ import annotations

import builtins
import math
import os
import pickle
import pickletools
import struct
import subprocess
import sys
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from river import (
    compose,
    ensemble,
    feature_extraction,
    forest,
    linear_model,
    neighbors,
    optim,
    preprocessing,
    stats,
    tree,
)

from benchmarks import workloads
from model_publisher import catalog
from streamml.errors import ConfigError, EnvelopeError
from streamml.safe_pickle import DEFAULT_ALLOWED, UnsafePayloadError, referenced_globals, safe_loads

Row = tuple[dict[str, Any], Any]

EXTRA_MODELS: dict[str, Callable[[], Any]] = {
    "arf_default": lambda: forest.ARFClassifier(seed=42),  # river's 10 trees, the catalog's has 5
    # A string feature makes the tree grow nominal branches and splitters too.
    "hoeffding_nominal": lambda: tree.HoeffdingTreeClassifier(grace_period=50),
}
MODEL_NAMES = [*catalog.spec_names(), *EXTRA_MODELS]
REGRESSORS = {name for name in catalog.spec_names() if catalog.task(catalog.build(name)) == "regression"}


class MyModel:
    """A user model that only an ``extra_allowed`` entry lets through."""

    def __init__(self, weight: float) -> None:
        self.weight = weight

    @staticmethod
    def make(weight: float) -> MyModel:
        return MyModel(weight)


def module_helper() -> None:
    """A plain function: a wildcard entry must not reach it."""


class _Call:
    """Pickles as ``func(*args)``: the classic code-execution gadget."""

    def __init__(self, func: Callable[..., Any], *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, ...]:
        return self.func, self.args


def _stack_global_call(module: str, name: str) -> bytes:
    """A protocol 5 pickle calling ``module.name()`` through memoized STACK_GLOBAL strings."""

    def short_str(text: str) -> bytes:
        raw = text.encode()
        return b"\x8c" + struct.pack("<B", len(raw)) + raw + b"\x94"  # SHORT_BINUNICODE, MEMOIZE

    return b"\x80\x05" + short_str(module) + short_str(name) + b"\x93\x94)R."  # STACK_GLOBAL, (), REDUCE


@pytest.fixture(scope="module")
def rows() -> list[Row]:
    return workloads.feature_rows(2000)


def _train(name: str, rows: list[Row]) -> Any:
    if name in EXTRA_MODELS:
        model = EXTRA_MODELS[name]()
    else:
        model = catalog.build(name)
    for i, (x, y) in enumerate(rows):
        if name in REGRESSORS:
            y = float(y)
        elif name == "hoeffding_nominal":
            x = {**x, "segment": "abc"[i % 3] if y else "d"}
        model.learn_one(x, y)
    return model


@pytest.fixture(scope="module")
def trained(rows: list[Row]) -> dict[str, Any]:
    return {name: _train(name, rows) for name in MODEL_NAMES}


# --- river models load -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_round_trips_and_predicts_the_same(name: str, trained: dict[str, Any], rows: list[Row]) -> None:
    model = trained[name]
    loaded = safe_loads(pickle.dumps(model, protocol=5))
    assert type(loaded) is type(model)
    for x, _ in rows[-20:]:
        if name == "hoeffding_nominal":
            x = {**x, "segment": "a"}
        assert loaded.predict_one(x) == model.predict_one(x)
        if name not in REGRESSORS:
            assert loaded.predict_proba_one(x) == model.predict_proba_one(x)


@pytest.mark.parametrize("name", ["hoeffding", "hoeffding_adaptive", "hoeffding_nominal"])
def test_trees_have_split_so_their_branch_nodes_are_covered(name: str, trained: dict[str, Any]) -> None:
    assert trained[name].n_branches > 0
    assert any(".tree.nodes." in g and "Branch" in g for g in referenced_globals(pickle.dumps(trained[name], 5)))


def test_numpy_arrays_and_scalars_load() -> None:
    value = {"a": np.arange(4.0), "b": np.float64(1.5), "c": np.array([1, "x"], dtype=object)}
    loaded = safe_loads(pickle.dumps(value, protocol=5))
    assert loaded["a"].tolist() == [0.0, 1.0, 2.0, 3.0] and loaded["b"] == 1.5 and loaded["c"].tolist() == [1, "x"]


def test_default_allowlist_has_no_code_running_builtins() -> None:
    dangerous = {"eval", "exec", "compile", "open", "getattr", "setattr", "delattr", "__import__", "type", "vars"}
    assert not {f"builtins:{n}" for n in dangerous} & set(DEFAULT_ALLOWED)
    assert not [entry for entry in DEFAULT_ALLOWED if entry.startswith("numpy") and "load" in entry]


# --- code-running payloads are refused --------------------------------------------------------------------------


def _np_load_gadget(tmp_path: Path) -> _Call:
    # numpy.load(file, None, allow_pickle=True) would unpickle the os.system gadget inside the .npy file.
    npy = tmp_path / "inner.npy"
    np.save(npy, np.array([_Call(os.system, f"touch {tmp_path / 'pwned'}")], dtype=object), allow_pickle=True)
    return _Call(np.load, str(npy), None, True)


def _river_iter_csv(tmp_path: Path) -> _Call:
    from river import stream

    return _Call(stream.iter_csv, str(tmp_path / "data.csv"))


GADGETS: dict[str, tuple[Callable[[Path], _Call], set[str]]] = {
    "os.system": (lambda p: _Call(os.system, f"touch {p / 'pwned'}"), {"posix.system", "os.system", "nt.system"}),
    "eval": (lambda p: _Call(builtins.eval, f"open({str(p / 'pwned')!r}, 'w')"), {"builtins.eval"}),
    "exec": (lambda p: _Call(builtins.exec, f"open({str(p / 'pwned')!r}, 'w')"), {"builtins.exec"}),
    "popen": (lambda p: _Call(subprocess.Popen, ["touch", str(p / "pwned")]), {"subprocess.Popen"}),
    "numpy.load": (_np_load_gadget, {"numpy.load"}),
    "river.stream": (_river_iter_csv, {"river.stream.iter_csv.iter_csv"}),
}


@pytest.mark.parametrize("gadget", GADGETS)
def test_code_running_global_is_refused_and_never_runs(gadget: str, tmp_path: Path) -> None:
    make, names = GADGETS[gadget]
    data = pickle.dumps(make(tmp_path), protocol=5)
    with pytest.raises(UnsafePayloadError) as info:
        safe_loads(data)
    assert info.value.global_name in names
    assert info.value.global_name in str(info.value)
    assert not (tmp_path / "pwned").exists()


def test_getattr_gadget_is_refused_before_anything_runs(tmp_path: Path) -> None:
    # getattr(__import__("os"), "system")("touch ..."), written by hand in protocol 0.
    data = (
        b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(S'os'\ntRS'system'\ntR(S'touch "
        + str(tmp_path / "pwned").encode()
        + b"'\ntR."
    )
    assert referenced_globals(data) == ["builtins.getattr", "builtins.__import__"]
    with pytest.raises(UnsafePayloadError) as info:
        safe_loads(data)
    # getattr resolves to the guarded one (for bound methods); __import__ is refused outright.
    assert info.value.global_name == "builtins.__import__"
    assert not (tmp_path / "pwned").exists()


def test_a_bound_method_of_a_river_object_loads() -> None:
    mean = stats.Mean()
    mean.update(4.0)
    loaded = safe_loads(pickle.dumps(_Call(getattr, mean, "update"), protocol=5))
    assert isinstance(loaded.__self__, stats.Mean) and loaded.__self__.get() == 4.0
    loaded(6.0)
    assert loaded.__self__.get() == 5.0


@pytest.mark.parametrize(
    ("target", "says"),
    [
        (lambda: _Call(getattr, stats.Mean(), "__init__"), "names no plain method"),
        (lambda: _Call(getattr, stats.Mean(), "__reduce_ex__"), "names no plain method"),
        (lambda: _Call(getattr, OrderedDict(), "pop"), "only methods of allowed-package objects"),
        (lambda: _Call(getattr, stats.Mean(), "n"), "is not a method of river bound to that object"),
        # A walk from a river method to its module's globals, one getattr at a time.
        (lambda: _Call(getattr, _Call(getattr, stats.Mean(), "update"), "__func__"), "names no plain method"),
        (lambda: _Call(getattr, _Call(getattr, stats.Mean(), "update"), "get"), "only methods of allowed-package"),
        (lambda: _Call(getattr, stats.Mean, "update"), "only methods of allowed-package objects"),
    ],
)
def test_the_guarded_getattr_refuses_all_but_a_bound_river_method(target: Callable[[], _Call], says: str) -> None:
    with pytest.raises(UnsafePayloadError, match=says) as info:
        safe_loads(pickle.dumps(target(), protocol=5))
    assert info.value.global_name == "builtins.getattr"


#: River pipelines a user's import-path factory typically returns: all of them must load as they are.
PIPELINES: dict[str, Callable[[], Any]] = {
    "select_scale_sgd": lambda: compose.Select("x0", "x1", "x3")
    | preprocessing.StandardScaler()
    | linear_model.LinearRegression(optimizer=optim.SGD(0.01), l2=0.1),
    "huber_adam": lambda: preprocessing.StandardScaler()
    | linear_model.LinearRegression(loss=optim.losses.Huber(), optimizer=optim.Adam()),
    "union_polynomial": lambda: (preprocessing.StandardScaler() + feature_extraction.PolynomialExtender())
    | linear_model.LinearRegression(),
    "target_scaler": lambda: preprocessing.TargetStandardScaler(  # holds its own bound methods
        regressor=preprocessing.StandardScaler() | linear_model.LinearRegression()
    ),
    "target_log": lambda: compose.TargetTransformRegressor(
        regressor=linear_model.LinearRegression(), func=math.log1p, inverse_func=math.expm1
    ),
    "knn": lambda: preprocessing.StandardScaler() | neighbors.KNNRegressor(),
    "bagging": lambda: ensemble.BaggingRegressor(
        preprocessing.StandardScaler() | linear_model.LinearRegression(), n_models=3, seed=1
    ),
    "hoeffding_adaptive_regressor": lambda: tree.HoeffdingAdaptiveTreeRegressor(seed=1),
    "amf_regressor": lambda: forest.AMFRegressor(n_estimators=3, seed=1),
}


def _friedman(n: int) -> list[Row]:
    from river import datasets

    return [({f"x{k}": float(v) for k, v in x.items()}, y) for x, y in datasets.synth.Friedman(seed=3).take(n)]


@pytest.mark.parametrize("name", PIPELINES)
def test_typical_river_pipeline_round_trips(name: str) -> None:
    model, rows = PIPELINES[name](), _friedman(800)
    for x, y in rows:
        model.learn_one(x, y)
    loaded = safe_loads(pickle.dumps(model, protocol=5))
    assert [loaded.predict_one(x) for x, _ in rows[-20:]] == [model.predict_one(x) for x, _ in rows[-20:]]


def test_a_pipeline_holding_a_stdlib_function_needs_an_entry() -> None:
    # feature_extraction.Agg keeps functools.partial(copy.deepcopy, how): documented as needing an entry.
    model = compose.Select("x0") + feature_extraction.Agg(on="x1", by="x2", how=stats.Mean())
    model = model | linear_model.LinearRegression()
    for x, y in _friedman(50):
        model.learn_one(x, y)
    data = pickle.dumps(model, protocol=5)
    with pytest.raises(UnsafePayloadError) as info:
        safe_loads(data)
    assert info.value.global_name == "copy.deepcopy"
    assert safe_loads(data, extra_allowed=["copy:deepcopy"]).predict_one({"x0": 0.1, "x1": 0.2, "x2": 0.3}) == (
        model.predict_one({"x0": 0.1, "x1": 0.2, "x2": 0.3})
    )


@pytest.mark.parametrize(("module", "name"), [("antigravity", "fly"), ("this", "s"), ("no_such_module_xyz", "f")])
def test_unlisted_module_is_never_imported(module: str, name: str, capsys: pytest.CaptureFixture[str]) -> None:
    if module in sys.modules:
        pytest.skip(f"{module} was already imported by something else")
    with pytest.raises(UnsafePayloadError) as info:
        safe_loads(_stack_global_call(module, name))
    assert info.value.global_name == f"{module}.{name}"
    assert module not in sys.modules
    assert capsys.readouterr().out == ""  # "this" prints the Zen of Python on import


@pytest.mark.parametrize(
    "module,name",
    [
        ("river.stats.mean", "Mean.__init__.__globals__"),  # dunder walk to a module's globals
        ("river.compose.pipeline", "Pipeline.__class__"),  # the metaclass, i.e. builtins.type
        ("river.tree.hoeffding_tree", "math.exp"),  # a foreign module re-exported by river
        ("river.utils.math", "dot"),  # a plain river function, not a class or method
        ("river.datasets.synth.agrawal", "Agrawal"),  # a class in a refused subpackage
        ("river.evaluate.progressive_validation", "progressive_val_score"),
    ],
)
def test_wildcard_reaches_only_river_classes_and_their_methods(module: str, name: str) -> None:
    with pytest.raises(UnsafePayloadError) as info:
        safe_loads(_stack_global_call(module, name))
    assert info.value.global_name == f"{module}.{name}"


def test_missing_module_under_an_allowed_package_is_a_load_error() -> None:
    with pytest.raises(EnvelopeError, match="payload does not load") as info:
        safe_loads(_stack_global_call("river.no_such_module", "Model"))
    assert not isinstance(info.value, UnsafePayloadError)


# --- extra_allowed ----------------------------------------------------------------------------------------------

MY_MODULE = MyModel.__module__
MY_PACKAGE = MY_MODULE.rsplit(".", 1)[0]


def test_user_class_is_refused_by_default() -> None:
    with pytest.raises(UnsafePayloadError) as info:
        safe_loads(pickle.dumps(MyModel(2.0), protocol=5))
    assert info.value.global_name == f"{MY_MODULE}.MyModel"


@pytest.mark.parametrize("entry", [f"{MY_MODULE}:MyModel", f"{MY_MODULE.split('.')[0]}.*", f"{MY_PACKAGE}.*"])
def test_extra_allowed_lets_a_user_class_through(entry: str) -> None:
    loaded = safe_loads(pickle.dumps(MyModel(2.0), protocol=5), extra_allowed=[entry])
    assert isinstance(loaded, MyModel) and loaded.weight == 2.0


def test_dotted_exact_entry_and_wildcard_method_resolve() -> None:
    data = pickle.dumps(_Call(MyModel.make, 3.0), protocol=5)
    assert referenced_globals(data) == [f"{MY_MODULE}.MyModel.make"]
    assert safe_loads(data, extra_allowed=[f"{MY_MODULE}:MyModel.make"]).weight == 3.0
    assert safe_loads(data, extra_allowed=[f"{MY_PACKAGE}.*"]).weight == 3.0


def test_wildcard_refuses_a_plain_function_an_exact_entry_allows() -> None:
    data = pickle.dumps(_Call(module_helper), protocol=5)
    with pytest.raises(UnsafePayloadError, match="function outside a class"):
        safe_loads(data, extra_allowed=[f"{MY_PACKAGE}.*"])
    assert safe_loads(data, extra_allowed=[f"{MY_MODULE}:module_helper"]) is None


def test_wildcard_refuses_what_a_user_module_imported() -> None:
    with pytest.raises(UnsafePayloadError, match="defined outside"):
        safe_loads(_stack_global_call(MY_MODULE, "os.system"), extra_allowed=[f"{MY_PACKAGE}.*"])


@pytest.mark.parametrize(
    "entry", ["mypkg.mod", "mypkg.mod:", ":Cls", "a:b:c", ".*", "mypkg.mod:Cls.*", "my pkg.*", "mypkg..mod:Cls"]
)
def test_malformed_entry_is_a_config_error(entry: str) -> None:
    with pytest.raises(ConfigError, match="allowlist entry"):
        safe_loads(pickle.dumps(1, protocol=5), extra_allowed=[entry])


# --- referenced_globals -----------------------------------------------------------------------------------------


def test_referenced_globals_of_a_logistic_pipeline(trained: dict[str, Any]) -> None:
    found = referenced_globals(pickle.dumps(trained["logistic"], protocol=5))
    assert "river.linear_model.log_reg.LogisticRegression" in found
    assert "river.preprocessing.scale.StandardScaler" in found
    assert len(found) == len(set(found))


def test_referenced_globals_follows_memoized_module_strings() -> None:
    data = pickle.dumps([OrderedDict(), Counter(), deque()], protocol=5)
    # The module string is written once and fetched from the memo for the later globals.
    assert sum(op.name == "BINGET" for op, _, _ in pickletools.genops(data)) >= 2
    assert referenced_globals(data) == ["collections.OrderedDict", "collections.Counter", "collections.deque"]


def test_referenced_globals_reads_old_protocols_without_importing() -> None:
    assert referenced_globals(b"(iantigravity\nFly\n(dp0\nb.") == ["antigravity.Fly"]  # INST, protocol 0
    assert referenced_globals(_stack_global_call("antigravity", "fly")) == ["antigravity.fly"]
    assert "antigravity" not in sys.modules


# --- corrupt data -----------------------------------------------------------------------------------------------

CORRUPT = {
    "truncated": pickle.dumps({"weights": [1.0, 2.0, 3.0], "name": "model"}, protocol=5)[:-7],
    "empty": b"",
    "garbage": b"not a pickle at all",
    "stack_underflow": b"\x80\x05R.",
}


@pytest.mark.parametrize("case", CORRUPT)
def test_corrupt_data_is_an_envelope_error(case: str) -> None:
    with pytest.raises(EnvelopeError, match="payload does not load") as info:
        safe_loads(CORRUPT[case])
    assert not isinstance(info.value, UnsafePayloadError)
    assert info.value.__cause__ is not None


@pytest.mark.parametrize("case", CORRUPT)
def test_referenced_globals_of_corrupt_data_is_an_envelope_error(case: str) -> None:
    with pytest.raises(EnvelopeError, match="payload does not parse"):
        referenced_globals(CORRUPT[case])
