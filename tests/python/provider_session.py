"""The package's `Provider` base class as a user runs it: a provider
(tests/python/typed_provider.py) against a host, driven with the client.
Prints "ok"."""
import asyncio
import os
import signal
import subprocess
import sys
import time

from gleitzeit import GleitzeitClient, InvalidWorkflow, TaskFailed


def task(task_id, method, params, **fields):
    return {"id": task_id, "protocol": "text/v1", "method": method, "params": params, **fields}


async def until_registered(client):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for protocol in await client.list_protocols():
            if protocol["protocol_id"] == "text/v1":
                return protocol
        await asyncio.sleep(0.1)
    raise AssertionError("the provider never registered")


def line_with(process, marker):
    for line in process.stdout:
        if marker in line:
            return line
    raise AssertionError(f"the provider ended without printing {marker!r}")


async def main():
    provider = subprocess.Popen([sys.executable, "tests/python/typed_provider.py"], stdout=subprocess.PIPE, text=True)
    try:
        async with GleitzeitClient() as client:
            protocol = await until_registered(client)
            assert sorted(protocol["methods"]) == ["fail", "slow", "upper"], protocol
            assert protocol["params_schemas"]["upper"] == {
                "type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"],
                "additionalProperties": False,
            }, protocol
            assert protocol["params_schemas"]["fail"]["properties"]["why"] == {"type": ["string", "null"]}, protocol

            results = await client.run_workflow({"name": "up", "tasks": [task("up", "upper", {"text": "hi"})]})
            assert results["up"].result == {"text": "HI"}, results

            # The typed params are the host's schema: a wrong type is refused at submission.
            try:
                await client.submit({"name": "bad", "tasks": [task("up", "upper", {"text": 5})]})
            except InvalidWorkflow as invalid:
                assert any("text" in str(p) for p in invalid.problems), invalid.problems
            else:
                raise AssertionError("a number for a str parameter was accepted")

            try:
                await client.run_workflow({"name": "no", "tasks": [task("no", "fail", {"why": "no"})]},
                                          raise_on_failure=True)
            except TaskFailed as failed:
                assert failed.error["code"] == -32001 and failed.error["message"] == "no", failed.error
            else:
                raise AssertionError("a ProviderError did not fail the task")

            # Six calls for two slots: never more than two at once; each
            # sends progress.
            fan = {"name": "fan", "tasks": [task("slow", "slow", {"seconds": 0.3, "n": "${item}"},
                                                 for_each=list(range(6)))]}
            workflow_id = await client.submit(fan)
            progress = [e.data for e in [e async for e in client.events(workflow_id)] if e.name == "task_progress"]
            results = await client.results(workflow_id)
            most = max(r.result["most"] for r in results.values() if r.task_id.startswith("slow["))
            assert most == 2, results
            assert len(progress) >= 1 and progress[0]["chunk"]["step"] == "started", progress

            # SIGTERM while a call runs: it finishes (one attempt), then the provider leaves.
            workflow_id = await client.submit({"name": "drain", "tasks": [task("last", "slow", {"seconds": 1.5, "n": 99})]})
            line_with(provider, "started 99")
            provider.send_signal(signal.SIGTERM)
            await client.wait(workflow_id, timeout=30)
            last = (await client.results(workflow_id))["last"]
            assert last.ok and last.result["n"] == 99 and last.attempts == 1, last
            line_with(provider, "drained")
            assert provider.wait(timeout=30) == 0
    finally:
        if provider.poll() is None:
            provider.kill()


asyncio.run(main())
print("ok")
