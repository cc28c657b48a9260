"""`SyncGleitzeitClient`: `GleitzeitClient` for code without an event loop.
Each method runs the asynchronous one to its end on a loop of the
client's own; use it from one thread, not inside a running event loop."""

from __future__ import annotations

import asyncio
import os
from typing import Any, Awaitable, Dict, Iterator, List, Optional, TypeVar, Union

from .client import Event, GleitzeitClient, TaskResult, Workflow

T = TypeVar("T")


class SyncGleitzeitClient:
    """As `GleitzeitClient`, blocking: `with SyncGleitzeitClient() as client:`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._client = GleitzeitClient(*args, **kwargs)

    @property
    def url(self) -> str:
        return self._client.url

    def __enter__(self) -> "SyncGleitzeitClient":
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def close(self) -> None:
        if not self._loop.is_closed():
            self._run(self._client.close())
            self._loop.close()

    def _run(self, awaitable: Awaitable[T]) -> T:
        return self._loop.run_until_complete(awaitable)

    def submit(self, workflow: Workflow) -> str:
        return self._run(self._client.submit(workflow))

    def run_workflow(
        self, workflow: Workflow, *, timeout: Optional[float] = None, raise_on_failure: bool = False
    ) -> Dict[str, TaskResult]:
        return self._run(self._client.run_workflow(workflow, timeout=timeout, raise_on_failure=raise_on_failure))

    def wait(self, workflow_id: str, *, timeout: Optional[float] = None) -> Dict[str, Any]:
        return self._run(self._client.wait(workflow_id, timeout=timeout))

    def get_workflow_status(self, workflow_id: str) -> Dict[str, Any]:
        return self._run(self._client.get_workflow_status(workflow_id))

    def results(self, workflow_id: str) -> Dict[str, TaskResult]:
        return self._run(self._client.results(workflow_id))

    def get_task_result(self, workflow_id: str, task_id: str) -> TaskResult:
        return self._run(self._client.get_task_result(workflow_id, task_id))

    def list_workflows(
        self, *, status: Optional[str] = None, name: Optional[str] = None, limit: Optional[int] = None
    ) -> List[Dict[str, Any]]:
        return self._run(self._client.list_workflows(status=status, name=name, limit=limit))

    def chat(self, prompt: Optional[str] = None, **options: Any) -> str:
        return self._run(self._client.chat(prompt, **options))

    def vision(self, image_path: Union[str, "os.PathLike[str]"], prompt: str = "Describe this image.", **options: Any) -> str:
        return self._run(self._client.vision(image_path, prompt, **options))

    def batch_process(self, *args: Any, **options: Any) -> Dict[str, Any]:
        return self._run(self._client.batch_process(*args, **options))

    def batch_chat(self, directory: Union[str, "os.PathLike[str]"], *args: Any, **options: Any) -> Dict[str, Any]:
        return self._run(self._client.batch_chat(directory, *args, **options))

    def batch_python(self, *args: Any, **options: Any) -> Dict[str, Any]:
        return self._run(self._client.batch_python(*args, **options))

    def execute_python(self, *args: Any, **options: Any) -> Any:
        return self._run(self._client.execute_python(*args, **options))

    def cancel(self, workflow_id: str) -> bool:
        return self._run(self._client.cancel(workflow_id))

    def events(self, workflow_id: Optional[str] = None) -> Iterator[Event]:
        stream = self._client.events(workflow_id).__aiter__()
        while True:
            try:
                yield self._run(stream.__anext__())
            except StopAsyncIteration:
                return
