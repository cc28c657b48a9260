"""The token and origin of docs/security.md's settings example work: the
example secret connects as client "ci", the listed origin is let in, the
host's own page is, another is not. Prints "ok"."""
import asyncio
import os

import socketio

SERVER = os.environ["GLEITZEIT_SERVER"]
SECRET = "gzt_example_only_replace_me"


async def connects(**options):
    sio = socketio.AsyncClient(reconnection=False)
    try:
        await sio.connect(SERVER, auth={"token": SECRET}, **options)
    except socketio.exceptions.ConnectionError:
        return False
    reply = await sio.call("list_workflows", {}, timeout=10)
    assert "workflows" in reply, reply
    refused = await sio.call("list_plugins", {}, timeout=10)
    assert refused["error"]["code"] == -32015 and "a client token" in refused["error"]["message"], refused
    await sio.disconnect()
    return True


async def main():
    assert await connects()
    assert await connects(headers={"Origin": "https://dash.example.com"})
    assert not await connects(headers={"Origin": "https://other.example.com"})
    print("ok")


asyncio.run(main())
