"""Where the client finds its host and token when not told, as the
`gleitzeit` CLI does: `GLEITZEIT_SERVER` and `GLEITZEIT_TOKEN`, else the
local host (`http://127.0.0.1:8000`) and the local admin token a host on
this machine wrote to its data directory (`GLEITZEIT_DATA_DIR`, else
`$XDG_DATA_HOME/gleitzeit`, else `~/.local/share/gleitzeit`)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Optional, Union

from .errors import GleitzeitError

LOCAL_URL = "http://127.0.0.1:8000"
TOKEN_FILE = "token"


def server(url: Optional[str]) -> str:
    return (url or os.environ.get("GLEITZEIT_SERVER") or LOCAL_URL).rstrip("/")


def data_dir(given: Optional[Union[str, "os.PathLike[str]"]]) -> Path:
    if given:
        return Path(given)
    if os.environ.get("GLEITZEIT_DATA_DIR"):
        return Path(os.environ["GLEITZEIT_DATA_DIR"])
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "gleitzeit"


def token(given: Optional[str], directory: Optional[Union[str, "os.PathLike[str]"]]) -> Optional[str]:
    """The token to show the host; none if there is none (a host without
    tokens then answers, one with tokens refuses)."""
    if given:
        return given
    if os.environ.get("GLEITZEIT_TOKEN"):
        return os.environ["GLEITZEIT_TOKEN"]
    path = data_dir(directory) / TOKEN_FILE
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise GleitzeitError(f"{path} may be read by others (mode {oct(mode & 0o777)}); chmod 600 it")
    return path.read_text().strip() or None
