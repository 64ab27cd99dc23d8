"""A restricted unpickler for river models.

A pickle is a small program: it can name any importable callable
(``os.system``, ``builtins.eval``, ``subprocess.Popen``, ``numpy.load``...)
and call it with arguments of its choosing. A signed envelope proves who
published a model, not that the model is harmless, so models are loaded with
:func:`safe_loads`, whose unpickler resolves only globals on an allowlist and
refuses anything else *before* importing its module or calling it.

Allowlist entries come in two forms:

``"module:name"``
    Exactly that global; ``name`` may be dotted, e.g.
    ``"river.naive_bayes.gaussian:GaussianNB._make_gaussian"``.
``"package.*"``
    Any global in ``package`` or its submodules, under the *kind rule*: the
    resolved object must be a class defined in ``package``, or a function or
    method whose qualified name starts with such a class (``Cls.method``).
    Dunder names (``__class__``, ``__globals__``...) are never reached this way.

Some river subpackages read files or the network (:data:`REFUSED_PACKAGES`);
their globals are refused whatever the allowlist says. Use
:func:`referenced_globals` to see what a payload needs without loading it.

Bound methods: a model holding one (``TargetStandardScaler`` keeps its own
``_scale``) pickles it as ``builtins.getattr(obj, "name")``. ``getattr`` is
never on the allowlist (with it a payload walks from any object to
``__globals__`` and ``eval``); in its place the unpickler gets a guarded one
that returns only a method bound to an object of a ``package.*`` class, the
method defined in that package, its name not a dunder. Anything else is
refused as ``builtins.getattr``.

What a model may contain, catalog or import-path spec
(``STREAMML_MODEL_SPEC=package.module:factory``) alike: river estimators,
pipelines, unions and wrappers with their river parameters (optimizers,
losses, schedulers, drift detectors, statistics, other river models), plain
data, numpy arrays, bound methods of those river objects, and the few
pure functions listed below (``math.log1p``/``math.expm1`` and
``math.log``/``math.exp`` for ``compose.TargetTransformRegressor``, river's
euclidean distance for the nearest-neighbour models). Not loadable without an
``extra_allowed`` entry (``STREAMML_MODEL_PICKLE_ALLOW`` on the consumers):
the user's own classes and functions (a lambda never pickles at all), other
stdlib functions, and river helpers that hold one (``feature_extraction.Agg``
keeps ``copy.deepcopy``). ``tests/unit/test_safe_pickle.py`` loads a table of
typical river pipelines and names the ones that need an entry.
"""

from __future__ import annotations

import copyreg
import importlib
import io
import pickle
import pickletools
import sys
import types
from collections.abc import Sequence
from typing import Any, cast

from streamml.errors import ConfigError, EnvelopeError

__all__ = ["DEFAULT_ALLOWED", "REFUSED_PACKAGES", "UnsafePayloadError", "referenced_globals", "safe_loads"]

#: Enough for the catalog's models and typical river pipelines (checked by the tests).
DEFAULT_ALLOWED: tuple[str, ...] = (
    # Plain data types only (models use float and int): never eval, exec, getattr, open, __import__, type...
    "builtins:bool",
    "builtins:bytearray",
    "builtins:bytes",
    "builtins:complex",
    "builtins:dict",
    "builtins:float",
    "builtins:frozenset",
    "builtins:int",
    "builtins:list",
    "builtins:range",
    "builtins:set",
    "builtins:slice",
    "builtins:str",
    "builtins:tuple",
    "collections:Counter",
    "collections:OrderedDict",
    "collections:defaultdict",
    "collections:deque",
    "functools:partial",
    "random:Random",
    # numpy arrays (protocol 5 writes _frombuffer), scalars and dtypes, numpy 1.x and 2.x paths.
    # No catalog model holds any today; a numpy value in a feature row would bring them in.
    "numpy:dtype",
    "numpy:ndarray",
    "numpy.core.multiarray:_reconstruct",
    "numpy.core.multiarray:scalar",
    "numpy.core.numeric:_frombuffer",
    "numpy._core.multiarray:_reconstruct",
    "numpy._core.multiarray:scalar",
    "numpy._core.numeric:_frombuffer",
    # Pure functions of one number, held by river models: TargetTransformRegressor(func=, inverse_func=),
    # HoeffdingAdaptiveTreeRegressor (NormalDist, a mean and a deviation), the KNN models' default distance.
    "math:exp",
    "math:expm1",
    "math:log",
    "math:log1p",
    "statistics:NormalDist",
    "river._river_rust.vectordict:euclidean_distance_tuple",
    "river.*",
)

