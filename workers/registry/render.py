"""A River pipeline built in Python, written back as spec text that rebuilds it.

`render_pipeline` is the inverse of `spec.build_estimator`: `|` for pipelines, calls of the
classes the grammar knows with the parameters that differ from the class's defaults, feature
functions as `"module:function"`. Anything the grammar cannot say (a class it does not admit, a
lambda, a function of a notebook) is a `SpecError` naming it, so what is released can always be
rebuilt from its record.
"""

from __future__ import annotations

import inspect
from typing import Any

from riverrun.workers.registry.spec import SpecError, qualified_name, short_names


def render_pipeline(estimator: Any) -> str:
    """The spec text of a River estimator or pipeline.

    Raises:
        SpecError: a part of it is outside the spec grammar; the message names the part.

    """
    from river import compose

    if isinstance(estimator, compose.Pipeline):
        steps = list(estimator.steps.values())
        return " | ".join(f"({render_pipeline(s)})" if isinstance(s, compose.Pipeline)
                          else render_pipeline(s) for s in steps)  # fmt: skip
    return _render_object(estimator)


def _render_object(obj: Any) -> str:
    from river import base, compose, optim

    cls = type(obj)
    qualified = qualified_name(cls)
    if qualified is None:
        raise SpecError(f"{cls.__module__}.{cls.__qualname__} is not a class the spec grammar "
                        "admits (`riverrun.workers.registry.spec.allowed_classes()` lists them)")
    # The plain name where it is unambiguous, as people write it.
    short = qualified.rpartition(".")[2]
    name = short if short_names().get(short) == qualified else qualified
    if isinstance(obj, compose.TransformerUnion | compose.TransformerProduct):
        parts = ", ".join(render_pipeline(t) for t in obj.transformers.values())
        return f"{name}({parts})"
    if isinstance(obj, compose.Select | compose.Discard):
        return f"{name}({', '.join(repr(k) for k in sorted(obj.keys, key=str))})"
    if isinstance(obj, compose.FuncTransformer):
        return f"{name}({_function_reference(obj.func)!r})"
    if isinstance(obj, optim.schedulers.Constant):
        return f"{name}({obj.learning_rate!r})"
    if not isinstance(obj, base.Base):
        raise SpecError(f"{name} is not a River object")
    default_instance = _default_instance(cls)
    arguments = []
    for parameter in inspect.signature(cls.__init__).parameters.values():
        if parameter.name == "self" or parameter.kind in (parameter.VAR_POSITIONAL,
                                                          parameter.VAR_KEYWORD):
            continue
        if not hasattr(obj, parameter.name):
            raise SpecError(f"{name} keeps no attribute {parameter.name!r}: its parameters "
                            "cannot be written as a spec")
        value = getattr(obj, parameter.name)
        if default_instance is not None:
            if _same(value, getattr(default_instance, parameter.name, _MISSING)):
                continue
        elif parameter.default is not parameter.empty and _same(value, parameter.default):
            continue
        arguments.append(f"{parameter.name}={_render_value(value, f'{name}.{parameter.name}')}")
    return f"{name}({', '.join(arguments)})"


_MISSING = object()


def _default_instance(cls: type) -> Any:
    """The class built with no arguments, to tell which parameters differ; None if it needs some."""
    try:
        return cls()
    except TypeError:
        return None


def _same(value: Any, default: Any) -> bool:
    """Whether a parameter's value is its default: River objects compare by class and params."""
    from river import base

    if isinstance(value, base.Base) or isinstance(default, base.Base):
        return (type(value) is type(default)
                and value._get_params() == default._get_params())  # fmt: skip
    try:
        return type(value) is type(default) and bool(value == default)
    except Exception:  # noqa: BLE001  # an odd __eq__ only means "not the default"
        return False


def _render_value(value: Any, where: str) -> str:
    from river import base

    if value is None or isinstance(value, bool | int | float | str):
        return repr(value)
    if isinstance(value, list | tuple):
        items = ", ".join(_render_value(v, where) for v in value)
        if isinstance(value, list):
            return f"[{items}]"
        return f"({items}{',' if len(value) == 1 else ''})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_render_value(k, where)}: {_render_value(v, where)}"
                               for k, v in value.items()) + "}"  # fmt: skip
    if isinstance(value, base.Base):
        return render_pipeline(value)
    if callable(value):
        return repr(_function_reference(value))
    raise SpecError(f"{where} is a {type(value).__name__}, which a spec cannot write")


def _function_reference(function: Any) -> str:
    """`module:function` of a plain module-level function."""
    module = getattr(function, "__module__", None)
    qualname = getattr(function, "__qualname__", "")
    if not inspect.isfunction(function) or not module or "." in qualname or "<" in qualname:
        raise SpecError(f"{function!r} is not a plain function of a module: a feature "
                        "function must be defined at the top of an importable module")
    if module == "__main__":
        raise SpecError(f"feature function {qualname} is defined in a notebook or script "
                        "(__main__): move it into a module installed where the workers run, "
                        "and allow that module (RIVERRUN_REGISTRY__FEATURE_MODULES)")
    return f"{module}:{qualname}"
