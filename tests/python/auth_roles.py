"""Each role against every event, workflows seen only by their owners,
protocol grants, provider-id takeover, origins and revocation.

Tokens come from the environment: ADMIN (the host's local token), ALICE and
BOB (clients), WORKER and WORKER2 (providers of text/v1), made with
`gleitzeit token create` while the host runs. Prints "ok" when every
expectation holds.
"""
import asyncio
import os
import subprocess
import time

import aiohttp
import socketio

SERVER = os.environ["GLEITZEIT_SERVER"]
TOKENS = {name: os.environ[name] for name in ["ADMIN", "ALICE", "BOB", "WORKER", "WORKER2"]}
UNAUTHENTICATED, FORBIDDEN, NOT_FOUND = -32014, -32015, -32011

# Due on the first of January only: it never runs during the test.
YEARLY = {"name": "yearly", "schedule": {"cron": "0 0 1 1 *"},
          "tasks": [{"id": "a", "protocol": "echo/v1", "method": "ping"}]}
TICKS = {"name": "ticks", "schedule": {"cron": "* * * * * *", "id": "alice-ticks"},
         "tasks": [{"id": "a", "protocol": "echo/v1", "method": "ping"}]}
ECHO = {"name": "mine", "tasks": [{"id": "a", "protocol": "echo/v1", "method": "delay",
                                   "params": {"seconds": 3, "message": "alice's secret"}}]}


async def connected(name, **options):
    sio = socketio.AsyncClient()
    await sio.connect(SERVER, auth={"token": TOKENS[name]}, **options)
    return sio


async def refused_connect(expected, **options):
    """python-socketio hands the refusal's message to `connect_error`."""
    sio = socketio.AsyncClient(reconnection=False)
    reasons = []

    @sio.event
    async def connect_error(data):
        reasons.append(str(data))

    try:
        await sio.connect(SERVER, **options)
    except socketio.exceptions.ConnectionError as e:
        reasons.append(str(e))
        assert any(expected in reason for reason in reasons), (expected, reasons)
        return
    raise AssertionError(f"connected with {options}")


async def code_of(sio, event, payload):
    reply = await sio.call(event, payload, timeout=10)
    return reply.get("error", {}).get("code") if isinstance(reply, dict) else None


# Every event, with a payload it can act on: (event, payload, roles allowed).
def events(workflow_id):
    return [
        ("submit_workflow", {"workflow": {"name": "w", "tasks": [{"id": "a", "protocol": "echo/v1", "method": "ping"}]}}, {"client", "admin"}),
        ("submit_task", {"task": {"protocol": "echo/v1", "method": "echo"}}, {"client", "admin"}),
        ("get_workflow", {"workflow_id": workflow_id}, {"client", "admin"}),
        ("list_workflows", {}, {"client", "admin"}),
        ("cancel_workflow", {"workflow_id": "nope"}, {"client", "admin"}),
        ("subscribe", {"workflow_id": workflow_id}, {"client", "admin"}),
        ("subscribe", {"providers": True}, {"admin"}),
        ("register_protocol", {"protocol": {"name": "text", "version": "v1", "methods": {"upper": {}}}}, {"provider", "admin"}),
        ("register_provider", {"provider_id": "matrix", "protocol_id": "text/v1", "supported_methods": ["upper"]}, {"provider", "admin"}),
        ("method_result", {"id": "nope", "result": 1}, {"provider", "admin"}),
        ("task_progress", {"id": "nope", "chunk": 1}, {"provider", "admin"}),
        ("list_providers", {}, {"admin"}),
        ("list_protocols", {}, {"client", "provider", "admin"}),
        ("list_plugins", {}, {"admin"}),
        ("add_schedule", {"workflow": YEARLY, "replace": True}, {"client", "admin"}),
        ("list_schedules", {}, {"client", "admin"}),
        ("remove_schedule", {"schedule_id": "nope"}, {"client", "admin"}),
    ]


async def role_matrix(workflow_id):
    for name, role in [("BOB", "client"), ("WORKER", "provider"), ("ADMIN", "admin")]:
        sio = await connected(name)
        for event, payload, allowed in events(workflow_id):
            code = await code_of(sio, event, payload)
            if role in allowed:
                assert code not in (FORBIDDEN, UNAUTHENTICATED), (role, event, code)
            else:
                assert code == FORBIDDEN, (role, event, code)
        await sio.disconnect()


