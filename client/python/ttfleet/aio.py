"""ttfleet.aio: the client on asyncio (zmq.asyncio), for CI code that runs
many envs at once.

    import asyncio, ttfleet.aio

    async def main():
        async with ttfleet.aio.Client(broker="tcp://broker:5555", tenant="ci") as client:
            async with client.env("ci", image="debian12", dup=3, ready="ssh",
                                  timeout="10m") as env:
                results = await asyncio.gather(
                    *(vm.exec(["make", "test"], check=True) for vm in env.vms))

The same protocol and retry rules as ttfleet.Client, the same exceptions,
and the same dataclass results (ttfleet.models) as the high-level sync API.
Calls on one Client run concurrently: each request in flight has a DEALER
socket of its own (kept for the next request when it got its reply, closed
when an attempt timed out, so a late reply is never read as another's).
"""

import asyncio
import time
import uuid
from dataclasses import dataclass, field, fields
from typing import Any, List, Optional, Sequence, Tuple, Union

import zmq
import zmq.asyncio

from . import _ops, durations, errors, models, sdk
from . import ttfleet_pb2 as pb
from .client import IN_PROGRESS_PAUSE, MDP_CLIENT, NO_LEADER_PAUSE, Client as _SyncClient
from .client import load_curve, raise_status, registry_request, registry_result
from .models import EnvInfo, ExecResult, VmInfo

__all__ = ["Client", "AsyncEnv", "AsyncVM", "AsyncEnvContext"]

MAX_IDLE = 16  # sockets kept for reuse; more concurrent requests open their own


