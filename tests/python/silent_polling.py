"""A long-polling client that asks for a 10 MB report 400 times and never
polls for the answers: the daemon (GLEITZEIT_PID) stays within 400 MiB of its
resident memory before. Exits 0 and prints "ok" when that holds.
"""
import asyncio
import json
import os

import aiohttp
import socketio

SERVER = os.environ["GLEITZEIT_SERVER"]
AUTH = {"token": os.environ.get("GLEITZEIT_TOKEN")}
PID = int(os.environ["GLEITZEIT_PID"])


def rss_mib():
    with open(f"/proc/{PID}/status") as status:
        line = next(l for l in status if l.startswith("VmRSS:"))
    return int(line.split()[1]) // 1024


async def main():
    # aiohttp, under python-socketio's asyncio client, closes the WebSocket on
    # messages over 4 MiB unless told otherwise (this one receives 10 MB).
    sio = socketio.AsyncClient(websocket_extra_options={"max_msg_size": 0})
    done = asyncio.Event()
    sio.on("workflow_completed", lambda data: done.set())
    await sio.connect(SERVER, auth=AUTH)
    reply = await sio.call("submit_workflow", {"workflow": {"id": "big", "name": "big", "tasks": [
        {"id": "a", "protocol": "echo/v1", "method": "echo", "params": {"message": "x" * 10_000_000}}]}}, timeout=60)
    assert reply.get("workflow_id") == "big", reply
    await asyncio.wait_for(done.wait(), 60)
    await sio.disconnect()
    baseline = rss_mib()
    polling = f"{SERVER}/socket.io/?EIO=4&transport=polling"
    async with aiohttp.ClientSession() as http:
        opened = await (await http.get(polling)).text()
        sid = json.loads(opened[1:])["sid"]
        await http.post(f"{polling}&sid={sid}", data="40")
        requests = "\x1e".join(f'42{i}["get_workflow",{{"workflow_id":"big"}}]' for i in range(1, 401))
        posted = await http.post(f"{polling}&sid={sid}", data=requests)
        assert posted.status == 200, posted.status
        peak = 0
        for _ in range(100):  # 10 s; unbounded, it grew by 10 MB per request
            peak = max(peak, rss_mib())
            await asyncio.sleep(0.1)
    assert peak < baseline + 400, f"resident memory grew from {baseline} MiB to {peak} MiB"
    print("ok")


asyncio.run(asyncio.wait_for(main(), 120))
