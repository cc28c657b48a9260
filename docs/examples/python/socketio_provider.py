"""A Gleitzeit remote provider in Python over the bare protocol
(python-socketio, no gleitzeit package): protocol text/v1.

Run: GLEITZEIT_SERVER=http://127.0.0.1:8000 python3 socketio_provider.py
Token: GLEITZEIT_TOKEN (make one with `gleitzeit token create --name text-worker
--role provider --protocol text/v1`), else the host's local token.
Needs: pip install "python-socketio[asyncio_client]" aiohttp
REPLY_BY_EVENT=1 returns nothing (python-socketio then acks with no value) and
sends the answer as a `method_result` event, as a provider whose answer comes
later would.
"""
import asyncio
import os
import urllib.parse

import socketio

SERVER = os.environ.get("GLEITZEIT_SERVER", "http://127.0.0.1:8000")
PROVIDER_ID = os.environ.get("PROVIDER_ID", "text-python")
REPLY_BY_EVENT = os.environ.get("REPLY_BY_EVENT") == "1"


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


METHODS = {
    "upper": lambda p: {"text": p["text"].upper()},
    "count": lambda p: {"length": len(p["text"]), "words": len(p["text"].split())},
}

sio = socketio.AsyncClient()


@sio.event
async def connect():
    # Register (again) on every connect: the host forgets providers that leave.
    reply = await sio.call("register_provider", {
        "provider_id": PROVIDER_ID,
        "protocol_id": "text/v1",
        "supported_methods": list(METHODS),
        "max_concurrent": 8,
    })
    if "error" in reply:
        raise SystemExit(f"registration refused: {reply['error']['message']}")
    print("registered", reply["provider_id"], flush=True)


def run(call):
    method = METHODS.get(call["method"])
    if method is None:
        return {"error": {"code": -32601, "message": f"no method '{call['method']}'"}}
    try:
        return {"result": method(call["params"])}
    except (KeyError, TypeError, AttributeError) as e:
        return {"error": {"code": -32602, "message": f"invalid params: {e!r}"}}


@sio.on("execute_method")
async def execute_method(call):
    # call: {jsonrpc, id, method, params, task_id, workflow_id, attempt}
    reply = run(call)
    if not REPLY_BY_EVENT:
        return reply
    await sio.emit("method_result", {"id": call["id"], **reply})


async def main():
    await sio.connect(SERVER, auth={"token": token()})
    await sio.wait()


asyncio.run(main())
