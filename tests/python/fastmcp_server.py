"""A small FastMCP server (fastmcp from PyPI) for the mcp/v1 tests, over
Streamable HTTP on 127.0.0.1:$PORT/mcp. With $REQUIRE_TOKEN set, every
request must carry `Authorization: Bearer $REQUIRE_TOKEN` (else 401), as
a hosted MCP server wants its key."""
import os

from fastmcp import FastMCP
from fastmcp.exceptions import ToolError

mcp = FastMCP("gleitzeit-test")


@mcp.tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


# echo, multiply and concat are the tools the original system's examples
# call besides add.
@mcp.tool
def echo(message: str) -> str:
    """The message, as it came."""
    return message


@mcp.tool
def multiply(a: float, b: float) -> float:
    """Multiply two numbers."""
    return a * b


@mcp.tool
def concat(strings: list[str], separator: str = "") -> str:
    """The strings joined by the separator."""
    return separator.join(strings)


@mcp.tool
def shout(text: str) -> str:
    """The text in capitals."""
    return text.upper()


@mcp.tool
def refuse(reason: str) -> str:
    """Always fails, with the reason given."""
    raise ToolError(f"refused: {reason}")


@mcp.resource("notes://greeting")
def greeting() -> str:
    """A fixed note."""
    return "hello from a resource"


@mcp.prompt
def review(topic: str) -> str:
    """Ask for a review of a topic."""
    return f"Please review {topic}."


class RequireToken:
    """ASGI middleware: 401 unless the request shows the token."""

    def __init__(self, app, token):
        self.app, self.wanted = app, f"Bearer {token}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and dict(scope["headers"]).get(b"authorization") != self.wanted:
            await send({"type": "http.response.start", "status": 401, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"a bearer token is required"})
            return
        await self.app(scope, receive, send)


if __name__ == "__main__":
    port = int(os.environ["PORT"])
    token = os.environ.get("REQUIRE_TOKEN")
    if token:
        import uvicorn

        uvicorn.run(RequireToken(mcp.http_app(), token), host="127.0.0.1", port=port, log_level="info")
    else:
        mcp.run(transport="http", host="127.0.0.1", port=port, show_banner=False)
