"""Typed params: a method's params type (a dataclass or a TypedDict) as a JSON
Schema for the host, and the check and conversion of the params a call
brings into that type.

The host checks params against the schema before it calls, so a handler
normally never sees params that miss it; the conversion here checks again
(a plugin may be called by a host that had no schema yet) and builds the
dataclass, with nested dataclasses, lists and dicts converted on the way.
Supported annotations: str, int, float, bool, None, Any, list[T], dict[str, T],
Optional[T] / T | None, Literal[...], nested dataclasses and TypedDicts.
Fields are closed (an unknown field is an error, so a typo is caught at
validation) and a field with a default is optional.
"""
import dataclasses
import types
import typing
from typing import Any

_SIMPLE = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}


class ParamsError(Exception):
    """Params that do not fit their type; `field` says where (`params.top`)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def schema(tp: Any) -> dict:
    """The JSON Schema (draft 2020-12) of params of type `tp`."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **_schema(tp)}


def _fields(tp: Any) -> list[tuple[str, Any, bool, Any]]:
    """`(name, type, required, default)` of a dataclass or TypedDict."""
    hints = typing.get_type_hints(tp)
    if dataclasses.is_dataclass(tp):
        out = []
        for f in dataclasses.fields(tp):
            if f.default is not dataclasses.MISSING:
                out.append((f.name, hints[f.name], False, f.default))
            elif f.default_factory is not dataclasses.MISSING:
                out.append((f.name, hints[f.name], False, dataclasses.MISSING))
            else:
                out.append((f.name, hints[f.name], True, dataclasses.MISSING))
        return out
    required = getattr(tp, "__required_keys__", frozenset(hints))
    return [(name, hint, name in required, dataclasses.MISSING) for name, hint in hints.items()]


def _is_record(tp: Any) -> bool:
    return dataclasses.is_dataclass(tp) or typing.is_typeddict(tp)


def _schema(tp: Any) -> dict:
    if tp is Any:
        return {}
    if tp in _SIMPLE:
        return {"type": _SIMPLE[tp]}
    if _is_record(tp):
        properties, required = {}, []
        for name, hint, needed, default in _fields(tp):
            prop = _schema(hint)
            if default is not dataclasses.MISSING and _jsonable(default):
                prop["default"] = default
            properties[name] = prop
            if needed:
                required.append(name)
        out = {"type": "object", "properties": properties, "additionalProperties": False}
        if required:
            out["required"] = required
        if tp.__doc__ and not tp.__doc__.startswith(tp.__name__ + "("):
            out["description"] = tp.__doc__.strip()
        return out
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (list, typing.List):
        return {"type": "array", "items": _schema(args[0]) if args else {}}
    if origin in (dict, typing.Dict):
        return {"type": "object", "additionalProperties": _schema(args[1]) if len(args) == 2 else {}}
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [_schema(a) for a in args]}
    raise TypeError(f"params type {tp!r} has no JSON Schema; use str, int, float, bool, list, dict, "
                    "Optional, Literal, Any or a dataclass")


def _jsonable(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool, type(None)))


def convert(tp: Any, value: Any, field: str = "params") -> Any:
    """`value` (decoded JSON) as `tp`, or ParamsError naming the field."""
    if tp is Any:
        return value
    if tp in _SIMPLE:
        return _simple(tp, value, field)
    if _is_record(tp):
        return _record(tp, value, field)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (list, typing.List):
        if not isinstance(value, list):
            raise ParamsError(field, f"expected an array, got {_kind(value)}")
        item = args[0] if args else Any
        return [convert(item, v, f"{field}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, typing.Dict):
        if not isinstance(value, dict):
            raise ParamsError(field, f"expected an object, got {_kind(value)}")
        item = args[1] if len(args) == 2 else Any
        return {k: convert(item, v, f"{field}.{k}") for k, v in value.items()}
    if origin is typing.Literal:
        if value not in args:
            raise ParamsError(field, f"expected one of {list(args)}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return convert(option, value, field)
            except ParamsError:
                continue
        raise ParamsError(field, f"{_kind(value)} fits none of {[_name(a) for a in args]}")
    raise TypeError(f"params type {tp!r} is not supported")


def _simple(tp: type, value: Any, field: str) -> Any:
    # JSON has one number type: an integral float is an int, an int a float;
    # a bool is never a number.
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, tp) and not (tp is not bool and isinstance(value, bool)):
        return value
    raise ParamsError(field, f"expected {_SIMPLE[tp]}, got {_kind(value)}")


def _record(tp: Any, value: Any, field: str) -> Any:
    if not isinstance(value, dict):
        raise ParamsError(field, f"expected an object, got {_kind(value)}")
    fields = _fields(tp)
    known = {name for name, _, _, _ in fields}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ParamsError(field, f"unknown field '{unknown[0]}' (fields: {', '.join(sorted(known))})")
    out = {}
    for name, hint, needed, _ in fields:
        if name in value:
            out[name] = convert(hint, value[name], f"{field}.{name}")
        elif needed:
            raise ParamsError(field, f"missing field '{name}'")
    return tp(**out)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            type(None): "null", int: "an integer", float: "a number"}.get(type(value), type(value).__name__)


def _name(tp: Any) -> str:
    return getattr(tp, "__name__", repr(tp))
