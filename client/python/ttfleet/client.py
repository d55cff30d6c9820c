"""ttfleet.Client: the client side of 7/MDP (MDPC01) on a DEALER socket.

One request in flight at a time. Each request has an id; an attempt that
gets no reply within timeout_ms closes its socket (linger 0) and the same
request, same id, goes out on a fresh socket, so a late reply to the old
socket can never be read as the answer to the next request, and the
broker's idempotency records turn the retry into the first attempt's
outcome. IN_PROGRESS (the first attempt still runs) is asked again after a
short pause within the same attempt. Replies are matched by request id; an
error reply without any id is taken (the broker could not decode ours).

A Client is not thread-safe: use one per thread.
"""

import hashlib
import time
import types
import uuid
from typing import List, Optional, Sequence, Tuple, Union

import zmq

from . import durations, errors, models, sdk
from . import ttfleet_pb2 as pb
from .models import EnvInfo

MDP_CLIENT = b"MDPC01"
IN_PROGRESS_PAUSE = 0.2
NO_LEADER_PAUSE = 0.1  # before the next broker when one knows no leader


def load_curve(key, broker_key):
    """(public, secret, broker public) from a client certificate (KEY and
    KEY_secret as `ttctl keygen` writes them) and the broker's public one."""
    import zmq.auth
    if not key or not broker_key:
        raise errors.KeyFileError("CURVE needs both a client key and the broker's key")
    secret_path = key if key.endswith("_secret") else key + "_secret"
    try:
        public, secret = zmq.auth.load_certificate(secret_path)
        server, _ = zmq.auth.load_certificate(broker_key)
    except (OSError, ValueError) as e:
        raise errors.KeyFileError("cannot load a CURVE certificate: %s" % e) from e
    if not secret:
        raise errors.KeyFileError("%s has no secret key" % secret_path)
    return public, secret, server


