"""Write a Gleitzeit provider in Python.

A provider is a WebAssembly component that serves one protocol. Declare it
with a `Provider`, register each method with the `method` decorator (its
params are the type annotation of the handler's first argument: a dataclass
or a TypedDict), and export it as `WitWorld`, the name componentize-py
looks for::

    from dataclasses import dataclass
    from gleitzeit_plugin import Provider

    provider = Provider("hello/v1", version="0.1.0")

    @dataclass
    class Greet:
        name: str

    @provider.method("Say hello")
    def greet(params: Greet) -> dict:
        return {"greeting": f"Hello, {params.name}!"}

    WitWorld = provider.world()

Build it with `gleitzeit-plugin build app.py` (see `build.py`). The params
type becomes the method's JSON Schema, which the host checks before it
calls; params that still do not fit raise `-32602`. A `PluginError` becomes
the task's JSON-RPC error (`retryable=True` lets the task's retry policy try
again); any other exception is `-32603` and not retried. The host's imports
are plain functions in `gleitzeit_plugin.host`.
"""
import dataclasses
import inspect
import json
import typing
from typing import Any, Callable

from . import params as _params
from .params import ParamsError

__all__ = ["Context", "PluginError", "Provider", "ParamsError", "INVALID_PARAMS", "METHOD_NOT_FOUND",
           "INTERNAL_ERROR", "SERVER_ERROR"]

INVALID_PARAMS = -32602
METHOD_NOT_FOUND = -32601
INTERNAL_ERROR = -32603
SERVER_ERROR = -32000


class PluginError(Exception):
    """A JSON-RPC error for the task: `code` (-32000..-32099 for your own),
    a message, optional JSON `data`, and whether a retry may help."""

    def __init__(self, message: str, code: int = SERVER_ERROR, *, retryable: bool = False, data: Any = None):
        super().__init__(message)
        self.message, self.code, self.retryable, self.data = message, code, retryable, data

    @classmethod
    def transient(cls, message: str) -> "PluginError":
        """A failure a retry may fix (a busy or unreachable service)."""
        return cls(message, SERVER_ERROR, retryable=True)

    @classmethod
    def invalid_params(cls, message: str) -> "PluginError":
        return cls(message, INVALID_PARAMS)


@dataclasses.dataclass(frozen=True)
class Context:
    """Which task a call runs for; `attempt` starts at 1."""
    method: str
    task_id: str
    workflow_id: typing.Optional[str]
    attempt: int


@dataclasses.dataclass
class _Method:
    name: str
    description: str
    params: Any
    handler: Callable[..., Any]
    wants_context: bool


class Provider:
    """A provider: its protocol (`name/version`), identity and methods."""

    def __init__(self, protocol: str, *, name: str | None = None, version: str = "0.1.0", description: str = ""):
        self.protocol = protocol
        self.name = name or protocol.split("/")[0]
        self.version = version
        self.description = description
        self._methods: dict[str, _Method] = {}

    def method(self, description: str = "", *, name: str | None = None):
        """Register the decorated function as a method (named after it unless
        `name` is given). Its first argument's annotation is the params type;
        a second argument, if any, gets the `Context`."""

        def register(handler: Callable[..., Any]) -> Callable[..., Any]:
            arguments = list(inspect.signature(handler).parameters.values())
            if not arguments:
                raise TypeError(f"method {handler.__name__}: take the params as the first argument")
            hints = typing.get_type_hints(handler)
            params = hints.get(arguments[0].name, Any)
            _params.schema(params)  # an unsupported type fails at build time, not per call
            method = _Method(name or handler.__name__, description, params, handler, len(arguments) > 1)
            self._methods[method.name] = method
            return handler

        return register

    def describe(self) -> dict:
        """What `describe` returns, as plain data."""
        return {
            "protocol": self.protocol, "name": self.name, "version": self.version, "description": self.description,
            "methods": [{"name": m.name, "description": m.description, "params_schema": _params.schema(m.params)}
                        for m in self._methods.values()],
        }

    def call(self, context: Context, params_json: str) -> Any:
        """Run one method; raises PluginError for the task's error."""
        method = self._methods.get(context.method)
        if method is None:
            raise PluginError(f"method not found: '{context.method}'", METHOD_NOT_FOUND)
        try:
            raw = json.loads(params_json)
            params = _params.convert(method.params, raw)
        except (ValueError, ParamsError) as e:
            raise PluginError(f"method '{method.name}': invalid params: {e}", INVALID_PARAMS) from None
        return method.handler(params, context) if method.wants_context else method.handler(params)

    def world(self) -> type | None:
        """The class componentize-py exports (assign it to `WitWorld`); None
        under plain CPython (a unit test), where the WIT bindings do not exist."""
        try:
            from ._world import world_of
        except ImportError:
            return None
        return world_of(self)
