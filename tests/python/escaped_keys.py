"""Objects whose keys python-socketio escapes (every non-ASCII key:
"gr\\u00f6\\u00dfe") arrive whole, in requests and in a provider's ack.
Exits 0 and prints "ok" when every expectation holds.
"""
import asyncio
import os

import socketio

SERVER = os.environ["GLEITZEIT_SERVER"]
AUTH = {"token": os.environ.get("GLEITZEIT_TOKEN")}
RESULT = {"größe": 1, "nested": {"ключ": [{"é": "ü"}]}}


async def main():
    provider = socketio.AsyncClient()

    @provider.on("execute_method")
    async def execute(call):
        return {"result": {**RESULT, "asked": call["params"]}}

    await provider.connect(SERVER, auth=AUTH)
    reply = await provider.call("register_provider", {"provider_id": "keys", "protocol_id": "keys/v1",
                                                      "supported_methods": ["m"]})
    assert reply["provider_id"] == "keys", reply
    submitter = socketio.AsyncClient()
    done = asyncio.get_running_loop().create_future()

    @submitter.on("task_result")
    async def task_result(data):
        done.set_result(data)

    await submitter.connect(SERVER, auth=AUTH)
    reply = await submitter.call("submit_task", {"task": {"id": "t", "protocol": "keys/v1", "method": "m",
                                                          "params": {"ä": "ö"}}})
    assert reply.get("task_id") == "t", reply
    result = await asyncio.wait_for(done, 30)
    assert result["status"] == "completed", result
    assert result["result"] == {**RESULT, "asked": {"ä": "ö"}}, result["result"]
    await submitter.disconnect()
    await provider.disconnect()
    print("ok")


asyncio.run(asyncio.wait_for(main(), 60))
