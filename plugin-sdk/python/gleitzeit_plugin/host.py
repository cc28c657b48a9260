"""What the host offers, as plain functions: `log`, `config`, `http_fetch`
(only to the hosts the plugin's manifest grants; a refusal or failure is a
`FetchError`) and `progress`.

They call the WIT imports, which exist only inside a component; outside one
(a unit test under CPython) they raise RuntimeError.
"""
import dataclasses
import json
from typing import Any, Optional

LEVELS = ("trace", "debug", "info", "warn", "error")


def _host():
    try:
        from wit_world.imports import host
    except ImportError:
        raise RuntimeError("the host's functions exist only inside a component built with gleitzeit-plugin") from None
    return host


class FetchError(RuntimeError):
    """A request the host refused or that failed. `kind` says which:
    "denied" (the host is not granted: the operator's to change),
    "invalid-request", "too-large", "failed" (a retry may help) or
    "limited"; the message says what happened."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


# The WIT's `fetch-error` cases, by the name of their generated class.
_KINDS = {"Denied": "denied", "InvalidRequest": "invalid-request", "TooLarge": "too-large",
          "Failed": "failed", "Limited": "limited"}


@dataclasses.dataclass
class Response:
    """An HTTP answer: status, headers (name, value) and the body's bytes."""
    status: int
    headers: list
    body: bytes

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)


def log(level: str, message: str) -> None:
    """Log through the host, tagged with this plugin's name; `level` is one
    of trace, debug, info, warn, error."""
    host = _host()
    host.log(host.LogLevel(LEVELS.index(level)), message)


def config(key: str) -> Optional[str]:
    """A value from this plugin's `[config]`, if set."""
    return _host().config(key)


def http_fetch(url: str, *, method: str = "GET", headers: Optional[dict] = None, body: Any = None,
               timeout_ms: Optional[int] = None) -> Response:
    """An HTTP request through the host. `body` may be bytes, text, or any
    other value (sent as JSON). Raises FetchError (a RuntimeError) with the
    host's reason and its kind when the request is refused (a host not
    granted) or fails."""
    from componentize_py_types import Err

    host = _host()
    headers = dict(headers or {})
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
        headers.setdefault("content-type", "application/json")
    if isinstance(body, str):
        body = body.encode()
    request = host.HttpRequest(method, url, list(headers.items()), body, timeout_ms)
    try:
        answer = host.fetch(request)
    except Err as e:
        kind = _KINDS.get(type(e.value).__name__.rpartition("_")[2], "failed")
        raise FetchError(kind, f"{method} {url}: {e.value.value}") from None
    return Response(answer.status, answer.headers, answer.body)


def progress(chunk: Any) -> None:
    """Send partial output (any JSON value) to the task's subscribers."""
    _host().progress(json.dumps(chunk))
