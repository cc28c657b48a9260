"""The bridge to the WIT bindings componentize-py generates (`wit_world`),
which exist only inside a component build: the rest of the SDK imports
without them, so providers can be unit-tested with plain CPython."""
import json
import traceback

from componentize_py_types import Err
from wit_world.imports import types

from . import INTERNAL_ERROR, Context, PluginError


def world_of(provider):
    class WitWorld:
        def describe(self) -> types.ProviderSpec:
            spec = provider.describe()
            methods = [types.MethodSpec(m["name"], m["description"], json.dumps(m["params_schema"]))
                       for m in spec["methods"]]
            return types.ProviderSpec(spec["protocol"], spec["name"], spec["version"], spec["description"], methods)

        def execute(self, ctx: types.TaskContext, method: str, params: str) -> str:
            context = Context(method, ctx.task_id, ctx.workflow_id, ctx.attempt)
            try:
                return json.dumps(provider.call(context, params), allow_nan=False)
            except PluginError as e:
                data = None if e.data is None else json.dumps(e.data)
                raise Err(types.RpcError(e.code, e.message, data, e.retryable))
            except Exception as e:  # noqa: BLE001 - every failure becomes the task's error
                raise Err(types.RpcError(INTERNAL_ERROR, describe(e), None, False))

    return WitWorld


def describe(error: Exception) -> str:
    """The error, where it was raised, and for a module missing at run time
    how to bring it into the build."""
    where = traceback.extract_tb(error.__traceback__)[-1]
    message = f"{type(error).__name__}: {error} (at {where.filename}:{where.lineno})"
    if isinstance(error, ModuleNotFoundError):
        message += (f"; a plugin holds only the modules imported when it was built: import '{error.name}' at "
                    f"module level, or build with --import {error.name}")
    return message