class Client(_ops.AsyncOps):
    """An asyncio ttfleet client. broker, tenant, key, broker_key,
    timeout_ms and retries as ttfleet.Client. Like it, a coroutine method
    per operation of the registry (ttfleet._ops.AsyncOps: the op's message
    fields positionally or by name, returning the Reply's result); env_create,
    env_show, env_list, env_delete, env_extend and exec are convenience
    forms returning ttfleet.models dataclasses. broker may list a cluster's
    brokers ("EP1,EP2,EP3"); a NOT_LEADER reply sends the same request,
    same request id, to the leader it names when that is in the list, and
    a broker that does not answer is left for the next one."""

    def __init__(self, broker: str = "tcp://127.0.0.1:5555", tenant: str = "default",
                 key: Optional[str] = None, broker_key: Optional[str] = None,
                 timeout_ms: int = 10000, retries: int = 3):
        if retries < 1 or timeout_ms < 1:
            raise ValueError("timeout_ms and retries must be at least 1")
        self.broker, self.tenant = broker, tenant
        self.endpoints = [e.strip() for e in broker.split(",") if e.strip()]
        if not self.endpoints or len(self.endpoints) > 16:
            raise ValueError("broker: one to 16 endpoints, comma-separated")
        self.cur = 0  # the endpoint requests go to (the leader, once known)
        self.timeout_ms, self.retries = timeout_ms, retries
        self.curve = load_curve(key, broker_key) if key or broker_key else None
        self.ctx = zmq.asyncio.Context.instance()
        # sockets with no request in flight, each with its endpoint
        self._idle: List[Tuple[str, zmq.asyncio.Socket]] = []

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Closes the idle sockets (requests in flight close theirs)."""
        while self._idle:
            self._idle.pop()[1].close(linger=0)

    def _socket(self, endpoint: str) -> zmq.asyncio.Socket:
        for i, (ep, sock) in enumerate(self._idle):
            if ep == endpoint:
                del self._idle[i]
                return sock
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if self.curve:
            public, secret, server = self.curve
            sock.curve_publickey = public
            sock.curve_secretkey = secret
            sock.curve_serverkey = server
        sock.connect(endpoint)
        return sock

    async def _attempt(self, endpoint: str, service: str, body: bytes, request_id: str,
                       timeout_ms: int) -> Optional["pb.Reply"]:
        """One attempt at one broker: its Reply (IN_PROGRESS waited out),
        or None when none came within timeout_ms."""
        sock = self._socket(endpoint)
        try:
            await sock.send_multipart([b"", MDP_CLIENT, service.encode(), body])
            deadline = time.monotonic() + timeout_ms / 1000.0
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not await sock.poll(int(left * 1000) + 1):
                    return None
                frames = await sock.recv_multipart()
                reply = _SyncClient._parse(frames, service, request_id)
                if reply is None:
                    continue
                if reply.status == pb.IN_PROGRESS:
                    await asyncio.sleep(IN_PROGRESS_PAUSE)
                    await sock.send_multipart([b"", MDP_CLIENT, service.encode(), body])
                    continue
                if len(self._idle) < MAX_IDLE:
                    self._idle.append((endpoint, sock))
                    sock = None
                return reply
        finally:
            if sock is not None:  # timed out, cancelled or failed: never reused
                sock.close(linger=0)

    async def call(self, service: str, request: "pb.Request", timeout_ms: Optional[int] = None,
                   retries: Optional[int] = None) -> "pb.Reply":
        """Sends a Request (request_id and tenant filled when empty) and
        returns the Reply whatever its status; TransportError when no reply
        came after every attempt."""
        request.request_id = request.request_id or uuid.uuid4().hex[:16]
        request.tenant = request.tenant or self.tenant
        body = request.SerializeToString()
        timeout_ms = timeout_ms or self.timeout_ms
        retries = retries or self.retries
        attempt = hops = 0
        while attempt < retries:
            endpoint = self.endpoints[self.cur]
            reply = await self._attempt(endpoint, service, body, request.request_id, timeout_ms)
            if reply is not None and (reply.status != pb.NOT_LEADER or len(self.endpoints) == 1):
                return reply
            if reply is not None and reply.leader in self.endpoints and \
                    reply.leader != endpoint and hops < 2 * len(self.endpoints):
                # the leader it names: the same request, same id (not an attempt)
                self.cur = self.endpoints.index(reply.leader)
                hops += 1
                continue
            attempt += 1
            if reply is not None and attempt >= retries:
                return reply  # NOT_LEADER, no leader known: the caller sees it
            self.cur = (self.cur + 1) % len(self.endpoints)
            if reply is not None:
                await asyncio.sleep(NO_LEADER_PAUSE)
        raise errors.TransportError("no reply from %s after %d attempts of %d ms"
                                    % (self.broker, retries, timeout_ms))

    async def _op(self, op: str, fill: Any, service: str = "tt.env", ok: Sequence[int] = (pb.OK,),
                  timeout_ms: Optional[int] = None, retries: Optional[int] = None) -> "pb.Reply":
        req = pb.Request()
        msg = getattr(req, op)
        msg.SetInParent()
        if fill:
            fill(msg)
        reply = await self.call(service, req, timeout_ms, retries)
        if reply.status not in ok:
            raise_status(reply, op)
        return reply

    async def _registry_call(self, op: str, args: Sequence[Any], fields: dict,
                             request_id: Optional[str]) -> Any:
        req, service = registry_request(op, args, fields, request_id)
        # an op flagged ONCE is not idempotent (exec, copy): one attempt
        once = "ONCE" in _ops.OPS[op].flags
        reply = await self.call(service, req, retries=1 if once else None)
        if reply.status != pb.OK:
            raise_status(reply, op)
        return registry_result(reply)

    # ---- envs ----

    async def env_create(self, name: str, images: Sequence[Union[str, Tuple[str, int]]],
                         engine: str = "", cpu: int = 0, mem_mib: int = 0, disk_mib: int = 0,
                         ports: Sequence[int] = (), lifetime: durations.Duration = 0,
                         deny_outgoing: bool = False, spread: bool = False,
                         ssh_keys: Sequence[str] = (), user_data: Union[bytes, str] = b"",
                         ready: str = "", queue: bool = False,
                         max_wait: durations.Duration = 0, priority: int = 0,
                         labels: Optional[models.Labels] = None) -> EnvInfo:
        """As ttfleet.Client.env_create, returning an EnvInfo dataclass (a
        queued create returns state "queued" with queue_position)."""
        life = durations.seconds(lifetime, "lifetime")
        mw = durations.seconds(max_wait, "max_wait")

        def fill(m: Any) -> None:
            m.name = name
            for item in images:
                image, dup = (item, 1) if isinstance(item, str) else item
                m.images.add(image=image, dup=dup)
            m.engine, m.cpu, m.mem_mib, m.disk_mib = engine, cpu, mem_mib, disk_mib
            m.ports.extend(ports)
            m.lifetime, m.deny_outgoing, m.spread = life, deny_outgoing, spread
            m.ssh_keys.extend(ssh_keys)
            m.user_data = user_data.encode() if isinstance(user_data, str) else user_data
            m.ready, m.queue, m.max_wait, m.priority = ready, queue, mw, priority
            m.labels.extend(models.label_list(labels))
        reply = await self._op("env_create", fill, ok=(pb.OK, pb.QUEUED))
        return EnvInfo.from_pb(reply.env)

    async def env_show(self, name: str) -> EnvInfo:
        reply = await self._op("env_show", lambda m: setattr(m, "name", name))
        return EnvInfo.from_pb(reply.env)

    async def env_list(self, all: bool = False,
                       labels: Optional[models.Labels] = None) -> List[EnvInfo]:
        """The caller's envs (every tenant's with all=True, admin); with
        labels only those with every one."""
        def fill(m: Any) -> None:
            m.all = all
            m.labels.extend(models.label_list(labels))
        reply = await self._op("env_list", fill, "tt.admin" if all else "tt.env")
        return [EnvInfo.from_pb(e) for e in reply.envs.envs]

    async def env_delete(self, name: str) -> None:
        await self._op("env_delete", lambda m: setattr(m, "name", name))

    async def env_suspend(self, name: str) -> EnvInfo:
        """As ttfleet.Client.env_suspend."""
        return EnvInfo.from_pb((await self._op("env_suspend",
                                               lambda m: setattr(m, "name", name))).env)

    async def env_resume(self, name: str) -> EnvInfo:
        """As ttfleet.Client.env_resume: a paused or a suspended env."""
        return EnvInfo.from_pb((await self._op("env_resume",
                                               lambda m: setattr(m, "name", name))).env)

    async def env_extend(self, name: str, lifetime: durations.Duration) -> EnvInfo:
        """lifetime as AsyncEnv.extend: "2h" from creation, "+1h" more."""
        secs, relative = durations.parse(lifetime, "lifetime")
        if relative:
            secs += (await self.env_show(name)).lifetime

        def fill(m: Any) -> None:
            m.name, m.lifetime = name, secs
        return EnvInfo.from_pb((await self._op("env_extend", fill)).env)

    async def wait(self, name: str, ready: bool = True, timeout: durations.Duration = "10m",
                   poll_s: float = 0.25) -> EnvInfo:
        """Polls env show until every VM runs (and, ready=True, is ready) and
        the env is running; TimeoutError after timeout naming what is not."""
        secs = durations.seconds(timeout, "timeout")
        deadline = time.monotonic() + secs
        while True:
            env = await self.env_show(name)
            there = [v for v in env.vms if v.state == "running" and (v.ready or not ready)]
            if len(there) == len(env.vms) and env.state == "running":
                return env
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
        lines = ["env %s: %d of %d VMs %s after %d s (env %s)"
                 % (name, len(there), len(env.vms), "ready" if ready else "running", secs,
                    env.state)]
        lines += ["vm %d on %s: %s; %s" % (v.vm_id, v.host, v.state,
                                           v.ready_detail or "no probe result")
                  for v in env.vms if v not in there]
        raise TimeoutError("\n".join(lines))

    async def exec(self, name: str, vm_id: int, cmd: sdk.Command, host: str = "",
                   timeout: Optional[durations.Duration] = None,
                   stdin: Union[bytes, str] = b"", check: bool = False) -> ExecResult:
        """Runs cmd in VM vm_id of env name (a list is argv, a string runs
        under sh -c) and reads its whole output; check=True raises
        sdk.ExecError unless it exited 0 in time. One attempt (a command is
        never run twice)."""
        argv = sdk.argv_of(cmd)
        timeout_s = sdk.exec_timeout(timeout)
        data = stdin.encode() if isinstance(stdin, str) else stdin

        def fill(m: Any) -> None:
            m.name, m.vm_id, m.host, m.timeout_s, m.stdin = name, vm_id, host, timeout_s, data
            m.argv.extend(argv)
        reply = await self._op("env_exec", fill, ok=(pb.OK, pb.TIMEOUT),
                               timeout_ms=max(((timeout_s or 60) + 30) * 1000, self.timeout_ms),
                               retries=1)
        if not reply.HasField("exec"):
            raise errors.Error("env_exec: the reply has no result")
        e = reply.exec
        out, err = bytes(e.stdout), bytes(e.stderr)
        while e.exec_id and (len(out) < e.stdout_size or len(err) < e.stderr_size):
            def more(m: Any, o: int = len(out), r: int = len(err)) -> None:
                m.name, m.vm_id, m.host, m.exec_id = name, vm_id, host, e.exec_id
                m.stdout_offset, m.stderr_offset = o, r
            part = (await self._op("env_exec", more, timeout_ms=30000, retries=1)).exec
            if (part.stdout_offset != len(out) or part.stderr_offset != len(err) or
                    not (part.stdout or part.stderr)):
                raise errors.Error("env_exec: the output pieces do not follow each other")
            out += part.stdout
            err += part.stderr
        res = ExecResult(argv=argv, exit_code=e.exit_code, stdout=out.decode("utf-8", "replace"),
                         stderr=err.decode("utf-8", "replace"), stdout_bytes=out,
                         stderr_bytes=err, signal=e.signal, timed_out=reply.status == pb.TIMEOUT,
                         stdout_truncated=e.stdout_truncated,
                         stderr_truncated=e.stderr_truncated, host=e.host, vm_id=vm_id)
        if check and not res.ok:
            raise sdk.ExecError(res, "%s vm %d" % (name, vm_id))
        return res

    def env(self, name: str, image: Optional[str] = None, dup: int = 1,
            images: Optional[Sequence[Union[str, Tuple[str, int]]]] = None,
            timeout: durations.Duration = "10m", wait: bool = True, keep: bool = False,
            **create: Any) -> "AsyncEnvContext":
        """`async with client.env(...) as env:` as ttfleet.Client.env: create,
        wait until ready, delete on exit (also on an exception). The other
        keywords are env_create's."""
        groups, _, _ = sdk.create_spec(name, image, dup, images, create.get("lifetime", 0),
                                       create.get("max_wait", 0))
        return AsyncEnvContext(self, name, groups, create,
                               durations.seconds(timeout, "timeout"), wait, keep)


