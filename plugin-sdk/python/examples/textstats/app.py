"""textstats/v1: statistics of a text, as a Gleitzeit plugin in Python."""
from collections import Counter
from dataclasses import dataclass

from gleitzeit_plugin import Provider

provider = Provider("textstats/v1", version="0.1.0", description="Statistics of a text")


@dataclass
class Count:
    text: str
    top: int = 3


@provider.method("Count the words, lines and characters, and the most common words")
def count(params: Count) -> dict:
    words = params.text.lower().split()
    return {
        "words": len(words),
        "lines": len(params.text.splitlines()),
        "characters": len(params.text),
        "top": [{"word": w, "count": n} for w, n in Counter(words).most_common(params.top)],
    }


WitWorld = provider.world()
