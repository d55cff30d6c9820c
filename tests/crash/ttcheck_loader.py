"""tools/ttcheck as a module (it is a script without a .py suffix)."""

import importlib.machinery
import importlib.util
import os

SOURCE = os.environ.get("TTFLEET_SOURCE") or os.path.abspath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def load():
    path = os.path.join(SOURCE, "tools", "ttcheck")
    loader = importlib.machinery.SourceFileLoader("ttcheck", path)
    spec = importlib.util.spec_from_loader("ttcheck", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod
