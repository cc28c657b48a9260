"""Use the `gleitzeit` Python package (clients/python) as a user would,
against the host at GLEITZEIT_SERVER with GLEITZEIT_TOKEN, from the
repository's root. Prints "ok" when every check held."""
import asyncio
import os

import gleitzeit
from gleitzeit import GleitzeitClient, SyncGleitzeitClient


def echo(task_id, message, **fields):
    return {"id": task_id, "protocol": "echo/v1", "method": "echo", "params": {"message": message}, **fields}


def delay(task_id, seconds, **fields):
    return {"id": task_id, "protocol": "echo/v1", "method": "delay", "params": {"seconds": seconds}, **fields}


async def runs_workflows(client):
    # A mapping made with create_workflow, a reference between its tasks.
    workflow = await client.create_workflow(
        name="pair", tasks=[echo("a", "one"), echo("b", "${a.result.echoed} two", dependencies=["a"])]
    )
    results = await client.run_workflow(workflow)
    assert set(results) == {"a", "b"}, results
    assert results["b"].ok and results["b"].result["echoed"] == "one two", results["b"]
    assert results["b"].attempts == 1

    # A file's path, and the file's text (YAML).
    from_path = await client.run_workflow("workflows/hello.yaml")
    assert [t.status for t in from_path.values()] == ["completed"] * 3, from_path
    with open("workflows/hello.yaml", encoding="utf-8") as file:
        from_text = await client.run_workflow(file.read())
    assert from_text["reply"].result["echoed"] == from_path["reply"].result["echoed"]

    # A task that fails: its status and error, or an exception on request.
    failing = {"name": "failing", "tasks": [
        {"id": "bad", "protocol": "echo/v1", "method": "error", "params": {"type": "runtime", "message": "no"}}]}
    results = await client.run_workflow(failing)
    assert results["bad"].status == "failed" and "RuntimeError: no" in results["bad"].error["message"], results
    try:
        await client.run_workflow(failing, raise_on_failure=True)
        raise AssertionError("a failed task raises with raise_on_failure")
    except gleitzeit.TaskFailed as e:
        assert e.task_id == "bad" and e.task_status == "failed", e


async def reads_and_follows(client):
    workflow_id = await client.submit({"name": "followed", "tasks": [
        delay("first", 0.3), echo("second", "after", dependencies=["first"])]})
    seen = [(event.name, event.data.get("task_id")) async for event in client.events(workflow_id)]
    assert seen[0][0] == "snapshot", seen
    assert seen[-1][0] == "workflow_completed", seen
    assert [t for name, t in seen if name == "task_result"] == ["first", "second"], seen

    report = await client.get_workflow_status(workflow_id)
    assert report["status"] == "completed" and report["summary"]["completed"] == 2, report
    second = await client.get_task_result(workflow_id, "second")
    assert second.result["echoed"] == "after" and second.ok, second
    listed = await client.list_workflows(name="followed")
    assert workflow_id in [w["workflow_id"] for w in listed], listed
    # Events of a finished workflow: its snapshot alone.
    again = [event.name async for event in client.events(workflow_id)]
    assert again == ["snapshot"], again


async def cancels(client):
    workflow_id = await client.submit({"name": "long", "tasks": [delay("wait", 10)]})
    assert await client.cancel(workflow_id)
    report = await client.wait(workflow_id, timeout=30)
    assert report["status"] == "cancelled", report
    try:
        await client.cancel(workflow_id)
        raise AssertionError("a finished workflow cannot be cancelled")
    except gleitzeit.NotFound as e:
        assert e.code == -32011 and e.status == 404, (e.code, e.status)