class Client:
    def __init__(self, broker="tcp://127.0.0.1:5555", tenant="default", key=None,
                 broker_key=None, timeout_ms=10000, retries=3, events=None):
        """broker: the clients endpoint, or "EP1,EP2,EP3" for a broker
        cluster (a NOT_LEADER reply sends the same request, same request
        id, to the leader it names, or to the next endpoint when it names
        none or a broker is silent); tenant: who asks (ignored by a
        CURVE broker, which takes it from the key); key/broker_key: CURVE
        certificates; timeout_ms per attempt; retries: attempts in all;
        events: the broker's events endpoint for watch() (default: the
        broker's host, port + 2)."""
        if retries < 1 or timeout_ms < 1:
            raise ValueError("timeout_ms and retries must be at least 1")
        self.broker = broker
        self.endpoints = [e.strip() for e in broker.split(",") if e.strip()]
        if not self.endpoints or len(self.endpoints) > 16:
            raise ValueError("broker: one to 16 endpoints, comma-separated")
        self.cur = 0
        self.tenant = tenant
        self.timeout_ms = timeout_ms
        self.retries = retries
        self.events = events
        self.curve = load_curve(key, broker_key) if key or broker_key else None
        self.ctx = zmq.Context.instance()
        self.sock = None
        self.last_request_id = ""

    # ---- transport ----

    def _apply_curve(self, sock):
        if self.curve:
            public, secret, server = self.curve
            sock.curve_publickey = public
            sock.curve_secretkey = secret
            sock.curve_serverkey = server

    def _connect(self):
        self.close()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self._apply_curve(self.sock)
        self.sock.connect(self.endpoints[self.cur])

    def close(self):
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def call(self, service, request):
        """Sends a Request (filling request_id and tenant when empty) and
        returns the Reply, whatever its status; raises TransportError."""
        request.request_id = request.request_id or uuid.uuid4().hex[:16]
        request.tenant = request.tenant or self.tenant
        self.last_request_id = request.request_id
        body = request.SerializeToString()
        attempt = hops = 0
        while attempt < self.retries:
            if self.sock is None:
                self._connect()
            self.sock.send_multipart([b"", MDP_CLIENT, service.encode(), body])
            deadline = time.monotonic() + self.timeout_ms / 1000.0
            reply = None
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not self.sock.poll(int(left * 1000) + 1):
                    break
                reply = self._parse(self.sock.recv_multipart(), service, request.request_id)
                if reply is None:
                    continue
                if reply.status == pb.IN_PROGRESS:
                    time.sleep(IN_PROGRESS_PAUSE)
                    self.sock.send_multipart([b"", MDP_CLIENT, service.encode(), body])
                    reply = None
                    continue
                break
            if reply is not None and (reply.status != pb.NOT_LEADER or
                                      len(self.endpoints) == 1):
                return reply
            self.close()  # a fresh socket for the retry
            if reply is not None and reply.leader in self.endpoints and \
                    self.endpoints.index(reply.leader) != self.cur and \
                    hops < 2 * len(self.endpoints):
                # the leader it names: the same request, same id (not an attempt)
                self.cur = self.endpoints.index(reply.leader)
                hops += 1
                continue
            attempt += 1
            if reply is not None and attempt >= self.retries:
                return reply  # NOT_LEADER, no leader known: the caller sees it
            self.cur = (self.cur + 1) % len(self.endpoints)
            if reply is not None:
                time.sleep(NO_LEADER_PAUSE)
        raise errors.TransportError("no reply from %s after %d attempts of %d ms"
                                    % (self.broker, self.retries, self.timeout_ms))

    @staticmethod
    def _parse(frames, service, request_id):
        if len(frames) != 4 or frames[0] != b"" or frames[1] != MDP_CLIENT:
            return None
        if frames[2] != service.encode():
            return None
        reply = pb.Reply()
        try:
            reply.ParseFromString(frames[3])
        except Exception:  # DecodeError, but input is never trusted
            return None
        anonymous_error = not reply.request_id and reply.status not in (pb.OK, pb.IN_PROGRESS)
        if reply.request_id != request_id and not anonymous_error:
            return None
        return reply

    def _op(self, op, fill, service="tt.env", request_id=None, result=None, ok=(pb.OK,)):
        """Builds a Request with op set by fill(msg), sends it, raises the
        status's exception unless the status is in ok, returns the named
        result (or the Reply)."""
        req = pb.Request(request_id=request_id or "")
        msg = getattr(req, op)
        msg.SetInParent()
        if fill:
            fill(msg)
        reply = self.call(service, req)
        if reply.status not in ok:
            name = pb.Status.Name(reply.status) if reply.status in pb.Status.values() else str(
                reply.status)
            raise errors.for_status(name)(reply.message or name, reply.request_id, op)
        if result:
            return getattr(reply, result)
        return reply

    # ---- the high-level API (ttfleet.sdk): Env and VM objects, dataclasses ----

    def env(self, name: str, image: Optional[str] = None, dup: int = 1,
            images: Optional[Sequence[Union[str, Tuple[str, int]]]] = None, cpu: int = 0,
            mem_mib: int = 0, disk_mib: int = 0, ports: Sequence[int] = (),
            lifetime: durations.Duration = 0, deny_outgoing: bool = False,
            spread: bool = False, engine: str = "", ready: str = "",
            ssh_keys: Sequence[str] = (), user_data: Union[bytes, str] = b"",
            queue: bool = False, max_wait: durations.Duration = 0, priority: int = 0,
            labels: Optional[models.Labels] = None,
            timeout: durations.Duration = "10m", wait: bool = True,
            keep: bool = False) -> "sdk.EnvContext":
        """A context manager: `with client.env("ci", image="debian12", dup=3,
        cpu=2, mem_mib=2048, ready="ssh", timeout="10m") as env:` creates the
        env, waits (bounded by timeout) until every VM is ready and yields
        the sdk.Env; the env is deleted when the block ends, also on an
        exception or when the wait times out (keep=True leaves it).

        Keywords are EnvCreate's (schema/ttfleet.proto): image and dup for
        one image group, or images=[(image, dup), ...]; lifetime and
        max_wait are durations ("2h", "90m", seconds); 0 is the broker's
        default. ready: none, ssh, tcp:PORT, http:PORT[/PATH],
        console:REGEX, agent, cloud-init ("" = the image's default).
        queue=True waits in the admission queue when the pool is full (the
        wait then covers the queue)."""
        groups, life, mw = sdk.create_spec(name, image, dup, images, lifetime, max_wait)
        create = dict(images=groups, engine=engine, cpu=cpu, mem_mib=mem_mib,
                      disk_mib=disk_mib, ports=list(ports), lifetime=life,
                      deny_outgoing=deny_outgoing, spread=spread, ssh_keys=list(ssh_keys),
                      user_data=user_data, ready=ready, queue=queue, max_wait=mw,
                      priority=priority, labels=models.label_list(labels))
        return sdk.EnvContext(self, name, create, durations.seconds(timeout, "timeout"), wait,
                              keep)

    def get_env(self, name: str) -> "sdk.Env":
        """The env as an sdk.Env (env show), to act on one made elsewhere."""
        return sdk.Env.bind(EnvInfo.from_pb(self.env_show(name)), self)

    def list_envs(self, all: bool = False,
                  labels: Optional[models.Labels] = None) -> List[EnvInfo]:
        """The caller's envs (every tenant's with all=True, admin) as
        EnvInfo dataclasses (vms empty, as in env list); with labels
        ({KEY: VALUE} or ["KEY=VALUE"]) only those with every one."""
        return [EnvInfo.from_pb(e) for e in self.env_list(all=all, labels=labels)]

    def events(self, topic: str = "", env: Optional[str] = None,
               timeout: Optional[durations.Duration] = None,
               count: Optional[int] = None):
        """watch() as an iterator of ttfleet.models.Event dataclasses;
        timeout: a duration of silence that ends it (None: no end)."""
        from .models import Event
        ms = None if timeout is None else durations.seconds(timeout, "timeout") * 1000
        for ev in self.watch(topic=topic, env=env, timeout_ms=ms, count=count):
            yield Event.from_pb(ev)

    # ---- one method per ttctl command ----

    def env_create(self, name, images, engine="", cpu=0, mem_mib=0, disk_mib=0, ports=(),
                   lifetime=0, deny_outgoing=False, spread=False, request_id=None,
                   ssh_keys=(), user_data=b"", ready="", queue=False, max_wait=0, priority=0,
                   labels=None):
        """images: [("image", dup)] or ["image"]; returns the EnvInfo.

        ssh_keys: OpenSSH public key lines; user_data: cloud-config or a
        script (bytes or str, at most 64 KiB); ready: the readiness spec
        (none, ssh, tcp:PORT, http:PORT[/PATH], console:REGEX, agent,
        cloud-init). queue: wait in the admission queue when the pool is
        full: the create then returns the EnvInfo with state "queued" and
        queue_position (1 = admitted next); wait() waits through the queue.
        A queued create that later fails (max_wait passed, cancelled) is
        seen by env_show (NOT_FOUND) and in the events."""
        def fill(m):
            m.name = name
            for item in images:
                image, dup = (item, 1) if isinstance(item, str) else item
                m.images.add(image=image, dup=dup)
            m.engine, m.cpu, m.mem_mib, m.disk_mib = engine, cpu, mem_mib, disk_mib
            m.ports.extend(ports)
            m.lifetime, m.deny_outgoing, m.spread = lifetime, deny_outgoing, spread
            m.ssh_keys.extend(ssh_keys)
            m.user_data = user_data.encode() if isinstance(user_data, str) else user_data
            m.ready = ready
            m.queue, m.max_wait, m.priority = queue, max_wait, priority
            m.labels.extend(models.label_list(labels))
        return self._op("env_create", fill, request_id=request_id, result="env",
                        ok=(pb.OK, pb.QUEUED))

    def wait(self, name, ready=False, timeout_s=300, poll_s=0.25):
        """Polls env_show until every VM of env name runs (ready=False) or
        runs and is ready (its readiness probe succeeded) and the env is
        running. Returns the EnvInfo; raises TimeoutError after timeout_s,
        its message naming each VM that is not there with its probe detail
        and console tail (as `ttctl env create --wait ready` prints)."""
        deadline = time.monotonic() + timeout_s
        while True:
            env = self.env_show(name)
            there = [vm for vm in env.vms if vm.state == pb.VM_RUNNING and (vm.ready or not ready)]
            if len(there) == len(env.vms) and env.state == "running":
                return env
            if time.monotonic() >= deadline:
                break
            time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
        lines = ["env %s: %d of %d VMs %s after %g s (env %s)"
                 % (name, len(there), len(env.vms), "ready" if ready else "running", timeout_s,
                    env.state)]
        for vm in env.vms:
            if vm in there:
                continue
            lines.append("vm %d on %s: %s; %s" % (vm.vm_id, vm.host, pb.VmState.Name(vm.state),
                                                 vm.ready_detail or "no probe result"))
            try:
                tail = self.env_console(name, vm.vm_id, host=vm.host, max_bytes=4096)
                lines.append(tail.text.decode("utf-8", "replace"))
            except errors.Error as e:
                lines.append("(console unavailable: %s)" % e)
        raise TimeoutError("\n".join(lines))

    def env_show(self, name):
        return self._op("env_show", lambda m: setattr(m, "name", name), result="env")

    def env_list(self, all=False, labels=None):
        """The caller's envs (every tenant's with all=True, admin); with
        labels ({KEY: VALUE} or ["KEY=VALUE"]) only those with every one."""
        service = "tt.admin" if all else "tt.env"

        def fill(m):
            m.all = all
            m.labels.extend(models.label_list(labels))
        return list(self._op("env_list", fill, service, result="envs").envs)

    def _env_ref(self, op, name, request_id=None):
        return self._op(op, lambda m: setattr(m, "name", name), request_id=request_id,
                        result="env")

    def env_stop(self, name, request_id=None):
        return self._env_ref("env_stop", name, request_id)

    def env_start(self, name, request_id=None):
        return self._env_ref("env_start", name, request_id)

    def env_pause(self, name, request_id=None):
        return self._env_ref("env_pause", name, request_id)

    def env_resume(self, name, request_id=None):
        """Thaws a paused env, or restores a suspended one from its saved
        memory (NoCapacity when its hosts lack the cpu or memory now)."""
        return self._env_ref("env_resume", name, request_id)

    def env_suspend(self, name, request_id=None):
        """Saves every VM's RAM and device state to its host's disk; the VM
        processes end and their cpu and memory are free (BadRequest on an
        engine that cannot save memory)."""
        return self._env_ref("env_suspend", name, request_id)

    def env_delete(self, name, request_id=None):
        self._op("env_delete", lambda m: setattr(m, "name", name), request_id=request_id)

    def env_extend(self, name, lifetime, request_id=None):
        def fill(m):
            m.name, m.lifetime = name, lifetime
        return self._op("env_extend", fill, request_id=request_id, result="env")

    def env_update(self, name, cpu=0, mem_mib=0, disk_mib=0, ports=None, outgoing=None,
                   request_id=None):
        """ports: a new guest port list (None: unchanged); outgoing: "deny",
        "allow" or None."""
        def fill(m):
            m.name, m.cpu, m.mem_mib, m.disk_mib = name, cpu, mem_mib, disk_mib
            if ports is not None:
                m.set_ports = True
                m.ports.extend(ports)
            if outgoing is not None:
                m.outgoing = {"deny": pb.OUTGOING_DENY, "allow": pb.OUTGOING_ALLOW}[outgoing]
        return self._op("env_update", fill, request_id=request_id, result="env")

    def env_rm_vm(self, name, vm_ids=(), image_prefix="", host=""):
        def fill(m):
            m.name, m.image_prefix, m.host = name, image_prefix, host
            m.vm_ids.extend(vm_ids)
        return self._op("env_rm_vm", fill, result="env")

    def env_console(self, name, vm_id, host="", max_bytes=0):
        """The ConsoleText (text is bytes)."""
        def fill(m):
            m.name, m.vm_id, m.host, m.max_bytes = name, vm_id, host, max_bytes
        return self._op("env_console", fill, result="console")

    # ---- exec and copy (schema/PROTOCOL.md "Guests"; ttctl env exec / env cp) ----

    def _once(self, op, fill, timeout_ms):
        """One attempt of timeout_ms (exec and copy are not retried: a second
        run of a command, or a chunk sent twice, is not the same thing)."""
        saved = self.timeout_ms, self.retries
        self.timeout_ms, self.retries = max(timeout_ms, self.timeout_ms), 1
        try:
            req = pb.Request()
            msg = getattr(req, op)
            msg.SetInParent()
            fill(msg)
            return self.call("tt.env", req)
        finally:
            self.timeout_ms, self.retries = saved

    def _raise(self, reply, op):
        name = pb.Status.Name(reply.status) if reply.status in pb.Status.values() else str(
            reply.status)
        raise errors.for_status(name)(reply.message or name, reply.request_id, op)

    def env_exec(self, name, vm_id, argv, host="", timeout_s=0, stdin=b""):
        """Runs argv in the VM (killed after timeout_s, 0 = 60) and reads its
        whole output. Returns an object with status ("OK", or "TIMEOUT": killed
        at the timeout), message, host, exit_code, signal, stdout and stderr
        (bytes: all that the worker kept, at most 1 MiB each) and
        stdout_truncated / stderr_truncated; raises the status's exception
        for any other status."""
        def fill(m):
            m.name, m.vm_id, m.host, m.timeout_s, m.stdin = name, vm_id, host, timeout_s, stdin
            m.argv.extend(argv)
        reply = self._once("env_exec", fill, ((timeout_s or 60) + 30) * 1000)
        if reply.status not in (pb.OK, pb.TIMEOUT) or not reply.HasField("exec"):
            self._raise(reply, "env_exec")
        e = reply.exec
        res = types.SimpleNamespace(
            status=pb.Status.Name(reply.status), message=reply.message, host=e.host,
            exit_code=e.exit_code, signal=e.signal, stdout=e.stdout, stderr=e.stderr,
            stdout_truncated=e.stdout_truncated, stderr_truncated=e.stderr_truncated)
        while e.exec_id and (len(res.stdout) < e.stdout_size or
                             len(res.stderr) < e.stderr_size):
            def more(m):
                m.name, m.vm_id, m.host, m.exec_id = name, vm_id, host, e.exec_id
                m.stdout_offset, m.stderr_offset = len(res.stdout), len(res.stderr)
            r = self._once("env_exec", more, 30000)
            if r.status != pb.OK:
                self._raise(r, "env_exec")
            if (r.exec.stdout_offset != len(res.stdout) or
                    r.exec.stderr_offset != len(res.stderr) or
                    not (r.exec.stdout or r.exec.stderr)):
                raise errors.Error("env_exec: the output pieces do not follow each other")
            res.stdout += r.exec.stdout
            res.stderr += r.exec.stderr
        return res

    def env_cp_put(self, name, vm_id, path, data, host=""):
        """Writes data (at most 64 MiB) to the absolute path in the VM in
        128 KiB chunks; the worker checks the sha256 before it writes
        anything. Returns the sha256 (hex)."""
        if len(data) > 64 * 1024 * 1024:
            raise errors.for_status("TOO_LARGE")("the file is over 64 MiB; nothing was sent",
                                                 "", "env_cp_put")
        digest = hashlib.sha256(data).digest()
        tid, off = "", 0
        while True:
            chunk = data[off:off + 128 * 1024]
            last = off + len(chunk) == len(data)

            def fill(m):
                m.name, m.vm_id, m.host, m.path = name, vm_id, host, path
                m.direction, m.transfer_id, m.offset, m.data = pb.COPY_PUT, tid, off, chunk
                if last:
                    m.last, m.total_size, m.sha256 = True, len(data), digest
            r = self._once("env_copy", fill, 180000 if last else 30000)
            if r.status != pb.OK:
                self._raise(r, "env_cp_put")
            if last:
                if not r.copy.eof or r.copy.sha256 != digest:
                    raise errors.Error("env_cp_put: the worker did not confirm the sha256")
                return digest.hex()
            tid, off = r.copy.transfer_id, off + len(chunk)

    def env_cp_get(self, name, vm_id, path, host=""):
        """Reads the file at the absolute path in the VM (at most 64 MiB),
        checking its sha256 end to end; returns its bytes."""
        parts, tid, off, total, digest = [], "", 0, None, None
        while True:
            def fill(m):
                m.name, m.vm_id, m.host, m.path = name, vm_id, host, path
                m.direction, m.transfer_id, m.offset = pb.COPY_GET, tid, off
            r = self._once("env_copy", fill, 180000 if off == 0 else 30000)
            if r.status != pb.OK:
                self._raise(r, "env_cp_get")
            c = r.copy
            if total is None:
                total, digest, tid = c.total_size, c.sha256, c.transfer_id
            if c.offset != off or off + len(c.data) > total or (not c.eof and not c.data):
                raise errors.Error("env_cp_get: a chunk does not fit the file")
            parts.append(c.data)
            off += len(c.data)
            if c.eof:
                break
        data = b"".join(parts)
        if len(data) != total or hashlib.sha256(data).digest() != digest:
            raise errors.for_status("CHECKSUM_MISMATCH")(
                "the bytes received do not have the file's size and sha256", "", "env_cp_get")
        return data

    def host_list(self):
        return list(self._op("host_list", None, "tt.admin", result="hosts").hosts)

    def host_show(self, host_id):
        return self._op("host_show", lambda m: setattr(m, "id", host_id), "tt.admin",
                        result="host")

    def host_drain(self, host_id, undo=False, evacuate=False):
        def fill(m):
            m.id, m.undo, m.evacuate = host_id, undo, evacuate
        return self._op("host_drain", fill, "tt.admin")

    def host_remove(self, host_id, force=False):
        def fill(m):
            m.id, m.force = host_id, force
        return self._op("host_remove", fill, "tt.admin")

    def pool_status(self):
        return self._op("pool_status", None, "tt.admin", result="pool")

    def watch(self, topic="", env=None, timeout_ms=None, count=None):
        """Yields Events from the broker's events socket (topic prefix; only
        env's with env=), until count events or timeout_ms of silence."""
        endpoints = [e for e in (self.events or "").split(",") if e]
        if not endpoints:  # each broker's host, port + 2
            endpoints = ["%s:%d" % (h, int(p) + 2)
                         for h, p in (ep.rsplit(":", 1) for ep in self.endpoints)]
        sub = self.ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        self._apply_curve(sub)
        sub.setsockopt(zmq.SUBSCRIBE, topic.encode())
        for endpoint in endpoints:  # only a cluster's leader publishes
            sub.connect(endpoint)
        seen = 0
        try:
            while count is None or seen < count:
                if not sub.poll(timeout_ms if timeout_ms is not None else -1):
                    return
                frames = sub.recv_multipart()
                if len(frames) != 2:
                    continue
                ev = pb.Event()
                try:
                    ev.ParseFromString(frames[1])
                except Exception:
                    continue
                if env is not None and ev.env != env:
                    continue
                seen += 1
                yield ev
        finally:
            sub.close(linger=0)
