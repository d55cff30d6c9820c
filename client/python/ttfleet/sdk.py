"""The high-level API: envs and VMs as objects, in the shape CI code is
written.

    import ttfleet
    client = ttfleet.Client(broker="tcp://broker:5555", tenant="ci")
    with client.env("ci", image="debian12", dup=3, cpu=2, mem_mib=2048,
                    ready="ssh", timeout="10m") as env:
        for vm in env.vms:
            vm.put("dist/app.tar", "/tmp/app.tar")
            vm.exec(["make", "test"], check=True, timeout="20m")

Client.env() creates the env, waits until every VM is ready and deletes it
when the block ends, also when it ends with an exception. Results are plain
dataclasses (ttfleet.models) with string enums; Env and VM are those
dataclasses with methods. Keyword names are the .proto's (EnvCreate,
ImageCount); durations may be strings ("90s", "10m", "2h", "1d").
"""

import ipaddress
import os
import re
import secrets
from dataclasses import dataclass, field, fields
from typing import (TYPE_CHECKING, Any, Iterator, List, Optional, Sequence, Tuple, Union)

from . import durations, errors
from .models import EnvInfo, Event, ExecResult, VmInfo

if TYPE_CHECKING:  # pragma: no cover
    from .client import Client

Command = Union[str, Sequence[str]]
PathOrBytes = Union[str, bytes, "os.PathLike[str]"]

_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_USER = re.compile(r"^[A-Za-z0-9._][A-Za-z0-9._-]{0,63}$")


class ExecError(errors.Error):
    """A command run with check=True failed: it exited non-zero, a signal
    killed it, or it ran past its timeout. result is the ExecResult;
    argv, exit_code, stdout and stderr are copied from it."""

    def __init__(self, result: ExecResult, vm: str = ""):
        self.result = result
        self.argv = result.argv
        self.exit_code = result.exit_code
        self.stdout = result.stdout
        self.stderr = result.stderr
        how = ("timed out" if result.timed_out else
               "killed by signal %d" % result.signal if result.signal else
               "exited %d" % result.exit_code)
        tail = result.stderr.strip()[-2000:]
        super().__init__("%s%s %s%s" % (vm + ": " if vm else "", _show(result.argv), how,
                                        "\n" + tail if tail else ""))


def _show(argv: List[str]) -> str:
    text = " ".join(argv)
    return text if len(text) <= 200 else text[:197] + "..."


def argv_of(cmd: Command) -> List[str]:
    """A list (or tuple) is the argv itself; a string runs under sh -c."""
    if isinstance(cmd, str):
        if not cmd.strip():
            raise ValueError("exec: an empty command")
        return ["sh", "-c", cmd]
    argv = [str(a) for a in cmd]
    if not argv or not argv[0]:
        raise ValueError("exec: an empty argv")
    return argv


def exec_timeout(timeout: Optional[durations.Duration]) -> int:
    """Seconds for EnvExec.timeout_s (0 = the broker's 60 s; at most 1 h)."""
    if timeout is None:
        return 0
    secs = durations.seconds(timeout, "timeout")
    if not 1 <= secs <= 3600:
        raise ValueError("timeout: %s is outside 1 s .. 1 h" % timeout)
    return secs


def exec_result(argv: List[str], raw: Any) -> ExecResult:
    """The ExecResult of Client.env_exec's answer."""
    return ExecResult(argv=argv, exit_code=raw.exit_code,
                      stdout=raw.stdout.decode("utf-8", "replace"),
                      stderr=raw.stderr.decode("utf-8", "replace"), stdout_bytes=raw.stdout,
                      stderr_bytes=raw.stderr, signal=raw.signal,
                      timed_out=raw.status == "TIMEOUT", stdout_truncated=raw.stdout_truncated,
                      stderr_truncated=raw.stderr_truncated, host=raw.host,
                      vm_id=getattr(raw, "vm_id", 0))


def _read_src(src: PathOrBytes) -> bytes:
    if isinstance(src, bytes):
        return src
    with open(src, "rb") as f:
        return f.read(64 * 1024 * 1024 + 1)


def _guest_path(path: str) -> str:
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError("a path in the VM must be absolute, got %r" % (path,))
    return path


