"""A provider of work/v1 for load tests: `job` waits a little (SECONDS,
0.02 unless told) and returns which provider ran it (and its `n`, plus one
with INCREMENT=1). Prints "executed N" every 50 jobs; with SAY_EACH=1
"started N" and "executed N" for each.
"""
import asyncio
import os

import socketio

SERVER = os.environ["GLEITZEIT_SERVER"]
AUTH = {"token": os.environ.get("GLEITZEIT_TOKEN")}
PROVIDER_ID = os.environ["PROVIDER_ID"]
sio = socketio.AsyncClient()
executed = 0


@sio.event
async def connect():
    await sio.call("register_provider", {"provider_id": PROVIDER_ID, "protocol_id": "work/v1",
                                         "supported_methods": ["job"],
                                         "max_concurrent": int(os.environ.get("MAX_CONCURRENT", "16"))})
    print("registered", PROVIDER_ID, flush=True)


@sio.on("execute_method")
async def execute_method(call):
    global executed
    if os.environ.get("HANG") == "1":  # a provider that stopped answering
        await asyncio.Event().wait()
    if os.environ.get("PROGRESS") == "1":  # partial output for subscribers
        await sio.emit("task_progress", {"id": call["id"], "chunk": {"step": "started", "n": call["params"]["n"]}})
    say_each = os.environ.get("SAY_EACH") == "1"
    if say_each:
        print("started", call["params"]["n"], flush=True)
    await asyncio.sleep(float(os.environ.get("SECONDS", "0.02")))
    executed += 1
    if say_each or executed % 50 == 0:
        print("executed", executed, flush=True)
    n = call["params"]["n"] + (1 if os.environ.get("INCREMENT") == "1" else 0)
    return {"result": {"n": n, "provider": PROVIDER_ID}}


async def main():
    await sio.connect(SERVER, auth=AUTH)
    await sio.wait()


asyncio.run(main())
