"""ttfleet: a Python client for the ttfleet broker.

    import ttfleet
    c = ttfleet.Client(broker="tcp://127.0.0.1:5555", tenant="ci")
    env = c.env_create("web", images=[("sleeper", 2)], cpu=1, mem_mib=256)
    print(env.vms[0].ip)
    c.env_delete("web")

Each method sends one Request (schema/ttfleet.proto) over 7/MDP and returns
the reply's result message (EnvInfo, HostInfo, ...), or raises the
BrokerError subclass of the reply's status (ttfleet.NotFound, ...) or
ttfleet.TransportError when no reply came after every attempt.
"""

from .errors import (AlreadyExists, BadRequest, BrokerError, Error, Forbidden, InProgress,
                     Internal, InvalidState, KeyFileError, NoCapacity, NotFound, TooLarge,
                     TooSoon, TransportError, Unavailable, UnknownService, WorkerFailed,
                     WorkerTimeout)
from .client import Client, pb

__all__ = ["Client", "pb", "Error", "BrokerError", "TransportError", "KeyFileError",
           "BadRequest", "NotFound", "AlreadyExists", "NoCapacity", "TooSoon", "InvalidState",
           "Forbidden", "InProgress", "WorkerFailed", "WorkerTimeout", "Internal",
           "UnknownService", "Unavailable", "TooLarge"]
__version__ = "0.1.0"