async def ownership():
    alice = await connected("ALICE")
    reply = await alice.call("submit_workflow", {"workflow": ECHO}, timeout=10)
    workflow_id = reply["workflow_id"]
    bob = await connected("BOB")
    # To another client the workflow does not exist: same answer as a made-up id.
    for event in ["get_workflow", "cancel_workflow", "subscribe"]:
        theirs = await bob.call(event, {"workflow_id": workflow_id}, timeout=10)
        made_up = await bob.call(event, {"workflow_id": "made-up"}, timeout=10)
        assert theirs["error"]["code"] == made_up["error"]["code"] == NOT_FOUND, (event, theirs)
        assert "secret" not in str(theirs) and "mine" not in str(theirs), theirs
    listed = (await bob.call("list_workflows", {}, timeout=10))["workflows"]
    assert workflow_id not in [w["workflow_id"] for w in listed], listed
    mine = (await alice.call("list_workflows", {}, timeout=10))["workflows"]
    assert [w["owner"] for w in mine if w["workflow_id"] == workflow_id] == ["alice"], mine
    admin = await connected("ADMIN")
    assert (await admin.call("get_workflow", {"workflow_id": workflow_id}, timeout=10))["owner"] == "alice"
    assert (await alice.call("cancel_workflow", {"workflow_id": workflow_id}, timeout=10))["cancelled"] is True
    for sio in (alice, bob, admin):
        await sio.disconnect()
    return workflow_id


async def schedule_ownership():
    """A schedule is its token's: its id is the token's own (the host keeps
    it as TOKEN:ID), so another token neither sees, replaces, removes nor
    blocks it, and may use the same id for a schedule of its own."""
    alice = await connected("ALICE")
    mine = {**YEARLY, "schedule": {**YEARLY["schedule"], "id": "alices"}}
    added = await alice.call("add_schedule", {"workflow": mine}, timeout=10)
    assert added["schedule_id"] == "alice:alices" and added["owner"] == "alice", added
    bob = await connected("BOB")
    assert [s["schedule_id"] for s in (await bob.call("list_schedules", {}, timeout=10))["schedules"]] == []
    for theirs in ("alices", "alice:alices"):
        gone = await bob.call("remove_schedule", {"schedule_id": theirs}, timeout=10)
        made_up = await bob.call("remove_schedule", {"schedule_id": "made-up"}, timeout=10)
        assert gone["error"]["code"] == made_up["error"]["code"] == NOT_FOUND, gone
    named = {**mine, "schedule": {**mine["schedule"], "id": "alice:alices"}}
    other = await bob.call("add_schedule", {"workflow": named, "replace": True}, timeout=10)
    assert other["error"]["code"] == -32602 and "names another token's schedule" in other["error"]["message"], other
    # The same id is bob's own: nothing tells him alice has one.
    own = await bob.call("add_schedule", {"workflow": mine}, timeout=10)
    assert own["schedule_id"] == "bob:alices" and own["owner"] == "bob", own
    admin = await connected("ADMIN")
    owners = {s["schedule_id"]: s["owner"] for s in (await admin.call("list_schedules", {}, timeout=10))["schedules"]}
    assert owners == {"alice:alices": "alice", "bob:alices": "bob"}, owners
    # An admin may replace it, naming it as the host keeps it; it stays alice's.
    monthly = {**named, "schedule": {**named["schedule"], "cron": "0 0 1 * *"}}
    replaced = await admin.call("add_schedule", {"workflow": monthly, "replace": True}, timeout=10)
    assert (replaced["schedule_id"], replaced["owner"], replaced["cron"]) == ("alice:alices", "alice", "0 0 1 * *"), replaced
    assert [s["cron"] for s in (await alice.call("list_schedules", {}, timeout=10))["schedules"]] == ["0 0 1 * *"]
    assert (await alice.call("remove_schedule", {"schedule_id": "alices"}, timeout=10))["removed"] is True
    assert (await bob.call("remove_schedule", {"schedule_id": "bob:alices"}, timeout=10))["removed"] is True
    for sio in (alice, bob, admin):
        await sio.disconnect()


async def ticks_of(sio):
    listed = (await sio.call("list_workflows", {"name": "ticks"}, timeout=10))["workflows"]
    return sorted(w["workflow_id"] for w in listed if w["workflow_id"].startswith("alice:alice-ticks-"))


