#!/usr/bin/env python3
"""The host crate's import graph between its top-level modules, and its circles.

Reads every `crate::NAME` (and `super::NAME` at the top of a module) in
host/src, draws an arrow from the module a file belongs to to the module it
names, and prints each module's arrows and every circle (a strongly
connected group of two or more modules). Exit status 1 if there is a
circle among the modules named with --acyclic (all, by default).

  scripts/layers.py                 # the whole graph and its circles
  scripts/layers.py --acyclic model # fail if `model` is in a circle
  scripts/layers.py --uses model    # what `model` names
"""

import argparse
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent / "host" / "src"
REFERENCE = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")


def module_of(path: pathlib.Path) -> str:
    """The top-level module a source file belongs to (`lib` for lib.rs)."""
    relative = path.relative_to(ROOT)
    return relative.parts[0].removesuffix(".rs")


def strip_comments(text: str) -> str:
    """The text without `//` comments (doc comments name modules in prose)."""
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


def graph() -> dict[str, set[str]]:
    arrows: dict[str, set[str]] = {}
    modules = {module_of(p) for p in ROOT.rglob("*.rs")}
    for path in ROOT.rglob("*.rs"):
        if path.name in ("tests.rs",) or "tests" in path.relative_to(ROOT).parts[:-1]:
            continue  # test modules may reach anywhere
        source = module_of(path)
        text = strip_comments(path.read_text())
        # `#[cfg(test)] mod tests { ... }` at the end of a file is not the module's.
        text = text.split("#[cfg(test)]\nmod tests", 1)[0]
        named = {m for m in REFERENCE.findall(text) if m in modules and m != source}
        arrows.setdefault(source, set()).update(named)
    return arrows


def circles(arrows: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of two or more modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for next_node in sorted(arrows.get(node, ())):
            if next_node not in index:
                visit(next_node)
                low[node] = min(low[node], low[next_node])
            elif next_node in on_stack:
                low[node] = min(low[node], index[next_node])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for node in sorted(arrows):
        if node not in index:
            visit(node)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--acyclic", nargs="*", help="modules that must be in no circle")
    parser.add_argument("--uses", help="print only what this module names")
    args = parser.parse_args()
    arrows = graph()
    if args.uses:
        print(" ".join(sorted(arrows.get(args.uses, ()))))
        return 0
    for module in sorted(arrows):
        print(f"{module} -> {', '.join(sorted(arrows[module])) or '(nothing)'}")
    groups = circles(arrows)
    for group in groups:
        print(f"circle: {' <-> '.join(group)}")
    watched = set(args.acyclic) if args.acyclic else set(arrows)
    bad = [g for g in groups if watched & set(g)]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
