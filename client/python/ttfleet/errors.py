"""Exceptions: one class per broker Status (schema/PROTOCOL.md), all
subclasses of BrokerError, plus TransportError when no reply came."""


class Error(Exception):
    """Every error this package raises."""


class TransportError(Error):
    """No reply from the broker after every attempt (or a key that cannot be
    loaded: see KeyError_)."""


class KeyFileError(Error):
    """A CURVE certificate is missing or unusable."""


class BrokerError(Error):
    """The broker answered with a status other than OK."""
    status = None  # the Status name, e.g. "NOT_FOUND"

    def __init__(self, message, request_id="", op=""):
        super().__init__("%s%s: %s" % (op + ": " if op else "", self.status, message))
        self.message = message
        self.request_id = request_id
        self.op = op


def _make(name, doc):
    return type("".join(p.capitalize() for p in name.split("_")), (BrokerError,),
                {"status": name, "__doc__": doc})


BadRequest = _make("BAD_REQUEST", "Malformed request or a field out of range.")
NotFound = _make("NOT_FOUND", "No such env (for this tenant), VM or host.")
AlreadyExists = _make("ALREADY_EXISTS", "The env name is taken for this tenant.")
NoCapacity = _make("NO_CAPACITY", "No host can take it.")
TooSoon = _make("TOO_SOON", "Stop/start within the minimum interval.")
InvalidState = _make("INVALID_STATE", "Not allowed in the env's current state.")
Forbidden = _make("FORBIDDEN", "Needs the admin role.")
InProgress = _make("IN_PROGRESS", "The same request id is still running.")
WorkerFailed = _make("WORKER_FAILED", "A worker refused or failed; nothing was kept.")
WorkerTimeout = _make("TIMEOUT", "A worker did not answer in time; nothing was kept.")
Internal = _make("INTERNAL", "The broker could not persist; nothing changed.")
UnknownService = _make("UNKNOWN_SERVICE", "MDP service not served.")
Unavailable = _make("UNAVAILABLE", "No online host offers the engine or image.")
TooLarge = _make("TOO_LARGE", "A frame or body over the limits.")

BY_STATUS = {cls.status: cls for cls in (
    BadRequest, NotFound, AlreadyExists, NoCapacity, TooSoon, InvalidState, Forbidden,
    InProgress, WorkerFailed, WorkerTimeout, Internal, UnknownService, Unavailable, TooLarge)}


def for_status(name):
    """The exception class of a Status name (BrokerError for a new one)."""
    return BY_STATUS.get(name) or type(name.title().replace("_", ""), (BrokerError,),
                                       {"status": name})
