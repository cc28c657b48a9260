#!/usr/bin/env python3
"""The host crate's import graph, its circles and its layers.

Reads every `crate::…` and `super::…` path in host/src, `use` trees with
nested braces included (comments, string literals and test modules left
out), draws an arrow from the module a file belongs to to the
module it names, and prints each module's arrows, every circle (a strongly
connected group of two or more modules) and every arrow that points from a
lower layer to a higher one (LAYERS below; docs/architecture.md draws
them). Exit status 1 if there is a circle among the modules named with
--acyclic (all, by default) or an arrow against the layers.

  scripts/layers.py                  # the modules of the crate
  scripts/layers.py --within daemon  # the modules inside `daemon`
  scripts/layers.py --all            # the crate and every module with submodules
  scripts/layers.py --acyclic model  # fail only if `model` is in a circle
  scripts/layers.py --uses model     # what `model` names
"""

import argparse
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent / "host" / "src"

# The layers, lowest first: a module may name modules of its own layer or
# below, never above. Within a layer the graph must still be acyclic.
LAYERS: dict[str, list[list[str]]] = {
    "": [
        ["clock", "codes", "ids", "locks", "metrics", "private_files", "schema", "text"],  # leaves
        ["cadence", "listing", "model", "report"],  # data
        ["auth", "files", "queue", "rate", "registry", "resolver", "schedule", "secrets", "workflow"],  # rules
        ["store"],
        ["engine", "plugins"],
        ["client", "daemon"],
        ["cli", "fuzzing"],
        ["lib", "main"],
    ],
}


def module_path(path: pathlib.Path) -> list[str]:
    """The module a file is: `daemon/socket/mod.rs` is daemon::socket."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "mod":
        parts.pop()
    return parts


STRING = re.compile(r'"(?:\\.|[^"\\])*"')


def strip(text: str) -> str:
    """The text without string literals (a URL holds `//`), without `//`
    comments (doc comments name modules in prose) and without a
    `#[cfg(test)] mod tests { … }` at its end."""
    text = text.split("#[cfg(test)]\nmod tests", 1)[0]
    text = STRING.sub('""', text)
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


def use_tree(text: str, at: int) -> tuple[list[list[str]], int]:
    """The paths of a `use` tree that starts at `at` (after `crate::` or
    `super::`): `a::b`, `{a, b::{c, d}}`; and where it ends."""
    name = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
    paths: list[list[str]] = []
    prefix: list[str] = []
    i = at
    while i < len(text):
        if text[i] == "{":
            depth, j = 1, i + 1
            while j < len(text) and depth:
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                j += 1
            for part in split_top(text[i + 1 : j - 1]):
                for sub in use_tree(part.strip(), 0)[0] if part.strip() else []:
                    paths.append(prefix + sub)
            return paths or [prefix], j
        m = name.match(text, i)
        if not m:
            break
        prefix.append(m.group(0))
        i = m.end()
        if text.startswith("::", i):
            i += 2
            continue
        break
    return [prefix], i


def split_top(text: str) -> list[str]:
    """`text` split at the commas outside braces."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(text):
        depth += {"{": 1, "}": -1}.get(c, 0)
        if c == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


HEAD = re.compile(r"\b(crate|(?:super::)*super)::")


def references(module: list[str], text: str) -> set[tuple[str, ...]]:
    """The module paths `text` names, as paths from the crate root."""
    found = set()
    for m in HEAD.finditer(text):
        head = m.group(1)
        base = [] if head == "crate" else module[: len(module) - head.count("super")]
        for path in use_tree(text, m.end())[0]:
            found.add(tuple(base + [p for p in path if p != "self"]))
    return found


def graph(within: list[str]) -> dict[str, set[str]]:
    """Arrows between the modules directly inside `within` ([] is the crate)."""
    depth = len(within)
    files = [p for p in ROOT.rglob("*.rs") if p.name != "tests.rs" and "tests" not in p.parts]
    units = {tuple(module_path(p)[: depth + 1]) for p in files if module_path(p)[:depth] == within}
    units = {u for u in units if len(u) == depth + 1}
    arrows: dict[str, set[str]] = {u[-1]: set() for u in units}
    for path in files:
        module = module_path(path)
        if module[:depth] != within or len(module) <= depth:
            continue  # outside, or the parent's own mod.rs
        source = module[depth]
        for ref in references(module, strip(path.read_text())):
            unit = ref[: depth + 1]
            if unit in units and unit[-1] != source:
                arrows[source].add(unit[-1])
    if not within:
        arrows.setdefault("lib", set())
        arrows.setdefault("main", set())
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


def upward(arrows: dict[str, set[str]], layers: list[list[str]]) -> list[str]:
    """Arrows from a lower layer to a higher one, and modules in no layer."""
    level = {m: i for i, layer in enumerate(layers) for m in layer}
    problems = [f"{m} is in no layer (scripts/layers.py LAYERS)" for m in sorted(arrows) if m not in level]
    for source in sorted(arrows):
        for target in sorted(arrows[source]):
            if source in level and target in level and level[target] > level[source]:
                problems.append(f"upward: {source} -> {target}")
    return problems


def report(within: list[str], acyclic: list[str] | None, quiet: bool) -> bool:
    """Print one graph; whether it keeps the rules."""
    arrows = graph(within)
    prefix = "::".join(within) + "::" if within else ""
    if not quiet:
        for module in sorted(arrows):
            print(f"{prefix}{module} -> {', '.join(sorted(arrows[module])) or '(nothing)'}")
    groups = circles(arrows)
    watched = set(acyclic) if acyclic else set(arrows)
    bad = [g for g in groups if watched & set(g)]
    for group in groups:
        print(f"circle: {' <-> '.join(prefix + m for m in group)}")
    layers = LAYERS.get("::".join(within))
    problems = upward(arrows, layers) if layers else []
    for problem in problems:
        print(problem)
    return not bad and not problems


def parents() -> list[list[str]]:
    """Every module that has submodules of its own (`x/mod.rs` or `x.rs`
    beside `x/`)."""
    paths = {tuple(module_path(p)) for p in ROOT.rglob("*.rs")}
    return sorted({path[:i] for path in paths for i in range(1, len(path))})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--acyclic", nargs="*", help="modules that must be in no circle (all if none named)")
    parser.add_argument("--within", default="", help="a module whose submodules to draw (daemon, daemon::socket)")
    parser.add_argument("--all", action="store_true", help="the crate and every module with submodules")
    parser.add_argument("--uses", help="print only what this module names")
    parser.add_argument("--quiet", action="store_true", help="print only circles and upward arrows")
    args = parser.parse_args()
    within = [p for p in args.within.split("::") if p]
    if args.uses:
        print(" ".join(sorted(graph(within).get(args.uses, ()))))
        return 0
    scopes = [[]] + [list(p) for p in parents()] if args.all else [within]
    ok = all([report(scope, args.acyclic, args.quiet) for scope in scopes])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
