"""ttfleet: a Python client for the ttfleet broker.

The high-level API (ttfleet.sdk; README.md in this directory):

    import ttfleet
    client = ttfleet.Client(broker="tcp://127.0.0.1:5555", tenant="ci")
    with client.env("ci", image="debian12", dup=3, cpu=2, mem_mib=2048,
                    ready="ssh", timeout="10m") as env:
        env.vms[0].exec(["make", "test"], check=True)

returns dataclasses with string enums (ttfleet.models); ttfleet.aio has the
same on asyncio, ttfleet.pytest_plugin the ttfleet_env fixture.

The low-level methods, one per broker op:

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

from . import durations, errors
from .errors import *  # noqa: F401,F403 (Error, BrokerError, one class per Status)
from .client import Client, pb
from .models import EnvInfo, EnvState, Event, ExecResult, PortMap, VmInfo, VmState
from .sdk import VM, Env, EnvContext, ExecError

__all__ = (["Client", "pb", "errors", "durations", "Env", "VM", "EnvContext", "ExecError",
            "ExecResult", "EnvInfo", "VmInfo", "PortMap", "Event", "VmState", "EnvState"]
           + errors.__all__)
__version__ = "0.1.0"
