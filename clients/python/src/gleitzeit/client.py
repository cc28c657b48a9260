"""`GleitzeitClient`: a running Gleitzeit host over its HTTP API
(docs/http.md) and its event streams. Asynchronous; `SyncGleitzeitClient`
(`gleitzeit.sync`) wraps it for code without an event loop.

It holds no engine of its own (the original's `persistence=` chose one):
the host keeps the workflows, so a script may submit, exit, and read the
results later, from any host of a cluster."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Dict, List, Mapping, Optional, Tuple, Union
from urllib.parse import quote

import aiohttp

from . import _defaults
from .errors import GleitzeitError, TaskFailed, Unreachable, WorkflowTimeout, from_answer

API = "/api/v1"

#: A workflow as the client takes it: a file's path, the file's text (YAML
#: or JSON), or the workflow as a mapping.
Workflow = Union[str, "os.PathLike[str]", Mapping[str, Any]]

#: The largest file `vision` and `batch_chat` send to the host, and the
#: most one batch sends (the host takes request bodies up to 64 MiB).
MAX_FILE_BYTES = 8 * 1024 * 1024
MAX_BATCH_BYTES = 48 * 1024 * 1024

#: How often an event stream is opened again after it dropped, in a row,
#: before the client gives up; and how long it waits before each.
RECONNECTS = 10
RECONNECT_WAIT = 0.5
#: How long an event stream may say nothing before it counts as dropped
#: (the host sends a comment every 15 s on an idle stream).
STREAM_SILENCE = 60.0


@dataclass(frozen=True)
class TaskResult:
    """One task of a workflow as its report has it: `result` is set once
    it completed, `error` (`{code, message, ...}`) once it failed."""

    task_id: str
    status: str
    result: Any = None
    error: Optional[Dict[str, Any]] = None
    attempts: int = 0
    duration_ms: Optional[float] = None

    @property
    def ok(self) -> bool:
        return self.status == "completed"

    @classmethod
    def of(cls, task: Mapping[str, Any], result: Any = None) -> "TaskResult":
        return cls(
            task_id=str(task.get("id", "")),
            status=str(task.get("status", "")),
            result=result if result is not None else task.get("result"),
            error=task.get("error"),
            attempts=int(task.get("attempts") or 0),
            duration_ms=task.get("duration_ms"),
        )


@dataclass(frozen=True)
class Event:
    """One server-sent event: its name (`task_result`, `snapshot`, ...),
    its data (JSON) and its id (for resuming)."""

    name: str
    data: Any
    id: Optional[str] = None


class GleitzeitClient:
    """A client of one host. `url` and `token` default as the CLI's do
    (`GLEITZEIT_SERVER`, `GLEITZEIT_TOKEN`, else the local host and its
    local token). Use it as `async with GleitzeitClient() as client:`, or
    call `close()`."""

    def __init__(
        self,
        url: Optional[str] = None,
        token: Optional[str] = None,
        *,
        data_dir: Optional[Union[str, "os.PathLike[str]"]] = None,
        timeout: float = 60.0,
        persistence: Optional[str] = None,
    ) -> None:
        # `persistence` is the original's choice of an in-process engine's
        # store; the host keeps state here, so it is accepted and unused.
        del persistence
        self.url = _defaults.server(url)
        self._token = _defaults.token(token, data_dir)
        self._timeout = timeout
        self._session: Optional[aiohttp.ClientSession] = None

    async def __aenter__(self) -> "GleitzeitClient":
        return self

    async def __aexit__(self, *_: Any) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # Workflows

    async def submit(self, workflow: Workflow) -> str:
        """Submit without waiting; the workflow's id."""
        body, content_type = _body_of(workflow)
        answer = await self._call("POST", "/workflows", body=body, content_type=content_type)
        return str(answer["workflow_id"])

    async def create_workflow(self, name: str, tasks: List[Mapping[str, Any]], **fields: Any) -> Dict[str, Any]:
        """A workflow to run (`run_workflow`) or submit, as a mapping."""
        return {"name": name, "tasks": list(tasks), **fields}

    async def run_workflow(
        self, workflow: Workflow, *, timeout: Optional[float] = None, raise_on_failure: bool = False
    ) -> Dict[str, TaskResult]:
        """Submit, wait until it finishes, and return its tasks by id. With
        `raise_on_failure`, a task that failed raises `TaskFailed`."""
        workflow_id = await self.submit(workflow)
        await self.wait(workflow_id, timeout=timeout)
        results = await self.results(workflow_id)
        if raise_on_failure:
            for task in results.values():
                if task.status in ("failed", "cancelled"):
                    raise TaskFailed(task.task_id, task.status, task.error)
        return results

    async def wait(self, workflow_id: str, *, timeout: Optional[float] = None) -> Dict[str, Any]:
        """Wait until the workflow finishes (following its events); its
        report."""
        try:
            await asyncio.wait_for(self._until_finished(workflow_id), timeout)
        except asyncio.TimeoutError:
            raise WorkflowTimeout(f"workflow '{workflow_id}' did not finish within {timeout} s") from None
        return await self.get_workflow_status(workflow_id)

    async def _until_finished(self, workflow_id: str) -> None:
        async for _ in self.events(workflow_id):
            pass

    async def get_workflow_status(self, workflow_id: str) -> Dict[str, Any]:
        """The workflow's report: `status`, `summary` and each task's status,
        attempts, timings and error (results: `results`)."""
        return dict(await self._call("GET", f"/workflows/{_segment(workflow_id)}"))

    async def results(self, workflow_id: str) -> Dict[str, TaskResult]:
        """Every task of the workflow, by id, with its result."""
        report = await self.get_workflow_status(workflow_id)
        answer = await self._call("GET", f"/workflows/{_segment(workflow_id)}/results")
        by_task = answer.get("results") or {}
        return {str(t["id"]): TaskResult.of(t, by_task.get(t["id"])) for t in report.get("tasks", [])}

    async def get_task_result(self, workflow_id: str, task_id: str) -> TaskResult:
        """One task in full."""
        task = await self._call("GET", f"/workflows/{_segment(workflow_id)}/tasks/{_segment(task_id)}")
        return TaskResult.of(task)

    async def list_workflows(
        self, *, status: Optional[str] = None, name: Optional[str] = None, limit: Optional[int] = None
    ) -> List[Dict[str, Any]]:
        """The workflows the token may see, newest first (one page)."""
        query = {k: str(v) for k, v in (("status", status), ("name", name), ("limit", limit)) if v is not None}
        answer = await self._call("GET", "/workflows", params=query)
        return list(answer.get("workflows") or [])

    async def list_protocols(self) -> List[Dict[str, Any]]:
        """The protocols the host serves now: `protocol_id`, `methods`,
        `providers` and the `params_schemas` of methods that have one."""
        return list((await self._call("GET", "/protocols")).get("protocols") or [])

    async def cancel(self, workflow_id: str) -> bool:
        """Cancel a running workflow; `NotFound` if it is not running."""
        answer = await self._call("POST", f"/workflows/{_segment(workflow_id)}/cancel", body=b"{}")
        return bool(answer.get("cancelled"))

    # Models: one-task workflows of `llm/v1` on the host (the original's
    # helpers, with its names and arguments).

    async def chat(
        self,
        prompt: Optional[str] = None,
        *,
        messages: Optional[List[Mapping[str, Any]]] = None,
        model: Optional[str] = None,
        system: Optional[str] = None,
        temperature: Optional[float] = None,
        max_tokens: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> str:
        """Ask a model: `prompt` as one user message (after `system`), or
        the conversation `messages`. The text it answered; `TaskFailed` if
        the host's model provider failed."""
        if messages is None:
            if prompt is None:
                raise ValueError("chat needs a prompt or messages")
            messages = [{"role": "user", "content": prompt}]
            if system is not None:
                messages.insert(0, {"role": "system", "content": system})
        params = _given(messages=_escaped(list(messages)), model=model, temperature=temperature, max_tokens=max_tokens)
        return await self._ask("chat", params, timeout)

    async def vision(
        self,
        image_path: Union[str, "os.PathLike[str]"],
        prompt: str = "Describe this image.",
        *,
        model: Optional[str] = None,
        temperature: Optional[float] = None,
        max_tokens: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> str:
        """Ask a vision model about an image file of this machine (sent to
        the host, at most `MAX_FILE_BYTES`). The text it answered."""
        image = base64.b64encode(_read_bounded(Path(image_path))).decode("ascii")
        params = _given(image_data=image, prompt=_escaped(prompt), model=model, temperature=temperature, max_tokens=max_tokens)
        return await self._ask("vision", params, timeout)

    async def batch_process(
        self,
        directory: Optional[Union[str, "os.PathLike[str]"]] = None,
        files: Optional[List[Union[str, "os.PathLike[str]"]]] = None,
        pattern: str = "*",
        method: str = "llm/chat",
        prompt: str = "Analyze this file",
        model: Optional[str] = None,
        protocol: str = "llm/v1",
        *,
        temperature: Optional[float] = None,
        max_tokens: Optional[int] = None,
        max_parallel: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> Dict[str, Any]:
        """Ask a model the same `prompt` about each file (of this machine):
        `files`, or those of `directory` matching `pattern`. One workflow,
        a task per file: `llm/chat` and `llm/generate` get the file's text
        after the prompt, `llm/vision` the file as the image. The summary
        as the original gave it: `batch_id`, `created_at`, `summary`
        (`total`, `successful`, `failed`, `processing_time`), `parameters`,
        `results` (path: `{status: "success", content}` or `{status:
        "failed", error}`), and `total_files`, `successful`, `failed` at
        the top as well."""
        started = time.monotonic()
        if protocol != "llm/v1" or method not in ("llm/chat", "llm/generate", "llm/vision"):
            raise ValueError(f"batch_process asks models (llm/v1: llm/chat, llm/generate, llm/vision), not {protocol} {method}")
        paths = _batch_files(directory, files, pattern)
        vision = method == "llm/vision"
        items = [{"path": str(p), **_file_item(p, vision)} for p in paths]
        options = _given(model=model, temperature=temperature, max_tokens=max_tokens)
        name = method.split("/", 1)[1]
        asked = _escaped(prompt)
        if vision:
            params: Dict[str, Any] = {"prompt": asked, "image_data": "${item.base64}", **options}
        elif name == "generate":
            params = {"prompt": asked + "\n\n${item.text}", **options}
        else:
            params = {"messages": [{"role": "user", "content": asked + "\n\n${item.text}"}], **options}
        task: Dict[str, Any] = {"id": "file", "protocol": protocol, "method": name, "params": params}
        parameters = {"method": method, "prompt": prompt, "model": model, "protocol": protocol,
                      "directory": None if directory is None else str(directory),
                      "pattern": pattern if directory is not None else None}
        return await self._batch(task, items, "content", parameters, started, max_parallel, timeout)

    async def batch_python(
        self,
        directory: Union[str, "os.PathLike[str]"],
        pattern: str,
        script_file: Union[str, "os.PathLike[str]"],
        timeout: Optional[float] = 10,
        *,
        max_parallel: Optional[int] = None,
    ) -> Dict[str, Any]:
        """Run the script `script_file` (of this machine) once per file of
        `directory` matching `pattern`, on the host's `python/v1` provider:
        each run sees `file_path` and `file_content` (the file's text), and
        sets `result`; at most `timeout` seconds each. The summary as
        `batch_process` gives it, with each file's `result`."""
        started = time.monotonic()
        code = _read_bounded(Path(script_file)).decode("utf-8")
        items = [{"path": str(p), **_file_item(p, False)} for p in _batch_files(directory, None, pattern)]
        context = {"file_path": "${item.path}", "file_content": "${item.text}"}
        task: Dict[str, Any] = {"id": "file", "protocol": "python/v1", "method": "execute",
                                "params": {"code": _escaped(code), "context": context}}
        if timeout is not None:
            task["timeout"] = timeout
        parameters = {"method": "python/execute", "script_file": str(script_file), "protocol": "python/v1",
                      "directory": str(directory), "pattern": pattern}
        return await self._batch(task, items, "result", parameters, started, max_parallel, None)

    async def _batch(
        self,
        task: Dict[str, Any],
        items: List[Dict[str, str]],
        answer: str,
        parameters: Dict[str, Any],
        started: float,
        max_parallel: Optional[int],
        timeout: Optional[float],
    ) -> Dict[str, Any]:
        """Run `task` once per file of `items`, and sum it up as the
        original did: each file's `answer` field of its result, or why it
        failed."""
        total = sum(len(item.get("text", item.get("base64", ""))) for item in items)
        if total > MAX_BATCH_BYTES:
            raise ValueError(f"the batch holds {total} bytes; one batch sends at most {MAX_BATCH_BYTES}")
        task.update({"for_each": items, "allow_failures": True})
        if max_parallel is not None:
            task["max_parallel"] = max_parallel
        workflow_id = await self.submit({"name": f"batch {task['protocol']} {task['method']}", "tasks": [task]})
        await self.wait(workflow_id, timeout=timeout)
        tasks = await self.results(workflow_id)
        results: Dict[str, Any] = {}
        for index, item in enumerate(items):
            done = tasks.get(f"file[{index}]")
            if done is not None and done.ok and isinstance(done.result, Mapping):
                results[item["path"]] = {"status": "success", answer: done.result.get(answer)}
            else:
                error = (done.error or {}).get("message") if done else "not run"
                results[item["path"]] = {"status": "failed", "error": error}
        successful = sum(1 for r in results.values() if r["status"] == "success")
        failed = len(items) - successful
        return {
            "batch_id": workflow_id,
            "created_at": datetime.now(timezone.utc).isoformat(),
            "summary": {"total": len(items), "successful": successful, "failed": failed,
                        "processing_time": time.monotonic() - started},
            "parameters": parameters,
            "results": results,
            "total_files": len(items),
            "successful": successful,
            "failed": failed,
        }

    async def batch_chat(
        self,
        directory: Union[str, "os.PathLike[str]"],
        pattern: str = "*.txt",
        prompt: str = "Summarize this document",
        model: Optional[str] = None,
        **options: Any,
    ) -> Dict[str, Any]:
        """`batch_process` with `llm/chat` over the files of `directory`
        matching `pattern`."""
        return await self.batch_process(directory, pattern=pattern, method="llm/chat", prompt=prompt, model=model, **options)

    async def execute_python(
        self,
        script_file: Optional[Union[str, "os.PathLike[str]"]] = None,
        context: Optional[Mapping[str, Any]] = None,
        timeout: Optional[float] = 10,
        *,
        code: Optional[str] = None,
    ) -> Any:
        """Run the script `script_file` of this machine (at most
        `MAX_FILE_BYTES`), or the Python `code`, on the host's `python/v1`
        provider, inside its sandbox, with `context`'s entries as
        variables (and `context` itself), for at most `timeout` seconds.
        The value the script set as `result`; `TaskFailed` if it raised."""
        if (code is None) == (script_file is None):
            raise ValueError("execute_python needs a script_file or code, not both")
        if script_file is not None:
            code = _read_bounded(Path(script_file)).decode("utf-8")
        task: Dict[str, Any] = {"id": "run", "protocol": "python/v1", "method": "execute",
                                "params": _escaped({"code": code, "context": dict(context or {})})}
        if timeout is not None:
            task["timeout"] = timeout
        results = await self.run_workflow({"name": "python", "tasks": [task]}, raise_on_failure=True)
        answer = results["run"].result
        return answer.get("result") if isinstance(answer, Mapping) else answer

    async def _ask(self, method: str, params: Dict[str, Any], timeout: Optional[float]) -> str:
        workflow = {"name": f"llm {method}", "tasks": [{"id": "ask", "protocol": "llm/v1", "method": method, "params": params}]}
        results = await self.run_workflow(workflow, timeout=timeout, raise_on_failure=True)
        answer = results["ask"].result
        return str(answer.get("content", "")) if isinstance(answer, Mapping) else str(answer)

    # Events

    async def events(self, workflow_id: Optional[str] = None) -> AsyncIterator[Event]:
        """The events of one workflow (from a `snapshot` to its
        `workflow_completed`), or of every workflow the token may see
        (endless). A dropped stream is opened again where it was
        (`Last-Event-ID`); events the host no longer has come as a fresh
        `snapshot` (or `reset`), never as a silent hole."""
        path = f"/workflows/{_segment(workflow_id)}/events" if workflow_id else "/events"
        last_id: Optional[str] = None
        failures = 0
        while True:
            try:
                async for event in self._stream(path, last_id):
                    failures = 0
                    last_id = event.id or last_id
                    yield event
                    if workflow_id and _ends_stream(event):
                        return
                # The host closed a stream that had more to say.
                raise aiohttp.ClientPayloadError("the stream ended early")
            except _Ended:
                return
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, asyncio.TimeoutError) as e:
                failures += 1
                if failures > RECONNECTS:
                    raise Unreachable(f"the event stream of {self.url} dropped {failures} times: {e}") from e
                await asyncio.sleep(RECONNECT_WAIT * failures)

    async def _stream(self, path: str, last_id: Optional[str]) -> AsyncIterator[Event]:
        headers = self._headers("text/event-stream")
        if last_id:
            headers["Last-Event-ID"] = last_id
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._timeout, sock_read=STREAM_SILENCE)
        async with self._http().get(self.url + API + path, headers=headers, timeout=timeout) as response:
            if response.status == 204:
                raise _Ended()
            if response.status >= 400:
                raise from_answer(response.status, _json(await response.text()))
            fields: Dict[str, str] = {}
            async for raw in response.content:
                line = raw.decode("utf-8").rstrip("\r\n")
                if line:
                    _field(fields, line)
                elif "data" in fields:
                    yield Event(fields.get("event", "message"), _json(fields["data"]), fields.get("id"))
                    fields = {}

    # Schedules

    async def add_schedule(
        self,
        workflow: Workflow,
        *,
        cron: Optional[str] = None,
        timezone: Optional[str] = None,
        schedule_id: Optional[str] = None,
    ) -> Dict[str, Any]:
        """Keep a workflow's schedule (its `schedule:` block, or these)."""
        body, content_type = _body_of(workflow)
        query = {k: v for k, v in (("cron", cron), ("timezone", timezone), ("id", schedule_id)) if v is not None}
        return dict(await self._call("POST", "/schedules", body=body, content_type=content_type, params=query))

    async def list_schedules(self) -> List[Dict[str, Any]]:
        return list((await self._call("GET", "/schedules")).get("schedules") or [])

    async def remove_schedule(self, schedule_id: str) -> bool:
        answer = await self._call("DELETE", f"/schedules/{_segment(schedule_id)}")
        return bool(answer.get("removed"))

    # The wire

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    def _headers(self, accept: str = "application/json") -> Dict[str, str]:
        headers = {"Accept": accept}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Optional[bytes] = None,
        content_type: str = "application/json",
        params: Optional[Mapping[str, str]] = None,
    ) -> Any:
        headers = self._headers()
        if body is not None:
            headers["Content-Type"] = content_type
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        try:
            async with self._http().request(
                method, self.url + API + path, data=body, params=params, headers=headers, timeout=timeout
            ) as response:
                text = await response.text()
                status = response.status
        except aiohttp.ClientConnectionError as e:
            raise Unreachable(f"no host answers at {self.url}: {e}") from e
        except asyncio.TimeoutError:
            raise Unreachable(f"{self.url} did not answer {method} {path} within {self._timeout} s") from None
        answer = _json(text)
        if status >= 400:
            raise from_answer(status, answer)
        return answer