@dataclass(eq=False)
class VM(VmInfo):
    """A VM of an env: its VmInfo fields plus exec, put, get, console and
    ssh_command. Its fields are as of the env's last refresh()."""
    env_name: str = ""
    _client: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def bind(cls, info: VmInfo, env_name: str, client: "Client") -> "VM":
        return cls(**{f.name: getattr(info, f.name) for f in fields(VmInfo)},
                   env_name=env_name, _client=client)

    def _where(self) -> str:
        return "%s vm %d on %s" % (self.env_name, self.vm_id, self.host)

    def exec(self, cmd: Command, check: bool = False,
             timeout: Optional[durations.Duration] = None,
             stdin: Union[bytes, str] = b"") -> ExecResult:
        """Runs cmd in the VM and returns its ExecResult. cmd: a list is the
        argv, a string runs under `sh -c`. timeout: a duration (default 60 s,
        at most 1 h): the worker kills the command then (timed_out). check:
        raise ExecError unless it exited 0 in time. stdin: at most 64 KiB.
        Broker refusals raise their BrokerError (GuestUnreachable, ...)."""
        argv = argv_of(cmd)
        data = stdin.encode() if isinstance(stdin, str) else stdin
        raw = self._client.env_exec(self.env_name, self.vm_id, argv, host=self.host,
                                    timeout_s=exec_timeout(timeout), stdin=data)
        res = exec_result(argv, raw)
        res.vm_id = self.vm_id
        if check and not res.ok:
            raise ExecError(res, self._where())
        return res

    def put(self, src: PathOrBytes, dest: str) -> str:
        """Copies src (a local file's path, or the bytes themselves; at most
        64 MiB) to the absolute path dest in the VM, checked by sha256 end
        to end. Returns the sha256 (hex)."""
        return self._client.env_cp_put(self.env_name, self.vm_id, _guest_path(dest),
                                       _read_src(src), host=self.host)

    def get(self, src: str, dest: Optional[Union[str, "os.PathLike[str]"]] = None) -> bytes:
        """Reads the file at the absolute path src in the VM (at most 64 MiB,
        checked by sha256) and returns its bytes; with dest, also writes
        them to that local file."""
        data = self._client.env_cp_get(self.env_name, self.vm_id, _guest_path(src),
                                       host=self.host)
        if dest is not None:
            with open(dest, "wb") as f:
                f.write(data)
        return data

    def console(self, max_bytes: int = 0) -> str:
        """The tail of the VM's console log (0 = 16 KiB)."""
        c = self._client.env_console(self.env_name, self.vm_id, host=self.host,
                                     max_bytes=max_bytes)
        return c.text.decode("utf-8", "replace")

    def ssh_command(self, user: str = "root", identity: Optional[str] = None,
                    command: Sequence[str] = ()) -> List[str]:
        """The ssh argv that logs into the VM through its public port for
        guest port 22 (as `ttctl env ssh --print`): host key checks off (a
        fresh VM has a new key each time), identity as -i. Raises
        Unavailable when the VM has no public port 22 or its host no public
        address."""
        if not isinstance(user, str) or not _USER.match(user):
            raise ValueError("ssh_command: user %r: 1..64 of A-Z a-z 0-9 . _ -, not starting "
                             "with -" % (user,))
        port = self.public_port(22)
        try:
            ipaddress.ip_address(self.public_address)
        except ValueError:
            if self.public_address:
                raise errors.Error("ssh_command: the broker gave public address %r, not an IP"
                                   % (self.public_address,))
        if not port or not self.public_address:
            raise errors.for_status("UNAVAILABLE")(
                "VM %d has %s" % (self.vm_id, "no public port for guest port 22" if not port
                                  else "no public address (start its worker with "
                                  "--public-address)"), "", "ssh_command")
        argv = ["ssh", "-p", str(port)]
        if identity:
            argv += ["-i", str(identity), "-o", "IdentitiesOnly=yes"]
        argv += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                 "-o", "LogLevel=ERROR", "%s@%s" % (user, self.public_address)]
        if command:
            argv += ["--"] + [str(c) for c in command]
        return argv


