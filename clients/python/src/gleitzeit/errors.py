"""The host's errors as exceptions: one class per kind of failure, each
carrying the JSON-RPC code and message the host answered with (the same
codes over HTTP and Socket.IO; docs/http.md, "Errors")."""

from __future__ import annotations

from typing import Any, Dict, List, Optional


class GleitzeitError(Exception):
    """An error the host answered with, or one reaching it."""

    def __init__(self, message: str, code: Optional[int] = None, status: Optional[int] = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


class Unreachable(GleitzeitError):
    """No host answers at the client's URL."""


class Unauthorized(GleitzeitError):
    """No token, or one the host does not know (-32014)."""


class Forbidden(GleitzeitError):
    """The token's role may not do this (-32015)."""


class NotFound(GleitzeitError):
    """No such workflow, task, schedule or route (-32011, -32601)."""


class InvalidWorkflow(GleitzeitError):
    """The workflow (or a query) is not valid (-32602); `problems` say
    where: each `{task, field, message}`."""

    def __init__(self, message: str, code: Optional[int], status: Optional[int], problems: List[Dict[str, Any]]):
        super().__init__(message, code, status)
        self.problems = problems


class Conflict(GleitzeitError):
    """The workflow's or schedule's id is taken (-32012)."""


class TooLarge(GleitzeitError):
    """The request is over one of the host's size limits (-32013)."""


class Busy(GleitzeitError):
    """The host or the token is at a limit: streams, running workflows,
    schedules (-32017). Try again later."""


class ShuttingDown(GleitzeitError):
    """The host is shutting down and takes no new work (-32010)."""


class TaskFailed(GleitzeitError):
    """A task ended without a result: `task_id`, its `status` and the
    host's `error` (`{code, message, ...}`)."""

    def __init__(self, task_id: str, status: str, error: Optional[Dict[str, Any]]):
        detail = (error or {}).get("message", status)
        super().__init__(f"task '{task_id}' {status}: {detail}", (error or {}).get("code"))
        self.task_id = task_id
        self.task_status = status
        self.error = error


class WorkflowTimeout(GleitzeitError):
    """A workflow did not finish within the time the caller gave it."""


# One table: the host's codes and the class each becomes.
_BY_CODE = {
    -32014: Unauthorized,
    -32015: Forbidden,
    -32011: NotFound,
    -32601: NotFound,
    -32012: Conflict,
    -32013: TooLarge,
    -32017: Busy,
    -32010: ShuttingDown,
}


def from_answer(status: int, body: Any) -> GleitzeitError:
    """The exception for an error answer (`{code, message, problems}`)."""
    if not isinstance(body, dict):
        return GleitzeitError(f"the host answered {status}: {str(body)[:200]}", None, status)
    code = body.get("code") if isinstance(body.get("code"), int) else None
    message = str(body.get("message", f"the host answered {status}"))
    if code == -32602:
        return InvalidWorkflow(message, code, status, list(body.get("problems") or []))
    kind = _BY_CODE.get(code, GleitzeitError) if code is not None else GleitzeitError
    return kind(message, code, status)