async def errors(client):
    try:
        await client.submit({"name": "broken", "tasks": [echo("b", "x", dependencies=["zz"])]})
        raise AssertionError("an invalid workflow is refused")
    except gleitzeit.InvalidWorkflow as e:
        assert e.code == -32602 and e.problems[0]["task"] == "task 'b'", (e.code, e.problems)
        assert "zz" in e.problems[0]["message"], e.problems
    try:
        await client.submit("workflows/no-such-file.yaml")
        raise AssertionError("a missing file is named, not sent")
    except gleitzeit.GleitzeitError as e:
        assert "no workflow file 'workflows/no-such-file.yaml'" in str(e), e
    try:
        await client.get_workflow_status("no-such-workflow")
        raise AssertionError("an unknown workflow is not found")
    except gleitzeit.NotFound:
        pass
    async with GleitzeitClient(token="gzt_not-a-token") as stranger:
        try:
            await stranger.list_workflows()
            raise AssertionError("an unknown token is refused")
        except gleitzeit.Unauthorized as e:
            assert e.code == -32014 and e.status == 401, (e.code, e.status)
    async with GleitzeitClient(url="http://127.0.0.1:9") as nowhere:
        try:
            await nowhere.list_workflows()
            raise AssertionError("no host there")
        except gleitzeit.Unreachable:
            pass


async def schedules(client):
    added = await client.add_schedule(
        {"name": "nightly", "tasks": [echo("tick", "night")]}, cron="0 0 3 * * *", schedule_id="nightly")
    assert added["schedule_id"] == "nightly" and added["cron"] == "0 0 3 * * *", added
    assert "nightly" in [s["schedule_id"] for s in await client.list_schedules()]
    assert await client.remove_schedule("nightly")
    assert "nightly" not in [s["schedule_id"] for s in await client.list_schedules()]


async def dropping_proxy(upstream_port):
    """A TCP proxy to the host that cuts the first connection once two
    tasks' results came back on it (an event stream dropped mid-way)."""
    cut = []

    async def pipe(reader, writer, cut_here=None):
        seen = b""
        try:
            while data := await reader.read(4096):
                writer.write(data)
                await writer.drain()
                seen += data
                if cut_here is not None and seen.count(b"event: task_result") >= 2:
                    cut.append(cut_here)
                    break
        finally:
            writer.close()

    async def handle(client_reader, client_writer):
        host_reader, host_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        cut_here = "first connection" if not cut else None
        await asyncio.gather(pipe(client_reader, host_writer), pipe(host_reader, client_writer, cut_here))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], cut


async def resumes_a_dropped_stream(client):
    from urllib.parse import urlparse

    tasks = [delay(f"t{i}", 0.05, dependencies=[f"t{i - 1}"] if i else []) for i in range(20)]
    workflow_id = await client.submit({"name": "resumed", "tasks": tasks})
    server, port, cut = await dropping_proxy(urlparse(client.url).port)
    async with server, GleitzeitClient(url=f"http://127.0.0.1:{port}") as follower:
        seen = [(e.name, e.data.get("task_id")) async for e in follower.events(workflow_id)]
    assert cut, "the stream was cut"
    ended = [t for name, t in seen if name == "task_result"]
    snapshots = [name for name, _ in seen if name == "snapshot"]
    # Resumed where it was: each task's end once, in order, one snapshot.
    assert ended[-1] == "t19" and ended == sorted(set(ended), key=lambda t: int(t[1:])), seen
    assert len(ended) >= 18 and snapshots == ["snapshot"] and seen[-1][0] == "workflow_completed", seen


async def main():
    # url and token from GLEITZEIT_SERVER and GLEITZEIT_TOKEN, as the CLI.
    async with GleitzeitClient() as client:
        await runs_workflows(client)
        await reads_and_follows(client)
        await cancels(client)
        await errors(client)
        await schedules(client)
        await resumes_a_dropped_stream(client)


asyncio.run(main())
with SyncGleitzeitClient() as client:
    results = client.run_workflow("workflows/hello.yaml")
    assert results["summary"].ok, results
    running = client.submit({"name": "sync", "tasks": [delay("wait", 0.5)]})
    names = [event.name for event in client.events(running)]
    assert names[0] == "snapshot" and names[-1] == "workflow_completed", names
print("ok")
