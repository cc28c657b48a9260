#!/usr/bin/env python3
"""Render docs/protocol.md from docs/src/protocol.md.in, inlining each
`@@path` line with that file, so the doc shows exactly the tested examples
(tests/daemon.rs checks they match)."""
import pathlib
import re

root = pathlib.Path(__file__).resolve().parent.parent
source = (root / "docs/src/protocol.md.in").read_text()
rendered = re.sub(r"^@@(\S+)$", lambda m: (root / m.group(1)).read_text().rstrip("\n"), source, flags=re.M)
(root / "docs/protocol.md").write_text(rendered)
