"""python/v1: run a piece of Python with a context, sandboxed.

The original system's `python/v1` ran code on the host; this one runs it
inside the plugin's WebAssembly sandbox: no files, no network, no
environment, no processes, the task's deadline and the plugin's memory
limit. The code sees `context`'s entries as variables (and `context`
itself, as the original's scripts read it) and answers by
setting `result` (any JSON value); what it prints comes back as `stdout`.
"""
import contextlib
import io
from dataclasses import dataclass, field
from typing import Any

from gleitzeit_plugin import PluginError, Provider

provider = Provider("python/v1", name="run-python", version="0.1.0",
                    description="Run Python code with a context, in the sandbox")

MAX_STDOUT_CHARS = 1_000_000


@dataclass
class Execute:
    code: str
    context: dict[str, Any] = field(default_factory=dict)


@provider.method("Run 'code' with the 'context' entries as variables; answers its 'result' and 'stdout'")
def execute(params: Execute) -> dict:
    # The original's scripts read `context["name"]` as well as `name`.
    scope = {"__name__": "__task__", "context": params.context, **params.context}
    out = io.StringIO()
    try:
        compiled = compile(params.code, "<task code>", "exec")
    except SyntaxError as e:
        raise PluginError.invalid_params(f"the code does not parse: {e.msg} (line {e.lineno})") from None
    with contextlib.redirect_stdout(out):
        try:
            exec(compiled, scope)
        except Exception as e:  # the task's own failure, reported as such
            raise PluginError(f"the code raised {type(e).__name__}: {e}", data={"stdout": out.getvalue()[-2000:]})
    stdout = out.getvalue()
    if len(stdout) > MAX_STDOUT_CHARS:
        stdout = stdout[:MAX_STDOUT_CHARS] + "…"
    return {"result": scope.get("result"), "stdout": stdout}


WitWorld = provider.world()
