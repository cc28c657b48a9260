"""`gleitzeit-plugin build [DIR]`: turn a Python provider into a component.

It runs componentize-py on DIR's module (`app` unless `--module` says
otherwise) against the WIT world shipped inside this package, with DIR, a
copy of this SDK and each `--path` on the Python path (what they hold is
bundled into the component, so the SDK is copied rather than its whole
site-packages), and writes `NAME.wasm` (NAME: the directory's name, unless
`-o` says otherwise).

The component imports our `host` interface and the WASI 0.2 interfaces
CPython needs (clocks, random, stdio, a file-system view). The host links
those with a context that grants nothing the plugin's manifest does not:
no environment, no arguments, no directory unless `read_dirs` names it, no
socket, output captured. That is why we do not pass `--stub-wasi`: stubs
would bake one random seed into the component (every call would see the
same `random` sequence) and trap on a clock read, for no gain in isolation.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

WIT = Path(__file__).resolve().parent / "wit"
WORLD = "provider"
ENTRY = "gleitzeit_entry"
# componentize-py snapshots the interpreter after importing the provider, and
# the component holds only the modules imported by then: the sandbox has no
# file system to import from later. These standard modules (some of which
# the standard library imports lazily, as `Counter.most_common` does heapq)
# are imported into every build; others need `--import` or an import at the
# provider's module level.
PRELOADED = [
    "base64", "bisect", "collections", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "enum",
    "fractions", "functools", "hashlib", "heapq", "io", "itertools", "json", "math", "operator", "random", "re",
    "statistics", "string", "textwrap", "typing", "unicodedata",
]


def entry(module: str, imports: list[str]) -> str:
    """The module componentize-py builds: the preloaded and asked-for
    imports, then the provider's `WitWorld`."""
    lines = [f"import {name}" for name in dict.fromkeys([*PRELOADED, *imports])]
    lines.append(f"from {module} import WitWorld")
    return "\n".join(lines) + "\n"


def componentize(project: Path, module: str, output: Path, paths: list[Path], imports: list[str]) -> None:
    """Build `module` of `project` into the component `output`."""
    if not (project / f"{module}.py").is_file() and not (project / module / "__init__.py").is_file():
        raise SystemExit(f"error: {project} has no module '{module}' ({module}.py or {module}/__init__.py)")
    tool = shutil.which("componentize-py") or str(Path(sys.executable).parent / "componentize-py")
    with tempfile.TemporaryDirectory(prefix="gleitzeit-plugin-") as sdk:
        shutil.copytree(Path(__file__).resolve().parent, Path(sdk) / "gleitzeit_plugin",
                        ignore=shutil.ignore_patterns("__pycache__", "wit", "build.py"))
        (Path(sdk) / f"{ENTRY}.py").write_text(entry(module, imports))
        path_args = []
        for directory in [project, Path(sdk), *paths]:
            path_args += ["-p", str(directory)]
        command = [tool, "-d", str(WIT), "-w", WORLD, "componentize", ENTRY, *path_args, "-o", str(output)]
        done = subprocess.run(command, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    if done.returncode != 0:
        raise SystemExit(f"error: componentize-py failed (exit {done.returncode}): {' '.join(command)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="gleitzeit-plugin", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build a provider into NAME.wasm")
    build.add_argument("project", nargs="?", default=".", type=Path, help="the provider's directory (default: .)")
    build.add_argument("--module", default="app", help="the module that defines WitWorld (default: app)")
    build.add_argument("-o", "--output", type=Path, help="the component to write (default: DIR/NAME.wasm)")
    build.add_argument("--path", action="append", type=Path, default=[],
                       help="another directory of modules to bundle (vendored dependencies)")
    build.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                       help="a module to import into the build (one the provider imports only when called)")
    args = parser.parse_args(argv)
    project = args.project.resolve()
    output = args.output or project / f"{project.name}.wasm"
    componentize(project, args.module, output, [p.resolve() for p in args.path], args.imports)
    print(output)


if __name__ == "__main__":
    main()