async def revoked_schedules_stop():
    """Runs are their owner's: no other token can take a run's id first (the
    ids bob gives are bob's own), and once alice's token is revoked, her
    schedule starts none."""
    alice = await connected("ALICE")
    assert "error" not in await alice.call("add_schedule", {"workflow": TICKS}, timeout=10)
    while not await ticks_of(alice):
        await asyncio.sleep(0.1)
    # Bob submits workflows under the ids the next due times would have
    # without the schedule's run key: alice's runs go on, and stay hers.
    bob = await connected("BOB")
    now = int(time.time())
    guesses = [time.strftime("alice-ticks-%Y%m%dT%H%M%SZ", time.gmtime(now + s)) for s in range(1, 5)]
    for guess in guesses:
        assert "error" not in await bob.call("submit_workflow", {"workflow": {**ECHO, "id": guess}}, timeout=10)
    while time.time() < now + 6:
        await asyncio.sleep(0.2)
    # The schedule notes a run after starting it: read the note first, so
    # the listing read after it holds that run even if another has started.
    last_run = [s for s in (await alice.call("list_schedules", {}, timeout=10))["schedules"]
                if s["schedule_id"] == "alice:alice-ticks"][0]["last_run"]
    runs = [r for r in await ticks_of(alice) if r not in guesses]
    assert len(runs) >= 5, runs
    assert last_run in runs and "error" not in await alice.call("get_workflow", {"workflow_id": last_run}, timeout=10), last_run
    await bob.disconnect()
    assert {w["owner"] for w in (await alice.call("list_workflows", {"name": "ticks"}, timeout=10))["workflows"]} == {"alice"}
    await alice.disconnect()
    subprocess.run([os.environ["GLEITZEIT_BIN"], "token", "revoke", "alice"], check=True)
    admin = await connected("ADMIN")
    await asyncio.sleep(1.5)  # a run due just before the revocation may still start
    before = await ticks_of(admin)
    await asyncio.sleep(3)  # three due times
    assert await ticks_of(admin) == before, (before, await ticks_of(admin))
    assert "error" not in await admin.call("remove_schedule", {"schedule_id": "alice:alice-ticks"}, timeout=10)
    await admin.disconnect()


async def register(sio, provider_id, protocol):
    return await sio.call("register_provider", {"provider_id": provider_id, "protocol_id": protocol,
                                                "supported_methods": ["upper"]}, timeout=10)


async def grants_and_takeover():
    worker = await connected("WORKER")
    assert "error" not in await register(worker, "text-1", "text/v1")
    refused = (await register(worker, "text-2", "llm/v1"))["error"]
    assert refused["code"] == FORBIDDEN and "may not serve protocol 'llm/v1'" in refused["message"], refused
    admin = await connected("ADMIN")
    reserved = (await register(admin, "fake-echo", "echo/v1"))["error"]
    assert reserved["code"] == FORBIDDEN and "WASM plugin" in reserved["message"], reserved
    await worker.disconnect()
    # Its id stays its token's: another provider token cannot take it over.
    other = await connected("WORKER2")
    taken = (await register(other, "text-1", "text/v1"))["error"]
    assert taken["code"] == FORBIDDEN and "belongs to another token" in taken["message"], taken
    worker = await connected("WORKER")
    assert "error" not in await register(worker, "text-1", "text/v1")
    for sio in (worker, other, admin):
        await sio.disconnect()


async def origins():
    port = SERVER.rsplit(":", 1)[1]
    await refused_connect("403", auth={"token": TOKENS["ADMIN"]}, headers={"Origin": "http://evil.example"})
    async with aiohttp.ClientSession() as http:
        url = f"{SERVER}/socket.io/?EIO=4&transport=polling"
        async with http.get(url, headers={"Origin": f"http://evil.example:{port}"}) as response:
            body = await response.json()
            assert response.status == 403 and body["error"]["code"] == FORBIDDEN, body
            assert "origin 'http://evil.example:" in body["error"]["message"], body
    own = await connected("ADMIN", headers={"Origin": f"http://127.0.0.1:{port}"})
    await own.disconnect()


async def main():
    await refused_connect("no token", auth={})
    await refused_connect(f"(code {UNAUTHENTICATED})", auth={})
    await refused_connect("not known to this host", auth={"token": "gzt_guessed"})
    bearer = socketio.AsyncClient()
    await bearer.connect(SERVER, headers={"Authorization": f"Bearer {TOKENS['ALICE']}"})
    assert "protocols" in await bearer.call("list_protocols", {}, timeout=10)
    await bearer.disconnect()

    workflow_id = await ownership()
    await schedule_ownership()
    await role_matrix(workflow_id)
    await grants_and_takeover()
    await origins()

    await revoked_schedules_stop()
    # Revoked while the host runs: the next connection is refused.
    subprocess.run([os.environ["GLEITZEIT_BIN"], "token", "revoke", "bob"], check=True)
    await refused_connect("not known to this host", auth={"token": TOKENS["BOB"]})
    print("ok")


asyncio.run(main())
