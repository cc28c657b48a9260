"""A Gleitzeit remote provider on the `gleitzeit` package's base class:
protocol text/v1, as socketio_provider.py serves it over the bare protocol.

Run: GLEITZEIT_SERVER=http://127.0.0.1:8000 python3 provider.py
Token: GLEITZEIT_TOKEN (a token of role provider for text/v1), else the
host's local token. Needs: pip install ./clients/python
"""
from typing import Any, Dict

from gleitzeit import Provider, method


class Text(Provider):
    protocol = "text/v1"
    provider_id = "text-python"
    max_concurrent = 8

    @method(description="The text in capitals")
    def upper(self, text: str) -> Dict[str, Any]:
        return {"text": text.upper()}

    @method(description="Its length and words")
    def count(self, text: str) -> Dict[str, Any]:
        return {"length": len(text), "words": len(text.split())}


if __name__ == "__main__":
    Text().serve()  # until SIGTERM or Ctrl-C, then it drains
