"""{{protocol}}: a Gleitzeit plugin."""
from dataclasses import dataclass

from gleitzeit_plugin import Provider

provider = Provider("{{protocol}}", name="{{name}}", version="0.1.0", description="Says hello")


@dataclass
class Greet:
    name: str
    excited: bool = False


@provider.method("Greet someone by name")
def greet(params: Greet) -> dict:
    end = "!" if params.excited else "."
    return {"greeting": f"Hello, {params.name}{end}"}


WitWorld = provider.world()
