"""Plain results of the high-level API: dataclasses and string enums.

Field names are the .proto's (schema/ttfleet.proto); enum values are the
enum names without their prefix, lower case ("running", not VM_RUNNING = 1).
A string enum compares equal to its text: ``vm.state == "running"``.
"""

import enum
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional, Sequence, Union

from . import ttfleet_pb2 as pb


class VmState(str, enum.Enum):
    """A VM's state (the .proto's VmState without the VM_ prefix)."""
    ABSENT = "absent"
    RUNNING = "running"
    STOPPED = "stopped"
    PAUSED = "paused"
    DEAD = "dead"
    PENDING = "pending"
    LOST = "lost"
    SUSPENDED = "suspended"

    def __str__(self) -> str:
        return self.value


class EnvState(str, enum.Enum):
    """An env's state as the broker reports it (EnvInfo.state)."""
    QUEUED = "queued"
    CREATING = "creating"
    RUNNING = "running"
    STARTING = "starting"
    STOPPING = "stopping"
    STOPPED = "stopped"
    PAUSING = "pausing"
    PAUSED = "paused"
    RESUMING = "resuming"
    SUSPENDING = "suspending"
    SUSPENDED = "suspended"
    DEGRADED = "degraded"
    DELETING = "deleting"

    def __str__(self) -> str:
        return self.value


def vm_state(number: int) -> Union[VmState, str]:
    """VmState of a .proto number ("state N" for a number this package does
    not know)."""
    try:
        return VmState(pb.VmState.Name(number)[len("VM_"):].lower())
    except ValueError:
        return "state %d" % number


def env_state(text: str) -> Union[EnvState, str]:
    """EnvState of the broker's text (the text itself when it is new)."""
    try:
        return EnvState(text)
    except ValueError:
        return text


Labels = Union[Dict[str, str], Sequence[str]]


def label_list(labels: Optional[Labels]) -> List[str]:
    """["KEY=VALUE", ...] of a dict {KEY: VALUE} or of such strings (the
    broker checks them: KEY 1..63 of A-Z a-z 0-9 . _ - / starting with a
    letter or digit, VALUE 0..63 of A-Z a-z 0-9 . _ -, at most 16)."""
    if not labels:
        return []
    if isinstance(labels, dict):
        return ["%s=%s" % (k, v) for k, v in labels.items()]
    if isinstance(labels, str):
        raise TypeError("labels: a dict or a list of KEY=VALUE strings, not one string")
    return [str(x) for x in labels]


