"""Run the hello workflow on a host and print each task's result, with the
`gleitzeit` package (pip install ./clients/python). See docs/python.md."""
import asyncio

from gleitzeit import GleitzeitClient


async def main():
    # The host and token: GLEITZEIT_SERVER and GLEITZEIT_TOKEN, else the
    # local host and the local token it wrote (as the CLI finds them).
    async with GleitzeitClient() as client:
        results = await client.run_workflow("workflows/hello.yaml")
        for task_id, task in results.items():
            print(task_id, task.status, task.result["echoed" if task_id != "summary" else "response"])


asyncio.run(main())