class _Ended(Exception):
    """A workflow's stream said it has nothing more (204)."""


def _body_of(workflow: Workflow) -> Tuple[bytes, str]:
    """The request body of a workflow and its content type: a mapping as
    JSON, a file or text as it is (YAML, or JSON if it looks like it)."""
    if isinstance(workflow, Mapping):
        return json.dumps(workflow).encode(), "application/json"
    text = os.fspath(workflow)
    path = Path(text)
    named = "\n" not in text and len(text) < 4096
    if isinstance(workflow, os.PathLike) or (named and path.is_file()):
        text = path.read_text(encoding="utf-8")
    elif named and path.suffix in (".yaml", ".yml", ".json"):
        raise GleitzeitError(f"no workflow file '{text}' (from {os.getcwd()})")
    kind = "application/json" if text.lstrip().startswith("{") else "application/yaml"
    return text.encode(), kind


def _ends_stream(event: Event) -> bool:
    """Whether a workflow's stream has nothing after `event`: it completed,
    or it had finished when the stream opened (its snapshot alone)."""
    if event.name == "workflow_completed":
        return True
    return event.name == "snapshot" and isinstance(event.data, dict) and event.data.get("status") != "running"


def _given(**params: Any) -> Dict[str, Any]:
    """The params that were given (not None)."""
    return {name: value for name, value in params.items() if value is not None}