def _plain(value: Any) -> Any:
    """value as JSON has it: a string enum as its text, a dataclass of this
    module as its dict, lists element by element."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return value


def _dict_of(obj: Any, cls: type) -> Dict[str, Any]:
    return {f.name: _plain(getattr(obj, f.name)) for f in fields(cls)}


@dataclass
class PortMap:
    """A guest port and the public port on its host that reaches it."""
    guest: int
    public: int

    def to_dict(self) -> Dict[str, Any]:
        """The JSON of ttctl --json and REST (gw/pbjson.h)."""
        return _dict_of(self, PortMap)


@dataclass
class VmInfo:
    """One VM as env show reports it (VmInfo of the .proto)."""
    vm_id: int
    host: str
    image: str
    engine: str
    ip: str
    mac: str
    cpu: int
    mem_mib: int
    disk_mib: int
    state: Union[VmState, str]
    ports: List[PortMap] = field(default_factory=list)
    ready: bool = False
    ready_at: int = 0
    ready_detail: str = ""
    public_address: str = ""
    pull_done: int = 0
    pull_total: int = 0
    image_digest: str = ""
    boot: str = ""  # "snapshot" (restored from a template), "cold", "" (not yet)

    @classmethod
    def from_pb(cls, m: "pb.VmInfo") -> "VmInfo":
        return cls(vm_id=m.vm_id, host=m.host, image=m.image, engine=m.engine, ip=m.ip,
                   mac=m.mac, cpu=m.cpu, mem_mib=m.mem_mib, disk_mib=m.disk_mib,
                   state=vm_state(m.state),
                   ports=[PortMap(p.guest, getattr(p, "public")) for p in m.ports],
                   ready=m.ready, ready_at=m.ready_at, ready_detail=m.ready_detail,
                   public_address=m.public_address, pull_done=m.pull_done,
                   pull_total=m.pull_total, image_digest=m.image_digest, boot=m.boot)

    def to_dict(self) -> Dict[str, Any]:
        """The VM as ttctl --json and REST write it: the .proto's field
        names, enums as lower-case text ("running")."""
        return _dict_of(self, VmInfo)

    def public_port(self, guest: int) -> Optional[int]:
        """The public port of a guest port (None when it has none)."""
        for p in self.ports:
            if p.guest == guest:
                return p.public
        return None


@dataclass
class EnvInfo:
    """An env (EnvInfo of the .proto); vms is empty in a list."""
    name: str
    tenant: str
    state: Union[EnvState, str]
    created_at: int = 0
    expires_at: int = 0
    lifetime: int = 0
    deny_outgoing: bool = False
    vm_count: int = 0
    vms: List[VmInfo] = field(default_factory=list)
    ports: List[int] = field(default_factory=list)
    queue_position: int = 0
    queue_deadline: int = 0
    priority: int = 0
    labels: List[str] = field(default_factory=list)

    @classmethod
    def from_pb(cls, m: "pb.EnvInfo") -> "EnvInfo":
        return cls(name=m.name, tenant=m.tenant, state=env_state(m.state),
                   created_at=m.created_at, expires_at=m.expires_at, lifetime=m.lifetime,
                   deny_outgoing=m.deny_outgoing, vm_count=m.vm_count,
                   vms=[VmInfo.from_pb(v) for v in m.vms], ports=list(m.ports),
                   queue_position=m.queue_position, queue_deadline=m.queue_deadline,
                   priority=m.priority, labels=list(m.labels))

    @property
    def label_dict(self) -> Dict[str, str]:
        """The labels as {KEY: VALUE}."""
        return dict(x.split("=", 1) for x in self.labels)

    def to_dict(self) -> Dict[str, Any]:
        """The env as ttctl --json and GET /v1/envs/NAME write it: the
        .proto's field names, enums as lower-case text."""
        return _dict_of(self, EnvInfo)


@dataclass
class ExecResult:
    """What a command run in a VM did. stdout/stderr are the output as text
    (UTF-8, undecodable bytes replaced), stdout_bytes/stderr_bytes as
    received (at most 1 MiB each; *_truncated when the command wrote
    more). exit_code is -1 when a signal killed it (signal says which);
    timed_out when the worker killed it at the timeout."""
    argv: List[str]
    exit_code: int
    stdout: str
    stderr: str
    stdout_bytes: bytes = b""
    stderr_bytes: bytes = b""
    signal: int = 0
    timed_out: bool = False
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    host: str = ""
    vm_id: int = 0

    @property
    def ok(self) -> bool:
        """It ran to the end and exited 0."""
        return self.exit_code == 0 and not self.timed_out


@dataclass
class Event:
    """One broker event (Event of the .proto); kind is its topic, e.g.
    "env.created", "vm.state"."""
    kind: str
    time: int
    tenant: str
    env: str
    host: str
    vm_id: int
    state: str
    message: str
    labels: List[str] = field(default_factory=list)
    id: int = 0  # its id in the broker's event log: grows across restarts

    @classmethod
    def from_pb(cls, m: "pb.Event") -> "Event":
        return cls(kind=m.kind, time=m.time, tenant=m.tenant, env=m.env, host=m.host,
                   vm_id=m.vm_id, state=m.state, message=m.message, labels=list(m.labels),
                   id=m.id)
