"""One request limit on every transport, answered with an error that names
it; one result cap for remote providers as for WASM plugins.
Exits 0 and prints "ok" when every expectation holds.
"""
import asyncio
import os

import socketio

SERVER = os.environ["GLEITZEIT_SERVER"]
AUTH = {"token": os.environ.get("GLEITZEIT_TOKEN")}
MiB = 1024 * 1024


def workflow(padding):
    # 'shout' is not an echo/v1 method: a request that arrives whole is
    # answered with that validation error.
    return {"workflow": {"name": "big", "tasks": [
        {"id": "a", "protocol": "echo/v1", "method": "shout", "params": {"padding": "x" * padding}}]}}


async def requests_over(transport):
    sio = socketio.AsyncClient()
    await sio.connect(SERVER, auth=AUTH, transports=[transport])
    reply = await sio.call("submit_workflow", workflow(20 * MiB), timeout=60)
    assert "has no method 'shout'" in reply["error"]["message"], (transport, reply["error"]["message"][:200])
    reply = await sio.call("submit_workflow", workflow(70 * MiB), timeout=60)
    assert reply["error"]["code"] == -32013, (transport, reply)
    assert "requests are limited to 67108864 bytes (64 MiB)" in reply["error"]["message"], reply
    # Still connected and serving.
    assert "protocols" in await sio.call("list_protocols", {})
    await sio.disconnect()


async def oversized_result():
    provider = socketio.AsyncClient()

    @provider.on("execute_method")
    async def execute(call):
        return {"result": {"blob": "y" * (20 * MiB)}}

    await provider.connect(SERVER, auth=AUTH)
    await provider.call("register_provider", {"provider_id": "big", "protocol_id": "big/v1",
                                              "supported_methods": ["blob"]})
    submitter = socketio.AsyncClient()
    done = asyncio.Event()
    results = []

    @submitter.on("task_result")
    async def task_result(data):
        results.append(data)
        done.set()

    await submitter.connect(SERVER, auth=AUTH)
    reply = await submitter.call("submit_task", {"task": {"id": "b", "protocol": "big/v1", "method": "blob"}})
    assert "task_id" in reply, reply
    await asyncio.wait_for(done.wait(), 60)
    error = results[0]["error"]
    assert results[0]["status"] == "failed" and error["code"] == -32007, results[0]
    assert "provider 'big' returned 209" in error["message"] and "limited to 16777216 bytes" in error["message"], error
    assert results[0]["attempt"] == 1, results[0]
    providers = (await submitter.call("list_providers", {}))["providers"]
    assert any(p["provider_id"] == "big" for p in providers), "the provider stays connected"
    await submitter.disconnect()
    await provider.disconnect()


async def reads_more_than_the_unread_limit_in_all():
    # Default transports: python-socketio polls, upgrades, and only then
    # joins the namespace over the WebSocket. 80 MB of results, read as they
    # come, is no reason to disconnect it.
    sio = socketio.AsyncClient(websocket_extra_options={"max_msg_size": 0})
    results = asyncio.Queue()
    sio.on("task_result", results.put)
    await sio.connect(SERVER, auth=AUTH)
    for i in range(10):
        reply = await sio.call("submit_task", {"task": {"id": f"r{i}", "protocol": "echo/v1", "method": "echo",
                                                        "params": {"message": "z" * (8 * MiB)}}}, timeout=60)
        assert "task_id" in reply, reply
        result = await asyncio.wait_for(results.get(), 60)
        assert result["status"] == "completed", result["error"]
    assert "protocols" in await sio.call("list_protocols", {}), "still connected"
    await sio.disconnect()


async def main():
    await requests_over("websocket")
    await requests_over("polling")
    await oversized_result()
    await reads_more_than_the_unread_limit_in_all()
    print("ok")


asyncio.run(asyncio.wait_for(main(), 240))