def _batch_files(
    directory: Optional[Union[str, "os.PathLike[str]"]],
    files: Optional[List[Union[str, "os.PathLike[str]"]]],
    pattern: str,
) -> List[Path]:
    """The files of a batch: `files`, or those of `directory` matching
    `pattern`, in path order."""
    if directory is not None:
        if not Path(directory).is_dir():
            raise ValueError(f"{directory} is not a directory")
        return sorted(p for p in Path(directory).glob(pattern) if p.is_file())
    if files:
        return [Path(f) for f in files]
    raise ValueError("give a directory or files")


def _file_item(path: Path, image: bool) -> Dict[str, str]:
    """A file as a batch sends it: its text, or (an image) its bytes as
    base64."""
    data = _read_bounded(path)
    if image:
        return {"base64": base64.b64encode(data).decode("ascii")}
    return {"text": data.decode("utf-8", errors="replace")}


def _escaped(value: Any) -> Any:
    """`value` (text, or lists and mappings of it) as the host reads it
    literally: a `${` the caller wrote is not a reference (`$${`)."""
    if isinstance(value, str):
        return value.replace("${", "$${")
    if isinstance(value, Mapping):
        return {key: _escaped(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_escaped(item) for item in value]
    return value


def _read_bounded(path: Path) -> bytes:
    """A file's bytes, at most `MAX_FILE_BYTES` (else `ValueError` naming it)."""
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ValueError(f"{path} has {size} bytes; at most {MAX_FILE_BYTES} are sent to the host")
    return path.read_bytes()


def _segment(value: Optional[str]) -> str:
    """`value` as one path segment."""
    return quote(str(value), safe="")


def _field(fields: Dict[str, str], line: str) -> None:
    """One line of a server-sent event; comments (`:`) are dropped."""
    if line.startswith(":"):
        return
    name, _, value = line.partition(":")
    value = value[1:] if value.startswith(" ") else value
    fields[name] = fields[name] + "\n" + value if name == "data" and name in fields else value


def _json(text: str) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        raise GleitzeitError(f"the host answered what is not JSON: {text[:200]!r}") from None
