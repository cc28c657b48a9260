"""The client's model helpers (chat, vision, batch_process, batch_chat)
against a host whose llm/v1 plugin talks to the Ollama test server: each
answer is the text the model gave, as the test server words it; and
execute_python on its python/v1 plugin (the SDK's run-python). Text with
`${` in it is sent as it is, never read as a reference. Prints "ok"."""
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
        answer = await client.chat("Say ${name} and $${x}", model="llama3")
        assert answer == "llama3 replies to 1 message(s): Say ${name} and $${x}", answer

        with tempfile.TemporaryDirectory() as folder:
            image = Path(folder, "pixel.png")
            image.write_bytes(b"\x89PNG\r\n")
            answer = await client.vision(image, "What is it?")
            assert answer == "llava sees 1 image(s) of 6 bytes: What is it?", answer

            docs = Path(folder, "docs")
            docs.mkdir()
            for name, text in [("a.txt", "Owls hunt at night."), ("b.txt", "Bats see by sound."), ("c.md", "skip")]:
                Path(docs, name).write_text(text)
            # The original's argument order: directory, pattern, prompt.
            summary = await client.batch_chat(docs, "*.txt", "Summarize ${it}", model="llama3")
            assert (summary["total_files"], summary["successful"], summary["failed"]) == (2, 2, 0), summary
            assert summary["summary"]["total"] == 2 and summary["parameters"]["pattern"] == "*.txt", summary
            assert summary["batch_id"] and summary["created_at"], summary
            answers = {Path(path).name: answer for path, answer in summary["results"].items()}
            assert answers == {
                "a.txt": {"status": "success", "content": "llama3 replies to 1 message(s): Summarize ${it}\n\nOwls hunt at night."},
                "b.txt": {"status": "success", "content": "llama3 replies to 1 message(s): Summarize ${it}\n\nBats see by sound."},
            }, answers
            # Images to a vision model, and a file list to generate; a failed
            # file is in the summary, not an exception.
            pictures = await client.batch_process(files=[image], method="llm/vision", prompt="What?", model="llava")
            assert pictures["results"][str(image)] == {"status": "success", "content": "llava sees 1 image(s) of 6 bytes: What?"}, pictures
            mixed = await client.batch_process(files=[Path(docs, "c.md")], method="llm/generate", prompt="Go", model="nope")
            assert mixed["failed"] == 1 and "nope" in mixed["results"][str(Path(docs, "c.md"))]["error"], mixed

            script = Path(folder, "stats.py")
            script.write_text("import statistics\nresult = {'mean': statistics.mean(numbers), 'note': '${x}'}\nprint(context['numbers'])\n")
            assert await client.execute_python(script, {"numbers": [1, 2, 6]}) == {"mean": 3, "note": "${x}"}
            assert await client.execute_python(code="result = a * 2", context={"a": 21}) == 42
            counter = Path(folder, "count.py")
            counter.write_text("result = {'name': file_path.rsplit('/', 1)[-1], 'words': len(file_content.split())}\n")
            counted = await client.batch_python(docs, "*.txt", counter)
            assert counted["successful"] == 2, counted
            words = {r["result"]["name"]: r["result"]["words"] for r in counted["results"].values()}
            assert words == {"a.txt": 4, "b.txt": 4}, counted
            try:
                await client.execute_python(code="raise ValueError('no')")
            except TaskFailed as failed:
                assert "ValueError: no" in str(failed), failed
            else:
                raise AssertionError("a script that raised did not fail")

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
