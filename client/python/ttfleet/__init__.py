"""ttfleet: a Python client for the ttfleet broker.

    import ttfleet
    c = ttfleet.Client(broker="tcp://127.0.0.1:5555", tenant="ci")
    env = c.env_create("web", images=[("sleeper", 2)], cpu=1, mem_mib=256)
    print(env.vms[0].ip)
    c.env_delete("web")

Each method sends one Request (schema/ttfleet.proto) over 7/MDP and returns
the reply's result message (EnvInfo, HostInfo, ...), or raises the
BrokerError subclass of the reply's status (every status of the .proto's
Status enum has one: ttfleet.NotFound, ttfleet.QuotaExceeded, ...; see
ttfleet.errors) or ttfleet.TransportError when no reply came after every
attempt. A create with queue=True that waits in the admission queue returns
its EnvInfo (state "queued", queue_position) rather than raising.
"""

from . import errors
from .errors import *  # noqa: F401,F403 (Error, BrokerError, one class per Status)
from .client import Client, pb

__all__ = ["Client", "pb", "errors"] + errors.__all__
__version__ = "0.1.0"
