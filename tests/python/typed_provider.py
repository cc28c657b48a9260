"""A provider of text/v1 on the package's `Provider` base class, for
tests/python/provider_session.py: typed methods, progress, a bound on
calls at once (MAX_CONCURRENT), and a drain on SIGTERM. Prints "started N"
as a `slow` call starts and "drained" once it has disconnected."""
import asyncio
import os
from typing import Any, Dict, Optional

from gleitzeit import Provider, ProviderError, method


class Text(Provider):
    protocol = "text/v1"
    provider_id = "text-typed"
    running = 0
    most = 0

    @method(description="The text in capitals")
    async def upper(self, text: str) -> Dict[str, Any]:
        return {"text": text.upper()}

    @method()
    async def slow(self, seconds: float, n: int = 0) -> Dict[str, Any]:
        Text.running += 1
        Text.most = max(Text.most, Text.running)
        print("started", n, flush=True)
        await self.progress({"step": "started", "n": n})
        await asyncio.sleep(seconds)
        Text.running -= 1
        return {"n": n, "most": Text.most}

    @method()
    def fail(self, why: Optional[str] = None) -> None:
        raise ProviderError(why or "asked to fail", -32001)


Text(max_concurrent=int(os.environ.get("MAX_CONCURRENT", "2"))).serve()
print("drained", flush=True)
