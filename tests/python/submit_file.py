"""Submit the workflow (JSON) given on stdin; print its report as JSON.
A list submits each; an entry `{"workflow": ..., "inputs": ...}` is sent as
the payload it is. Optional argv[1]: a workflow id to cancel once any task
of it completed.
"""
import asyncio
import json
import os
import sys

import socketio

SERVER = os.environ["GLEITZEIT_SERVER"]
AUTH = {"token": os.environ.get("GLEITZEIT_TOKEN")}


async def main():
    workflows = json.load(sys.stdin)
    if isinstance(workflows, dict):
        workflows = [workflows]
    cancel = sys.argv[1] if len(sys.argv) > 1 else None
    sio = socketio.AsyncClient()
    finished = set()
    started = set()
    progress = {}

    @sio.on("task_progress")
    async def task_progress(event):
        progress.setdefault(event["workflow_id"], []).append(event)

    @sio.on("workflow_completed")
    async def completed(event):
        finished.add(event["workflow_id"])

    @sio.on("task_result")
    async def task_result(event):
        if event["workflow_id"] == cancel and event["status"] == "completed" and cancel not in started:
            started.add(cancel)
            reply = await sio.call("cancel_workflow", {"workflow_id": cancel})
            assert reply.get("cancelled"), reply

    await sio.connect(SERVER, auth=AUTH)
    ids = []
    for workflow in workflows:
        payload = workflow if "workflow" in workflow else {"workflow": workflow}
        reply = await sio.call("submit_workflow", payload)
        assert "error" not in reply, reply
        ids.append(reply["workflow_id"])
    while not all(i in finished for i in ids):
        await asyncio.sleep(0.05)
    reports = [await sio.call("get_workflow", {"workflow_id": i}) for i in ids]
    for report in reports:
        report["progress_events"] = progress.get(report["workflow_id"], [])
    print(json.dumps(reports))
    await sio.disconnect()


asyncio.run(asyncio.wait_for(main(), 120))
