"""Events reach only those who asked for them, and declared method names are
checked like ids. Exits 0 and prints "ok" when every expectation holds.

Three clients: a submitter, a watcher subscribed to provider changes, and a
bystander that asked for nothing. A provider registers, a workflow runs.
"""
import asyncio
import os

import socketio

SERVER = os.environ["GLEITZEIT_SERVER"]
AUTH = {"token": os.environ.get("GLEITZEIT_TOKEN")}
WORKFLOW_EVENTS = {"workflow_started", "task_status", "task_result", "workflow_completed"}
PROVIDER_EVENTS = {"provider_available", "plugin_loaded", "plugin_failed", "plugin_removed"}


async def client(seen):
    sio = socketio.AsyncClient()

    @sio.on("*")
    async def any_event(event, data):
        seen.append((event, data))

    await sio.connect(SERVER, auth=AUTH)
    return sio


async def main():
    submitter_saw, watcher_saw, bystander_saw = [], [], []
    submitter = await client(submitter_saw)
    watcher = await client(watcher_saw)
    bystander = await client(bystander_saw)
    reply = await watcher.call("subscribe", {"providers": True})
    assert reply == {"providers": True, "subscribed": True}, reply

    provider = socketio.AsyncClient()
    await provider.connect(SERVER, auth=AUTH)
    reply = await provider.call("register_provider", {"provider_id": "scoped", "protocol_id": "scope/v1",
                                                      "supported_methods": ["run"]})
    assert reply["provider_id"] == "scoped", reply

    # Bad method names and too many of them are refused, named.
    for methods, fragment in [
        ([""], "method '' in 'supported_methods' is not a method name"),
        (["ok", "bad\u0000name"], "is not a method name"),
        (["x" * 300], "is not a method name"),
        ([f"m{i}" for i in range(1001)], "names 1001 methods; at most 1000"),
    ]:
        reply = await provider.call("register_provider", {"provider_id": "bad", "protocol_id": "scope/v1",
                                                          "supported_methods": methods})
        assert reply["error"]["code"] == -32602 and fragment in reply["error"]["message"], (methods[:2], reply)
        assert len(reply["error"]["message"]) < 400, "the error does not echo the input whole"
    reply = await provider.call("register_protocol", {"protocol": {"name": "scope", "version": "v1",
                                                                   "methods": {"a\nb": {}}}})
    assert "is not a method name" in reply["error"]["message"], reply

    # An unknown event's error does not echo a megabyte-long name.
    reply = await bystander.call("x" * 1_000_000, {})
    assert reply["error"]["code"] == -32601 and len(reply["error"]["message"]) < 300, reply["error"]["message"][:300]

    # Non-ASCII keys arrive escaped ("gr\u00f6\u00dfe") from python-socketio.
    keys = await client([])
    echoed = await keys.call("submit_task", {"task": {"id": "keys", "protocol": "echo/v1", "method": "echo",
                                                            "params": {"message": "größe", "größe": 1}}})
    assert echoed.get("task_id") == "keys", echoed

    done = asyncio.Event()

    @submitter.on("workflow_completed")  # takes this event from the catch-all
    async def completed(data):
        submitter_saw.append(("workflow_completed", data))
        done.set()

    reply = await submitter.call("submit_workflow", {"workflow": {"name": "scoped", "tasks": [
        {"id": "a", "protocol": "echo/v1", "method": "echo", "params": {"message": "mine"}}]}})
    workflow_id = reply["workflow_id"]
    await asyncio.wait_for(done.wait(), 30)

    # A round trip each: anything sent to them before it has arrived.
    for sio in (submitter, watcher, bystander):
        await sio.call("list_protocols", {})
    names = lambda seen: {event for event, _ in seen}
    assert WORKFLOW_EVENTS <= names(submitter_saw), submitter_saw
    started = [data for event, data in submitter_saw if event == "workflow_started"]
    assert started == [{"workflow_id": workflow_id, "name": "scoped", "task_count": 1}], started
    assert "provider_available" in names(watcher_saw), watcher_saw
    available = [data for event, data in watcher_saw if event == "provider_available"]
    assert available == [{"provider_id": "scoped", "protocol_id": "scope/v1", "supported_methods": ["run"]}]
    assert not names(watcher_saw) & WORKFLOW_EVENTS, watcher_saw
    assert not names(bystander_saw) & (WORKFLOW_EVENTS | PROVIDER_EVENTS), bystander_saw
    assert not names(submitter_saw) & PROVIDER_EVENTS, submitter_saw

    for sio in (submitter, watcher, bystander, provider, keys):
        await sio.disconnect()
    print("ok")


asyncio.run(asyncio.wait_for(main(), 60))
