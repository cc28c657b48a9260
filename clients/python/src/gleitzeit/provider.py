"""`Provider`: a remote provider of one protocol, in Python, over the
host's Socket.IO (docs/protocol.md). Subclass it and mark methods with
`@method`, whose typed parameters become the params' JSON Schema the host
checks; or override `execute_method(method, params)` as the original's
`ProtocolProvider` did.

It connects with a token, registers, registers again after every
reconnect (the host forgets a provider that left), runs at most
`max_concurrent` calls at once, sends progress (`self.progress(chunk)`),
and on SIGTERM or SIGINT drains: it takes no new call, lets those running
finish (within `grace` seconds), and disconnects; calls it did not start
go back to the host's queue without using an attempt."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import signal
import types
import typing
from typing import Any, Callable, Dict, List, Optional, TypeVar, Union

import socketio  # type: ignore[import-untyped]

from . import _defaults

F = TypeVar("F", bound=Callable[..., Any])

_log = logging.getLogger("gleitzeit.provider")

#: The first and the longest pause between attempts to connect.
CONNECT_PAUSE = 0.5
MAX_CONNECT_PAUSE = 5.0

#: The call a method runs for, so that `progress` knows where it goes.
_CALL: contextvars.ContextVar[str] = contextvars.ContextVar("gleitzeit_call")

#: JSON Schema types of the annotations a method's parameters may have.
_JSON_TYPES: Dict[Any, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    list: "array",
    dict: "object",
}


class ProviderError(Exception):
    """Raise it from a method to fail the call with this `code` (JSON-RPC)
    and message; `retryable` lets the task's retry policy try again."""

    def __init__(self, message: str, code: int = -32000, *, retryable: bool = False, data: Any = None):
        super().__init__(message)
        self.code = code
        self.retryable = retryable
        self.data = data

    def as_error(self) -> Dict[str, Any]:
        error: Dict[str, Any] = {"code": self.code, "message": str(self), "retryable": self.retryable}
        if self.data is not None:
            error["data"] = self.data
        return error


def method(name: Optional[str] = None, *, description: str = "") -> Callable[[F], F]:
    """Mark a method of a `Provider` as one it serves (under its own name,
    or `name`). Its parameters after `self` are the call's params, by name;
    their annotations (`str`, `int`, `float`, `bool`, `list`, `dict`,
    `Optional[...]`) give the schema, parameters without a default are
    required, and other params are refused."""

    def mark(function: F) -> F:
        setattr(function, "_gleitzeit_method", (name or function.__name__, description))
        return function

    return mark


