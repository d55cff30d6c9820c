"""Exceptions: one class per status of schema/ttfleet.proto's Status enum
other than OK (when each is returned: schema/PROTOCOL.md), all subclasses of
BrokerError, plus TransportError when no reply came and KeyFileError for a
CURVE certificate that cannot be loaded.

The status classes are made at import from the protobuf descriptor (so a
status added to the .proto has its class the day the package is rebuilt)
and set as attributes of this module and of the ttfleet package: the class
of QUOTA_EXCEEDED is ttfleet.QuotaExceeded, of GUEST_UNREACHABLE
ttfleet.GuestUnreachable, and so on (TIMEOUT's is WorkerTimeout, to keep it
apart from Python's TimeoutError). STATUS_DOCS says what each one means.
"""

from typing import Dict, List, Optional, Type

from . import ttfleet_pb2 as _pb


class Error(Exception):
    """Every error this package raises."""


class TransportError(Error):
    """No reply from the broker after every attempt."""


class KeyFileError(Error):
    """A CURVE certificate is missing or unusable."""


class BrokerError(Error):
    """The broker answered with a status other than OK.

    status: the Status name (e.g. "NOT_FOUND"); message: the broker's text;
    request_id: the request's id; op: the Request op (e.g. "env_create")."""
    status: Optional[str] = None
    code: Optional[int] = None  # the Status number

    def __init__(self, message: str, request_id: str = "", op: str = ""):
        super().__init__("%s%s: %s" % (op + ": " if op else "", self.status, message))
        self.message = message
        self.request_id = request_id
        self.op = op


# What each status means to a caller. A status of the .proto that has no
# line here still gets its class (with a doc that says so); the package's
# tests fail until it has one.
STATUS_DOCS: Dict[str, str] = {
    "BAD_REQUEST": "Malformed request or a field out of range.",
    "NOT_FOUND": "No such env (for this tenant), VM, host, image or key.",
    "ALREADY_EXISTS": "The env name is taken for this tenant.",
    "NO_CAPACITY": "No host can take it; the message says total, used and wanted.",
    "TOO_SOON": "Stop/start within the minimum interval.",
    "INVALID_STATE": "Not allowed in the env's current state.",
    "FORBIDDEN": "Needs the admin role (or over a limit, e.g. a lifetime).",
    "IN_PROGRESS": "The same request id is still running.",
    "WORKER_FAILED": "A worker refused or failed; nothing was kept.",
    "TIMEOUT": "A worker did not answer in time; nothing was kept.",
    "INTERNAL": "The broker could not persist; nothing changed.",
    "UNKNOWN_SERVICE": "MDP service not served.",
    "UNAVAILABLE": "No online host offers the engine or image.",
    "TOO_LARGE": "A frame, body or file over the limits.",
    "QUOTA_EXCEEDED": "Over the tenant's quota; the message names the resource, used, "
                      "limit and wanted.",
    "QUEUED": "A create with queue=True was accepted into the admission queue. "
              "Client.env_create returns the EnvInfo (state 'queued', queue_position) "
              "instead of raising this; other callers of the raw protocol may see it.",
    "QUEUE_FULL": "The admission queue (or the tenant's share of it) is full.",
    "QUEUE_EXPIRED": "A queued create's max_wait passed before capacity freed.",
    "QUEUE_CANCELLED": "A queued create was cancelled (env delete).",
    "GUEST_UNREACHABLE": "The guest agent (qemu) or the VM's namespaces (process) do not "
                         "answer.",
    "GUEST_FAILED": "The guest ran the exec or file operation and it failed (the message "
                    "says why).",
    "CHECKSUM_MISMATCH": "A copy's sha256 did not match the bytes received; nothing was kept.",
    "IMAGE_IN_USE": "image rm of an image a VM uses.",
    "DIGEST_MISMATCH": "Pushed bytes do not hash to the digest given.",
    "INCOMPLETE": "image commit before every blob is on the blob server.",
    "NOT_LEADER": "A follower of a broker cluster answered; the reply's leader field names "
                  "the leader's endpoint (retry there with the same request id).",
    "UNAUTHENTICATED": "The CURVE key is not bound by the operator (or was removed since).",
    "RATE_LIMITED": "The tenant sent more changing requests than its rate allows; retry "
                    "later.",
}

# Class names that are not the CamelCase of the status name.
_CLASS_NAMES = {"TIMEOUT": "WorkerTimeout"}


def class_name(status: str) -> str:
    """The exception class name of a Status name: QUOTA_EXCEEDED ->
    QuotaExceeded (TIMEOUT -> WorkerTimeout)."""
    return _CLASS_NAMES.get(status) or "".join(p.capitalize() for p in status.split("_"))


BY_STATUS: Dict[str, Type[BrokerError]] = {}
STATUS_CLASSES: List[str] = []  # the class names, in the .proto's order

for _value in _pb.Status.DESCRIPTOR.values:
    if _value.name == "OK":
        continue
    _doc = STATUS_DOCS.get(_value.name) or (
        "Status %s (no description yet: see schema/PROTOCOL.md)." % _value.name)
    _cls = type(class_name(_value.name), (BrokerError,),
                {"status": _value.name, "code": _value.number,
                 "__doc__": "%s\n\nStatus %s (%d)." % (_doc, _value.name, _value.number),
                 "__module__": __name__})
    globals()[_cls.__name__] = _cls
    BY_STATUS[_value.name] = _cls
    STATUS_CLASSES.append(_cls.__name__)
del _value, _doc, _cls

__all__ = ["Error", "TransportError", "KeyFileError", "BrokerError", "BY_STATUS",
           "STATUS_DOCS", "for_status", "class_name"] + STATUS_CLASSES


def for_status(name: str) -> Type[BrokerError]:
    """The exception class of a Status name. A number the package's .proto
    does not know (a newer broker) gets a BrokerError subclass made for it."""
    cls = BY_STATUS.get(name)
    if cls is None:
        cls = type("Status" + "".join(c for c in name.title() if c.isalnum()),
                   (BrokerError,), {"status": name, "__module__": __name__})
    return cls
