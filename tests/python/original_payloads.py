"""A provider and a submitter written to the original Gleitzeit V4's payloads
exactly (emit without acks; reply events), against our host.

Exits 0 and prints "ok" when every expectation holds.
"""
import asyncio
import os

import socketio

SERVER = os.environ["GLEITZEIT_SERVER"]


async def provider():
    sio = socketio.AsyncClient()
    registered = asyncio.Event()

    @sio.on("provider_registered")
    async def on_registered(data):
        assert data["provider_id"] == "legacy-math-1", data
        assert data["protocol_id"] == "math/v1", data
        registered.set()

    @sio.on("execute_method")
    async def execute_method(data):
        params = data["params"]
        if data["method"] == "add":
            return {"result": {"sum": params["a"] + params["b"]}}
        if data["method"] == "fail":
            return {"error": "something broke"}
        return {"error": f"unknown method {data['method']}"}

    await sio.connect(SERVER)
    await sio.emit("register_protocol", {"protocol": {
        "name": "math", "version": "v1", "description": "Arithmetic",
        "methods": {"add": {"description": "a + b"}, "fail": {"description": "always fails"}},
    }})
    await sio.emit("register_provider", {
        "provider_id": "legacy-math-1", "protocol_id": "math/v1",
        "supported_methods": ["add", "fail"], "name": "Legacy math", "description": "V4 style",
    })
    await asyncio.wait_for(registered.wait(), 10)
    return sio


async def submitter():
    # The original's clients started with HTTP long-polling; stay on it.
    sio = socketio.AsyncClient()
    submitted = asyncio.Future()
    results = {}

    @sio.on("workflow_submitted")
    async def on_submitted(data):
        submitted.set_result(data)

    @sio.on("task_result")
    async def on_result(data):
        results[data["task_id"]] = data

    @sio.on("error")
    async def on_error(data):
        print("error event:", data, flush=True)

    await sio.connect(SERVER, transports=["polling"])
    assert sio.transport() == "polling"
    await sio.emit("submit_workflow", {"workflow": {
        "name": "Legacy sums",
        "description": "Tasks named, not identified; dependencies by name",
        "tasks": [
            {"name": "First Sum", "protocol": "math/v1", "method": "add", "params": {"a": 2, "b": 3}},
            {"name": "Second Sum", "protocol": "math/v1", "method": "add", "dependencies": ["First Sum"],
             "params": {"a": "${first-sum.result.sum}", "b": 10},
             "retry_config": {"max_attempts": 2, "backoff_strategy": "fixed", "base_delay": 0.1}},
            {"name": "Broken", "protocol": "math/v1", "method": "fail", "priority": "high"},
        ],
    }})
    info = await asyncio.wait_for(submitted, 10)
    assert info["task_count"] == 3, info
    while len(results) < 3:
        await asyncio.sleep(0.05)
    assert results["first-sum"]["status"] == "completed", results
    assert results["first-sum"]["result"] == {"sum": 5}, results
    assert results["second-sum"]["result"] == {"sum": 15}, results
    assert results["broken"]["status"] == "failed", results
    assert results["broken"]["error"]["message"] == "something broke", results
    await sio.disconnect()


async def main():
    prov = await provider()
    await submitter()
    await prov.disconnect()
    print("ok")


asyncio.run(asyncio.wait_for(main(), 60))
