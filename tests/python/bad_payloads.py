"""Malformed requests each get a JSON-RPC error; the server keeps serving.

Exits 0 and prints "ok" when every expectation holds.
"""
import asyncio
import os

import socketio

SERVER = os.environ["GLEITZEIT_SERVER"]
AUTH = {"token": os.environ.get("GLEITZEIT_TOKEN")}


async def expect_error(sio, event, payload, code, fragment):
    reply = await sio.call(event, payload, timeout=10)
    assert "error" in reply, (event, payload, reply)
    error = reply["error"]
    assert error["code"] == code, (event, error)
    assert fragment in error["message"], (event, error["message"])


async def main():
    sio = socketio.AsyncClient()
    errors = []

    @sio.on("error")
    async def on_error(data):
        errors.append(data)

    await sio.connect(SERVER, auth=AUTH)
    await expect_error(sio, "submit_workflow", {}, -32602, "field 'workflow' must be an object, got nothing")
    await expect_error(sio, "submit_workflow", [1, 2, 3], -32600, "must be a JSON object, got a list")
    await expect_error(sio, "submit_workflow", "text", -32600, "got a string")
    await expect_error(sio, "submit_workflow", {"workflow": {"name": "x", "tasks": [
        {"id": "a", "protocol": "echo/v1", "method": "echo", "dependencies": ["b"]},
        {"id": "b", "protocol": "echo/v1", "method": "echo", "dependencies": ["a"]},
    ]}}, -32602, "dependency cycle: a -> b -> a")
    await expect_error(sio, "submit_workflow", {"workflow": {"name": "x", "tasks": [
        {"id": "a", "protocol": "nope/v1", "method": "m"}]}}, -32602, "no provider serves protocol 'nope/v1'")
    with_inputs = {"name": "x", "inputs": {"n": "integer"}, "tasks": [
        {"id": "a", "protocol": "echo/v1", "method": "echo", "params": {"message": "${inputs.n}"}}]}
    await expect_error(sio, "submit_workflow", {"workflow": with_inputs}, -32602, "field 'inputs.n': required and not given")
    await expect_error(sio, "submit_workflow", {"workflow": with_inputs, "inputs": {"n": "three"}}, -32602,
                       "field 'inputs.n': must be an integer, found 'three'")
    await expect_error(sio, "submit_workflow", {"workflow": with_inputs, "inputs": [1]}, -32602,
                       "field 'inputs' must be an object")
    await expect_error(sio, "register_provider", {"provider_id": 7}, -32602, "field 'provider_id' must be a non-empty string")
    await expect_error(sio, "register_provider", {"provider_id": "p", "protocol_id": "Bad Protocol"}, -32602, "is not of the form name/version")
    await expect_error(sio, "register_provider", {"provider_id": "p", "protocol_id": "zzz", "supported_methods": ["m"]}, -32602, "is not of the form name/version")
    await expect_error(sio, "register_provider", {"provider_id": "p", "protocol_id": "x/v1"}, -32602, "must list the methods")
    await expect_error(sio, "get_workflow", {"workflow_id": "nope"}, -32011, "no workflow 'nope'")
    await expect_error(sio, "cancel_workflow", {"workflow_id": "nope"}, -32011, "no running workflow 'nope'")
    await expect_error(sio, "no_such_event", {"x": 1}, -32601, "unknown event 'no_such_event'")
    ping = [{"id": "a", "protocol": "echo/v1", "method": "ping"}]
    await expect_error(sio, "add_schedule", {"workflow": "daily"}, -32602, "field 'workflow' must be an object, got a string")
    await expect_error(sio, "add_schedule", {"workflow": {"name": "x", "tasks": ping}}, -32602, "the workflow has no schedule")
    await expect_error(sio, "add_schedule", {"workflow": {"name": "x", "tasks": ping}, "schedule": {"cron": 7}}, -32602,
                       "field 'schedule.cron': must be a string, found a number")
    await expect_error(sio, "add_schedule", {"workflow": {"name": "x", "tasks": ping}, "schedule": {"cron": "* " * 200}}, -32602,
                       "field 'schedule.cron': is 400 bytes long; the limit is 256")
    await expect_error(sio, "add_schedule", {"workflow": {"name": "x", "tasks": ping}, "schedule": {"cron": "@daily", "id": "a" * 101}}, -32602,
                       "field 'schedule.id': '" + "a" * 60 + "…' is not a valid schedule id")
    await expect_error(sio, "add_schedule", {"workflow": {"name": "x", "tasks": ping}, "schedule": "@daily"}, -32602,
                       "field 'schedule' must be an object, got a string")
    await expect_error(sio, "add_schedule", {"workflow": {"name": "x", "tasks": ping}, "schedule": {"cron": "@daily"}, "replace": "yes"}, -32602,
                       "field 'replace' must be true or false, got a string")
    # User text of any length is cut short in answers: a 1 MiB zone or key
    # does not come back three times over.
    huge = "A" * (1 << 20)
    for schedule, fragment in [({"cron": "@daily", "timezone": huge}, "unknown time zone '" + "A" * 60 + "…'"),
                               ({"cron": "@daily", huge: 1}, "field 'schedule." + "A" * 60 + "…': unknown field")]:
        reply = await sio.call("add_schedule", {"workflow": {"name": "x", "tasks": ping}, "schedule": schedule}, timeout=30)
        assert fragment in reply["error"]["message"] and len(str(reply)) < 10_000, str(reply)[:300]
    await expect_error(sio, "remove_schedule", {"schedule_id": 3}, -32602, "field 'schedule_id' must be a non-empty string")
    await expect_error(sio, "remove_schedule", {"schedule_id": "nope"}, -32011, "no schedule 'nope'")
    huge = "x" * (8 * 1024 * 1024)
    await expect_error(sio, "submit_workflow", {"workflow": {"name": "big", "tasks": [
        {"id": "a", "protocol": "echo/v1", "method": "shout", "params": {"message": huge}}]}}, -32602, "has no method 'shout'")
    assert len(errors) >= 15, errors

    # Still serving: a valid task runs (submit_task runs on its own).
    done = asyncio.Event()

    @sio.on("task_result")
    async def on_result(data):
        if data["status"] == "completed" and data["result"]["echoed"] == "still here":
            done.set()

    reply = await sio.call("submit_task", {"task": {"name": "alive", "protocol": "echo/v1", "method": "echo",
                                                    "params": {"message": "still here"}}})
    assert reply["task_id"] == "alive", reply
    await asyncio.wait_for(done.wait(), 10)
    await sio.disconnect()
    print("ok")


asyncio.run(asyncio.wait_for(main(), 60))