@dataclass(eq=False)
class AsyncVM(VmInfo):
    """A VM of an AsyncEnv: VmInfo fields plus an async exec."""
    env_name: str = ""
    _client: Any = field(default=None, repr=False, compare=False)

    async def exec(self, cmd: sdk.Command, check: bool = False,
                   timeout: Optional[durations.Duration] = None,
                   stdin: Union[bytes, str] = b"") -> ExecResult:
        """As sdk.VM.exec."""
        return await self._client.exec(self.env_name, self.vm_id, cmd, host=self.host,
                                       timeout=timeout, stdin=stdin, check=check)


@dataclass(eq=False)
class AsyncEnv(EnvInfo):
    """An env of the asyncio client: EnvInfo fields, vms as AsyncVM."""
    vms: List[AsyncVM] = field(default_factory=list)  # type: ignore[assignment]
    _client: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def bind(cls, info: EnvInfo, client: Client) -> "AsyncEnv":
        values = {f.name: getattr(info, f.name) for f in fields(EnvInfo)}
        values["vms"] = [AsyncVM(**{f.name: getattr(v, f.name) for f in fields(VmInfo)},
                                 env_name=info.name, _client=client) for v in info.vms]
        return cls(**values, _client=client)

    def _take(self, info: EnvInfo) -> "AsyncEnv":
        fresh = AsyncEnv.bind(info, self._client)
        for f in fields(EnvInfo):
            setattr(self, f.name, getattr(fresh, f.name))
        return self

    async def refresh(self) -> "AsyncEnv":
        return self._take(await self._client.env_show(self.name))

    async def wait(self, ready: bool = True, timeout: durations.Duration = "10m") -> "AsyncEnv":
        return self._take(await self._client.wait(self.name, ready=ready, timeout=timeout))

    async def extend(self, lifetime: durations.Duration) -> "AsyncEnv":
        return self._take(await self._client.env_extend(self.name, lifetime))

    async def suspend(self) -> "AsyncEnv":
        return self._take(await self._client.env_suspend(self.name))

    async def resume(self) -> "AsyncEnv":
        return self._take(await self._client.env_resume(self.name))

    async def delete(self) -> None:
        await self._client.env_delete(self.name)


class AsyncEnvContext:
    """What aio.Client.env() returns (see there)."""

    def __init__(self, client: Client, name: str, groups: List[Tuple[str, int]], create: dict,
                 timeout: int, wait: bool, keep: bool):
        self.client, self.name, self.groups, self.create = client, name, groups, create
        self.timeout, self.wait, self.keep = timeout, wait, keep
        self.env: Optional[AsyncEnv] = None

    async def __aenter__(self) -> AsyncEnv:
        created = False
        try:
            info = await self.client.env_create(self.name, self.groups, **self.create)
            created = True
            self.env = AsyncEnv.bind(info, self.client)
            if self.wait:
                await self.env.wait(ready=True, timeout=self.timeout)
            return self.env
        except BaseException as e:
            if not self.keep and (created or isinstance(e, errors.TransportError)):
                await self._delete(quiet=True)
            raise

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if not self.keep:
            await self._delete(quiet=exc_type is not None)

    async def _delete(self, quiet: bool) -> None:
        try:
            await self.client.env_delete(self.name)
        except errors.NotFound:
            pass
        except errors.Error:
            if not quiet:
                raise
