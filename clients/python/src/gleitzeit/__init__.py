"""The Python client of a Gleitzeit host (docs/python.md).

    from gleitzeit import GleitzeitClient

    async with GleitzeitClient(url="http://127.0.0.1:8000") as client:
        results = await client.run_workflow("workflows/hello.yaml")
"""

from .client import Event, GleitzeitClient, TaskResult, Workflow
from .errors import (
    Busy,
    Conflict,
    Forbidden,
    GleitzeitError,
    InvalidWorkflow,
    NotFound,
    ShuttingDown,
    TaskFailed,
    TooLarge,
    Unauthorized,
    Unreachable,
    WorkflowTimeout,
)
from .provider import Provider, ProviderError, method
from .sync import SyncGleitzeitClient

__all__ = [
    "Busy",
    "Conflict",
    "Event",
    "Forbidden",
    "GleitzeitClient",
    "GleitzeitError",
    "InvalidWorkflow",
    "NotFound",
    "Provider",
    "ProviderError",
    "ShuttingDown",
    "SyncGleitzeitClient",
    "TaskFailed",
    "TaskResult",
    "TooLarge",
    "Unauthorized",
    "Unreachable",
    "Workflow",
    "WorkflowTimeout",
    "method",
]
