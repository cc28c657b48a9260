"""A remote provider's params schemas, with python-socketio: declared when it
registers, listed, checked at submission and again before each call (a
task whose substituted params miss the schema fails without reaching the
provider), and refused when they are not schemas the host can use.
Exits 0 and prints "ok" when every expectation holds.
"""
import asyncio
import os

import socketio

SERVER = os.environ["GLEITZEIT_SERVER"]
AUTH = {"token": os.environ.get("GLEITZEIT_TOKEN")}
COUNT = {
    "type": "object",
    "required": ["text"],
    "properties": {"text": {"type": "string"}, "top": {"type": "integer", "minimum": 1}},
    "additionalProperties": False,
}


async def expect_error(sio, event, payload, fragment):
    reply = await sio.call(event, payload, timeout=10)
    assert "error" in reply, (event, payload, reply)
    assert reply["error"]["code"] == -32602, reply
    assert fragment in reply["error"]["message"], (fragment, reply["error"]["message"])
    return reply["error"]


async def main():
    calls = []
    provider = socketio.AsyncClient()

    @provider.on("execute_method")
    async def execute(call):
        calls.append(call["params"])
        return {"result": {"words": len(call["params"]["text"].split())}}

    await provider.connect(SERVER, auth=AUTH)
    register = {"provider_id": "counter", "protocol_id": "text/v1", "supported_methods": ["count"]}
    await expect_error(provider, "register_provider", {**register, "params_schemas": {"count": {"type": 5}}},
                       "method 'count': the params schema is not a JSON Schema")
    await expect_error(provider, "register_provider",
                       {**register, "params_schemas": {"count": {"$ref": "http://127.0.0.1:9/s.json"}}},
                       "method 'count'")
    await expect_error(provider, "register_provider", {**register, "params_schemas": {"other": COUNT}},
                       "'params_schemas' names method 'other', which 'supported_methods' does not list")
    await expect_error(provider, "register_provider", {**register, "params_schemas": [COUNT]},
                       "'params_schemas' must be an object")
    reply = await provider.call("register_provider", {**register, "params_schemas": {"count": COUNT}}, timeout=10)
    assert reply.get("provider_id") == "counter", reply

    client = socketio.AsyncClient()
    await client.connect(SERVER, auth=AUTH)
    protocols = (await client.call("list_protocols", {}, timeout=10))["protocols"]
    text = next(p for p in protocols if p["protocol_id"] == "text/v1")
    assert text["params_schemas"] == {"count": COUNT}, text
    echo = next(p for p in protocols if p["protocol_id"] == "echo/v1")
    assert echo["params_schemas"]["echo"]["required"] == ["message"], echo

    # At submission: every static mismatch, each with its task and field.
    error = await expect_error(client, "submit_workflow", {"workflow": {"name": "bad", "tasks": [
        {"id": "a", "protocol": "text/v1", "method": "count", "params": {"text": 5, "top": 0}},
        {"id": "b", "protocol": "text/v1", "method": "count", "params": {"txt": "typo"}},
    ]}}, "is not a valid workflow")
    problems = {(p["task"], p["field"]) for p in error["data"]["problems"]}
    assert problems == {("task 'a'", "params.text"), ("task 'a'", "params.top"), ("task 'b'", "params")}, problems

    # Before the call: a reference that resolves to a number fails its task.
    done = {}
    finished = asyncio.Event()

    @client.on("workflow_completed")
    async def completed(data):
        done[data["workflow_id"]] = data
        finished.set()

    async def run(tasks):
        finished.clear()
        reply = await client.call("submit_workflow", {"workflow": {"name": "w", "tasks": tasks}}, timeout=10)
        workflow_id = reply["workflow_id"]
        while workflow_id not in done:
            await asyncio.wait_for(finished.wait(), 30)
            finished.clear()
        return await client.call("get_workflow", {"workflow_id": workflow_id}, timeout=10)

    report = await run([
        {"id": "n", "protocol": "echo/v1", "method": "echo", "params": {"message": 42}},
        {"id": "c", "protocol": "text/v1", "method": "count", "dependencies": ["n"],
         "params": {"text": "${n.result.echoed}"}},
    ])
    late = next(t for t in report["tasks"] if t["id"] == "c")
    assert late["status"] == "failed", late
    assert late["error"]["code"] == -32602, late
    assert "params.text: 42 is not of type \"string\"" in late["error"]["message"], late["error"]
    assert "(provider counter)" in late["error"]["message"], late["error"]
    assert calls == [], f"the provider was called with params that miss its schema: {calls}"

    report = await run([
        {"id": "n", "protocol": "echo/v1", "method": "echo", "params": {"message": "three short words"}},
        {"id": "c", "protocol": "text/v1", "method": "count", "dependencies": ["n"],
         "params": {"text": "${n.result.echoed}", "top": 2}},
    ])
    assert report["status"] == "completed", report
    assert calls == [{"text": "three short words", "top": 2}], calls
    await client.disconnect()
    await provider.disconnect()
    print("ok")


asyncio.run(asyncio.wait_for(main(), 90))