class Provider:
    """A provider of `protocol` (`name/version`). Set the class attributes
    or pass them; then `Provider.serve()` (blocking) or `await run()`."""

    protocol: str = ""
    provider_id: str = ""
    max_concurrent: int = 8
    description: str = ""

    def __init__(
        self,
        url: Optional[str] = None,
        token: Optional[str] = None,
        *,
        protocol: Optional[str] = None,
        provider_id: Optional[str] = None,
        max_concurrent: Optional[int] = None,
        grace: float = 30.0,
        data_dir: Optional[str] = None,
    ) -> None:
        self.url = _defaults.server(url)
        self._token = _defaults.token(token, data_dir)
        self.protocol = protocol or self.protocol
        if not self.protocol:
            raise ValueError("a provider needs its protocol ('name/version')")
        self.provider_id = provider_id or self.provider_id or f"{self.protocol.split('/')[0]}-python"
        self.max_concurrent = max_concurrent or self.max_concurrent
        self.grace = grace
        self._methods = _marked_methods(self)
        self._running = 0
        # Made in `run`, on its loop.
        self._slots: Optional[asyncio.Semaphore] = None
        self._idle: Optional[asyncio.Event] = None
        self._stopping: Optional[asyncio.Event] = None
        self._sio = socketio.AsyncClient(reconnection=True)
        self._sio.on("connect", self._register)
        self._sio.on("execute_method", self._execute)

    # What a subclass may override or use

    def methods(self) -> List[str]:
        """The methods it serves (by default those marked `@method`)."""
        return list(self._methods)

    def params_schemas(self) -> Dict[str, Dict[str, Any]]:
        """The JSON Schema of each method's params the host checks."""
        return {name: _schema_of(handler) for name, handler in self._methods.items()}

    async def execute_method(self, method: str, params: Dict[str, Any]) -> Any:
        """Run one call; its result (any JSON). By default the `@method`
        of that name, with the params as its arguments."""
        handler = self._methods.get(method)
        if handler is None:
            raise ProviderError(f"no method '{method}'", -32601)
        try:
            bound = inspect.signature(handler).bind(**params)
        except TypeError as e:
            raise ProviderError(f"invalid params for '{method}': {e}", -32602) from None
        result = handler(*bound.args, **bound.kwargs)
        return await result if inspect.isawaitable(result) else result

    async def progress(self, chunk: Any) -> None:
        """Send partial output of the call being run (to the workflow's
        subscribers, as `task_progress`)."""
        await self._sio.emit("task_progress", {"id": _CALL.get(), "chunk": chunk})

    # Running

    def serve(self) -> None:
        """Connect and serve until SIGTERM or SIGINT, then drain."""
        asyncio.run(self.run())

    async def run(self) -> None:
        """Connect (trying again until the host answers) and serve until
        `stop()`, SIGTERM or SIGINT; then drain."""
        self._slots = asyncio.Semaphore(self.max_concurrent)
        self._idle, self._stopping = asyncio.Event(), asyncio.Event()
        self._idle.set()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        await self._connect()
        await self._stopping.wait()
        try:
            await asyncio.wait_for(self._idle.wait(), self.grace)
        except asyncio.TimeoutError:
            pass
        await self._sio.disconnect()

    async def _connect(self) -> None:
        """Connect, trying again while the host does not answer (it may
        start after its providers); once connected, python-socketio
        reconnects by itself."""
        assert self._stopping is not None
        pause = CONNECT_PAUSE
        while not self._stopping.is_set():
            try:
                await self._sio.connect(self.url, auth={"token": self._token}, transports=["websocket"])
                return
            except socketio.exceptions.ConnectionError as e:
                _log.warning("cannot connect to %s (%s); trying again in %.1f s", self.url, e, pause)
                try:
                    await asyncio.wait_for(self._stopping.wait(), pause)
                except asyncio.TimeoutError:
                    pause = min(pause * 2, MAX_CONNECT_PAUSE)

    def stop(self) -> None:
        """Drain and disconnect (what SIGTERM does)."""
        if self._stopping is not None:
            self._stopping.set()

    async def _register(self) -> None:
        registration = {
            "provider_id": self.provider_id,
            "protocol_id": self.protocol,
            "supported_methods": self.methods(),
            "params_schemas": self.params_schemas(),
            "max_concurrent": self.max_concurrent,
            "description": self.description,
        }
        reply = await self._sio.call("register_provider", registration)
        if isinstance(reply, dict) and "error" in reply:
            self.stop()
            raise ProviderError(f"registration refused: {reply['error'].get('message')}")

    async def _execute(self, call: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        assert self._slots is not None and self._idle is not None and self._stopping is not None
        if self._stopping.is_set():
            # Not started: the host gives it to another provider once this
            # one disconnects, without using an attempt.
            await asyncio.Event().wait()
        async with self._slots:
            self._running += 1
            self._idle.clear()
            token = _CALL.set(str(call.get("id")))
            try:
                return {"result": await self.execute_method(str(call.get("method")), call.get("params") or {})}
            except ProviderError as e:
                return {"error": e.as_error()}
            except Exception as e:  # a provider's bug fails the call, not the provider
                return {"error": {"code": -32603, "message": f"{type(e).__name__}: {e}"}}
            finally:
                _CALL.reset(token)
                self._running -= 1
                if self._running == 0:
                    self._idle.set()


def _marked_methods(provider: Provider) -> Dict[str, Callable[..., Any]]:
    found: Dict[str, Callable[..., Any]] = {}
    for attribute in dir(type(provider)):
        function = getattr(type(provider), attribute, None)
        marked = getattr(function, "_gleitzeit_method", None)
        if marked is not None:
            found[marked[0]] = getattr(provider, attribute)
    return found


def _schema_of(handler: Callable[..., Any]) -> Dict[str, Any]:
    """The JSON Schema of a method's params, from its signature."""
    hints = typing.get_type_hints(handler)
    properties: Dict[str, Any] = {}
    required: List[str] = []
    for name, parameter in inspect.signature(handler).parameters.items():
        properties[name] = _schema_of_type(hints.get(name, Any))
        if parameter.default is inspect.Parameter.empty:
            required.append(name)
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


#: `Optional[X]` and `X | None`.
_UNIONS = (Union, getattr(types, "UnionType", Union))


def _schema_of_type(annotation: Any) -> Dict[str, Any]:
    origin = typing.get_origin(annotation) or annotation
    if origin in _UNIONS:
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        schema = _schema_of_type(options[0]) if len(options) == 1 else {}
        if "type" in schema:
            schema["type"] = [schema["type"], "null"]
        return schema
    json_type = _JSON_TYPES.get(origin)
    return {"type": json_type} if json_type else {}
