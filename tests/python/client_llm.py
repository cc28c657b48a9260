"""The client's model helpers (chat, vision, batch_chat) against a host
whose llm/v1 plugin talks to the Ollama test server: each answer is the
text the model gave, as the test server words it. Prints "ok"."""
import asyncio
import tempfile
from pathlib import Path

from gleitzeit import GleitzeitClient, SyncGleitzeitClient, TaskFailed


async def main() -> None:
    async with GleitzeitClient(persistence="memory") as client:
        answer = await client.chat(prompt="What is the capital of France?", temperature=0.3)
        assert answer == "llama3 replies to 1 message(s): What is the capital of France?", answer
        answer = await client.chat("Hi", system="Be brief", model="llama3:latest")
        assert answer == "llama3:latest replies to 2 message(s): Hi", answer

        with tempfile.TemporaryDirectory() as folder:
            image = Path(folder, "pixel.png")
            image.write_bytes(b"\x89PNG\r\n")
            answer = await client.vision(image, "What is it?")
            assert answer == "llava sees 1 image(s) of 6 bytes: What is it?", answer

            docs = Path(folder, "docs")
            docs.mkdir()
            for name, text in [("a.txt", "Owls hunt at night."), ("b.txt", "Bats see by sound."), ("c.md", "skip")]:
                Path(docs, name).write_text(text)
            summary = await client.batch_chat(directory=docs, pattern="*.txt", prompt="Summarize", model="llama3")
            assert (summary["total_files"], summary["successful"], summary["failed"]) == (2, 2, 0), summary
            assert summary["batch_id"], summary
            answers = {Path(path).name: text for path, text in summary["results"].items()}
            assert answers == {
                "a.txt": "llama3 replies to 1 message(s): Summarize\n\nOwls hunt at night.",
                "b.txt": "llama3 replies to 1 message(s): Summarize\n\nBats see by sound.",
            }, answers

        # A model the server does not have: the task's failure, as an exception.
        try:
            await client.chat("Hi", model="no-such-model")
        except TaskFailed as failed:
            assert "no-such-model" in str(failed), failed
        else:
            raise AssertionError("a missing model did not fail")



asyncio.run(main())
with SyncGleitzeitClient() as blocking:
    assert blocking.chat("Hello") == "llama3 replies to 1 message(s): Hello"
print("ok")