@dataclass(eq=False)
class Env(EnvInfo):
    """An env: its EnvInfo fields (vms as VM objects) plus refresh, wait,
    extend, events, the lifecycle calls and delete."""
    vms: List[VM] = field(default_factory=list)  # type: ignore[assignment]
    _client: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def bind(cls, info: EnvInfo, client: "Client") -> "Env":
        values = {f.name: getattr(info, f.name) for f in fields(EnvInfo)}
        values["vms"] = [VM.bind(v, info.name, client) for v in info.vms]
        return cls(**values, _client=client)

    def _update(self, msg: Any) -> "Env":
        fresh = Env.bind(EnvInfo.from_pb(msg), self._client)
        for f in fields(EnvInfo):
            setattr(self, f.name, getattr(fresh, f.name))
        return self

    def refresh(self) -> "Env":
        """Reads the env again (env show); returns self."""
        return self._update(self._client.env_show(self.name))

    def vm(self, vm_id: int, host: str = "") -> VM:
        """The VM with that id (and host, for an env spread over hosts)."""
        found = [v for v in self.vms if v.vm_id == vm_id and (not host or v.host == host)]
        if len(found) != 1:
            raise LookupError("env %s has %s VM %d%s" % (self.name, "no" if not found else
                                                         "more than one", vm_id,
                                                         " on " + host if host else ""))
        return found[0]

    def wait(self, ready: bool = True, timeout: durations.Duration = "10m") -> "Env":
        """Waits until every VM runs and (ready=True) its readiness probe
        succeeded; a queued env is waited through the queue. Raises
        TimeoutError naming each VM that is not there."""
        secs = durations.seconds(timeout, "timeout")
        return self._update(self._client.wait(self.name, ready=ready, timeout_s=secs))

    def extend(self, lifetime: durations.Duration) -> "Env":
        """Sets the env's lifetime: "2h" (or seconds) is the lifetime counted
        from its creation, as EnvExtend.lifetime and `ttctl env extend`;
        "+1h" is one hour more than its lifetime now. Over the tenant's
        limit raises Forbidden or QuotaExceeded."""
        secs, relative = durations.parse(lifetime, "lifetime")
        if relative:
            secs += self._client.env_show(self.name).lifetime
        return self._update(self._client.env_extend(self.name, secs))

    def stop(self) -> "Env":
        return self._update(self._client.env_stop(self.name))

    def start(self) -> "Env":
        return self._update(self._client.env_start(self.name))

    def pause(self) -> "Env":
        return self._update(self._client.env_pause(self.name))

    def resume(self) -> "Env":
        """Thaws a paused env or restores a suspended one with its memory."""
        return self._update(self._client.env_resume(self.name))

    def suspend(self) -> "Env":
        """Every VM's memory to disk, its process ended, cpu and memory
        freed; resume() brings it back as it was."""
        return self._update(self._client.env_suspend(self.name))

    def delete(self) -> None:
        """Deletes the env (a queued one leaves the queue)."""
        self._client.env_delete(self.name)

    def events(self, topic: str = "", timeout: Optional[durations.Duration] = None,
               count: Optional[int] = None) -> Iterator[Event]:
        """Iterates over this env's events (kinds starting with topic, e.g.
        "vm."), until count events or timeout of silence (None: no end). It
        subscribes when iteration starts: events from before are not
        replayed."""
        ms = None if timeout is None else durations.seconds(timeout, "timeout") * 1000
        for ev in self._client.watch(topic=topic, env=self.name, timeout_ms=ms, count=count):
            yield Event.from_pb(ev)


def create_spec(name: str, image: Optional[str], dup: int,
                images: Optional[Sequence[Union[str, Tuple[str, int]]]],
                lifetime: durations.Duration, max_wait: durations.Duration) -> Tuple[
                    List[Tuple[str, int]], int, int]:
    """(images, lifetime s, max_wait s) of the env() keywords, checked."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError("env name %r: 1..64 of A-Z a-z 0-9 . _ -" % (name,))
    if (image is None) == (images is None):
        raise ValueError("give image= (with dup=) or images=[(image, dup), ...]")
    if image is not None:
        if not isinstance(dup, int) or dup < 1:
            raise ValueError("dup must be a positive int, got %r" % (dup,))
        groups = [(image, dup)]
    else:
        groups = [(i, 1) if isinstance(i, str) else (i[0], int(i[1])) for i in images or ()]
        if not groups:
            raise ValueError("images= is empty")
    return (groups, durations.seconds(lifetime, "lifetime"),
            durations.seconds(max_wait, "max_wait"))


class EnvContext:
    """What Client.env() returns: `with` creates the env, waits until it is
    ready and gives the Env; leaving the block deletes it (also on an
    exception, and when the create or the wait fails). keep=True leaves it
    in place."""

    def __init__(self, client: "Client", name: str, create: dict, timeout: int, wait: bool,
                 keep: bool):
        self.client, self.name, self.create = client, name, create
        self.timeout, self.wait, self.keep = timeout, wait, keep
        self.env: Optional[Env] = None

    def __enter__(self) -> Env:
        created = False
        try:
            info = self.client.env_create(self.name, **self.create)
            created = True
            self.env = Env.bind(EnvInfo.from_pb(info), self.client)
            if self.wait:
                self.env.wait(ready=True, timeout=self.timeout)
            return self.env
        except BaseException as e:
            # a create whose reply was lost may have happened all the same;
            # a refused one (AlreadyExists: someone else's env) did not
            if not self.keep and (created or isinstance(e, errors.TransportError)):
                self._delete(quiet=True)
            raise

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.keep:
            self._delete(quiet=exc_type is not None)

    def _delete(self, quiet: bool) -> None:
        try:
            self.client.env_delete(self.name)
        except errors.NotFound:
            pass
        except errors.Error:
            if not quiet:
                raise


def unique_name(prefix: str) -> str:
    """prefix (made a valid name, cut to 50) plus '-' and 8 random hex."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", prefix).strip("-.") or "env"
    return "%s-%s" % (base[:50], secrets.token_hex(4))