#: Packages whose globals are always refused: they touch files or the network.
REFUSED_PACKAGES: tuple[str, ...] = ("river.api", "river.checks", "river.datasets", "river.evaluate", "river.stream")


class UnsafePayloadError(EnvelopeError):
    """A payload refers to a global the allowlist refuses; ``global_name`` is ``module.name``."""

    def __init__(self, global_name: str, reason: str = "it is not on the allowlist") -> None:
        super().__init__(f"payload refers to {global_name}, refused because {reason}")
        self.global_name = global_name


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _dotted(text: str) -> bool:
    return all(part.isidentifier() for part in text.split("."))


class _Allowlist:
    def __init__(self, entries: Sequence[str]) -> None:
        self.exact: set[tuple[str, str]] = set()
        self.packages: list[str] = []
        for entry in entries:
            if entry.endswith(".*") and _dotted(entry[:-2]):
                self.packages.append(entry[:-2])
            elif entry.count(":") == 1 and all(_dotted(part) for part in entry.split(":")):
                module, name = entry.split(":")
                self.exact.add((module, name))
            else:
                raise ConfigError(f"safe_pickle: bad allowlist entry {entry!r}; use 'module:name' or 'package.*'")

    def resolve(self, module: str, name: str) -> Any:
        """Return the global ``module.name`` if allowed; raise :class:`UnsafePayloadError` otherwise."""
        global_name = f"{module}.{name}"
        if (module, name) == ("builtins", "getattr") and (module, name) not in self.exact:
            return self.bound_method
        if any(_within(module, refused) for refused in REFUSED_PACKAGES):
            raise UnsafePayloadError(global_name, f"{module} reads files or the network")
        exact = (module, name) in self.exact
        package = next((p for p in self.packages if _within(module, p)), None)
        parts = name.split(".")
        if package is not None and not exact and any(p.startswith("__") and p.endswith("__") for p in parts):
            raise UnsafePayloadError(global_name, "dunder names are not reached through a wildcard")
        if not exact and package is None:
            raise UnsafePayloadError(global_name)
        # Allowed by name: only now may the module be imported.
        obj: Any = importlib.import_module(module)
        for part in parts:
            obj = getattr(obj, part)
        reason = None if exact or package is None else _kind_refusal(obj, package)
        if reason:
            raise UnsafePayloadError(global_name, reason)
        return obj


    def bound_method(self, obj: Any, name: Any) -> Any:
        """The guarded ``getattr`` of a payload: ``obj.name`` only if it is a method bound to a ``package.*`` object."""
        cls = type(obj)
        what = f"getattr({cls.__module__}.{cls.__qualname__} object, {name!r})"
        if not (isinstance(name, str) and name.isidentifier()) or (name.startswith("__") and name.endswith("__")):
            raise UnsafePayloadError("builtins.getattr", f"{what} names no plain method")
        package = next((p for p in self.packages if _within(cls.__module__, p)), None)
        if package is None or any(_within(cls.__module__, refused) for refused in REFUSED_PACKAGES):
            raise UnsafePayloadError("builtins.getattr", f"{what}: only methods of allowed-package objects are reached")
        method = getattr(obj, name)
        defined_in = getattr(getattr(method, "__func__", None), "__module__", None)
        bound = isinstance(method, types.MethodType) and method.__self__ is obj
        if not bound or not isinstance(defined_in, str) or not _within(defined_in, package):
            raise UnsafePayloadError("builtins.getattr", f"{what} is not a method of {package} bound to that object")
        return method


