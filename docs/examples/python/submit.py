"""Submit a workflow to a Gleitzeit host and print its report as JSON.

It mixes the bundled WASM echo provider with the text/v1 provider of
provider.py, passing results on with ${...}.
Run: GLEITZEIT_SERVER=http://127.0.0.1:8000 python3 submit.py
Token: GLEITZEIT_TOKEN (`gleitzeit token create --name me --role client`),
else the host's local token.
"""
import asyncio
import json
import os
import urllib.parse

import socketio

SERVER = os.environ.get("GLEITZEIT_SERVER", "http://127.0.0.1:8000")


def token():
    """GLEITZEIT_TOKEN, else the local token a host on this machine wrote
    (never sent to another machine)."""
    data = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    path = os.path.join(data, "gleitzeit", "token")
    local = urllib.parse.urlparse(SERVER).hostname in ("127.0.0.1", "localhost", "::1")
    if os.environ.get("GLEITZEIT_TOKEN") or not local or not os.path.exists(path):
        return os.environ.get("GLEITZEIT_TOKEN")
    with open(path) as file:
        return file.read().strip()


WORKFLOW = {
    "name": "Mixed providers",
    "tasks": [
        {"id": "greet", "protocol": "echo/v1", "method": "echo",
         "params": {"message": "hello from python"}},
        {"id": "shout", "protocol": "text/v1", "method": "upper", "dependencies": ["greet"],
         "params": {"text": "${greet.result.echoed}"}},
        {"id": "measure", "protocol": "text/v1", "method": "count", "dependencies": ["shout"],
         "params": {"text": "${shout.result.text}"}},
        {"id": "report", "protocol": "echo/v1", "method": "echo", "dependencies": ["shout", "measure"],
         "params": {"message": "${shout.result.text} has ${measure.result.words} words"}},
    ],
}


async def main():
    sio = socketio.AsyncClient()
    finished = {}

    @sio.on("workflow_completed")
    async def workflow_completed(event):
        finished[event["workflow_id"]] = event["status"]

    @sio.on("task_result")
    async def task_result(event):
        print("task", event["task_id"], event["status"], flush=True)

    await sio.connect(SERVER, auth={"token": token()})
    reply = await sio.call("submit_workflow", {"workflow": WORKFLOW})
    if "error" in reply:
        raise SystemExit(reply["error"]["message"])
    workflow_id = reply["workflow_id"]
    while workflow_id not in finished:
        await asyncio.sleep(0.05)
    report = await sio.call("get_workflow", {"workflow_id": workflow_id})
    print(json.dumps(report))
    await sio.disconnect()


asyncio.run(asyncio.wait_for(main(), 60))
