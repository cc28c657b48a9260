"""Follow one workflow (argv[1]) over Socket.IO until it completes: print
the events seen, as JSON [[event, task_id], ...]. The workflow may run on
another host of a cluster than the one this client connects to.
"""
import asyncio
import json
import os
import sys

import socketio

SERVER = os.environ["GLEITZEIT_SERVER"]
AUTH = {"token": os.environ.get("GLEITZEIT_TOKEN")}


async def main():
    workflow_id = sys.argv[1]
    sio = socketio.AsyncClient()
    seen = []
    done = asyncio.Event()

    @sio.on("*")
    async def any_event(event, data):
        if isinstance(data, dict) and data.get("workflow_id") == workflow_id:
            seen.append([event, data.get("task_id")])
            if event == "workflow_completed":
                done.set()

    await sio.connect(SERVER, auth=AUTH)
    reply = await sio.call("subscribe", {"workflow_id": workflow_id})
    assert reply.get("subscribed"), reply
    await asyncio.wait_for(done.wait(), 60)
    await sio.disconnect()
    print(json.dumps(seen))


asyncio.run(main())