def _kind_refusal(obj: Any, package: str) -> str | None:
    """Why ``obj`` breaks the kind rule for a ``package.*`` entry, or ``None`` if it keeps it."""
    defined_in = getattr(obj, "__module__", None)
    if not isinstance(defined_in, str) or not _within(defined_in, package):
        return f"it is defined outside {package}"
    if any(_within(defined_in, refused) for refused in REFUSED_PACKAGES):
        return f"it is defined in {defined_in}, which reads files or the network"
    if isinstance(obj, type):
        return None
    if isinstance(obj, (types.FunctionType, types.MethodType, types.BuiltinFunctionType)):
        owner = getattr(sys.modules.get(defined_in), obj.__qualname__.split(".")[0], None)
        if isinstance(owner, type) and _within(owner.__module__, package):
            return None
        return f"it is a function outside a class of {package}"
    return "it is neither a class nor a method"


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, allowlist: _Allowlist) -> None:
        super().__init__(io.BytesIO(data))
        self._allowlist = allowlist

    def find_class(self, module: str, name: str) -> Any:
        return self._allowlist.resolve(module, name)


def safe_loads(data: bytes, *, extra_allowed: Sequence[str] = ()) -> Any:
    """Unpickle ``data``, resolving only globals on :data:`DEFAULT_ALLOWED` plus ``extra_allowed``.

    Raises :class:`UnsafePayloadError` for a refused global and
    :class:`EnvelopeError` for any other failure (truncated or corrupt data).

    >>> safe_loads(pickle.dumps({"a": [1.5, (2, 3)]}, protocol=5))
    {'a': [1.5, (2, 3)]}
    """
    allowlist = _Allowlist((*DEFAULT_ALLOWED, *extra_allowed))
    try:
        return _RestrictedUnpickler(data, allowlist).load()
    except UnsafePayloadError:
        raise
    except Exception as exc:
        raise EnvelopeError(f"payload does not load: {type(exc).__name__}: {exc}") from exc


_MARK = object()
_STRING_OPS = frozenset(
    {"UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "STRING", "BINSTRING", "SHORT_BINSTRING"}
)
_PUT_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_GET_OPS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_EXT_OPS = frozenset({"EXT1", "EXT2", "EXT4"})


def referenced_globals(data: bytes) -> list[str]:
    """List ``module.name`` of every global ``data`` refers to, in first-use order, without loading it.

    The opcodes are parsed, not run: a simulated stack and memo track the
    strings that protocol 4+ ``STACK_GLOBAL`` takes, memoized or not.

    >>> referenced_globals(pickle.dumps(pickle.PickleError, protocol=5))
    ['_pickle.PickleError']
    """
    found: dict[str, None] = {}
    stack: list[Any] = []
    memo: dict[int, Any] = {}
    try:
        for opcode, op_arg, _ in pickletools.genops(data):
            name, arg = opcode.name, cast(Any, op_arg)
            before = list(opcode.stack_before)
            if name in ("GLOBAL", "INST"):
                found[arg.replace(" ", ".", 1)] = None
            elif name in _EXT_OPS:
                module, attr = copyreg._inverted_registry[arg]  # type: ignore[attr-defined]
                found[f"{module}.{attr}"] = None
            if name in _PUT_OPS:
                memo[arg] = stack[-1]
                continue
            if name == "MEMOIZE":
                memo[len(memo)] = stack[-1]
                continue
            if name in _GET_OPS:
                stack.append(memo[arg])
                continue
            if name == "DUP":
                stack.append(stack[-1])
                continue
            if name == "STACK_GLOBAL":
                module, attr = stack.pop(-2), stack.pop()
                if not (isinstance(module, str) and isinstance(attr, str)):
                    raise ValueError("STACK_GLOBAL needs two strings")
                found[f"{module}.{attr}"] = None
                stack.append(None)
                continue
            if pickletools.markobject in before:
                mark = len(stack) - 1 - stack[::-1].index(_MARK)
                del stack[mark:]
                before = before[: before.index(pickletools.markobject)]
            if before:
                if len(stack) < len(before):
                    raise ValueError(f"stack underflow at {name}")
                del stack[len(stack) - len(before) :]
            for item in opcode.stack_after:
                stack.append(_MARK if item is pickletools.markobject else (arg if name in _STRING_OPS else None))
    except (ValueError, KeyError, IndexError) as exc:
        raise EnvelopeError(f"payload does not parse: {type(exc).__name__}: {exc}") from exc
    return list(found)
