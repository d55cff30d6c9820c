"""pytest: the ttfleet package against real daemons (a broker and a worker
from tests/integration/harness.py). The package is installed by pip from
this tree (harness.ttfleet_package), as a user would install it."""

import asyncio
import os
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "tests",
                                "integration"))
import harness  # noqa: E402

harness.ttfleet_package()
import ttfleet  # noqa: E402
import ttfleet.aio  # noqa: E402
from ttfleet import pb  # noqa: E402


@pytest.fixture(scope="module")
def pool():
    p = harness.Pool(hosts={"h1": {"cpu": 8, "mem": 8192}}).start()
    yield p
    p.close()


@pytest.fixture
def client(pool):
    with ttfleet.Client(broker=pool.clients_ep, tenant="pyt", timeout_ms=5000,
                        events=pool.events_ep) as c:
        yield c


@pytest.fixture
def admin(pool):
    with ttfleet.Client(broker=pool.clients_ep, tenant=harness.ADMIN, timeout_ms=5000) as c:
        yield c


def test_installed_from_tree():
    assert ttfleet.__file__.startswith(harness.ttfleet_package())
    assert hasattr(ttfleet.pb, "EnvCreate")


def _registry_rows():
    """The Request.op fields of schema/ops.def's rows, read from the file
    itself (not from the generated ttfleet._ops)."""
    import re
    with open(os.path.join(harness.SOURCE, "schema", "ops.def")) as f:
        text = re.sub(r'"(?:[^"\\\n]|\\.)*"|/\*.*?\*/', lambda m: m.group(0)
                      if m.group(0)[0] == '"' else "", f.read(), flags=re.S)
    return re.findall(r"^TT_OP\(\s*[A-Z_0-9]+\s*,\s*([a-z_0-9]+)\s*,", text, re.M)


def test_every_registry_row_has_a_method():
    """Every row of ops.def is a method of ttfleet.Client and a coroutine
    method of ttfleet.aio.Client, and ttfleet._ops.OPS holds exactly the
    rows (a row added without its methods fails here)."""
    import inspect
    from ttfleet import _ops
    rows = _registry_rows()
    assert len(rows) >= 30 and len(set(rows)) == len(rows)
    assert list(_ops.OPS) == rows
    for op in rows:
        assert callable(getattr(ttfleet.Client, op, None)), op
        assert inspect.iscoroutinefunction(getattr(ttfleet.aio.Client, op, None)), op
        assert _ops.OPS[op].service in ("tt.env", "tt.admin")


SILENT = {}  # fake_broker: requests of each op naming env "silent"


@pytest.fixture
def fake_broker():
    """A ROUTER that answers every request OK with "SERVICE OP" as the
    message (and an EnvInfo for an env_show that names an env)."""
    import zmq
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            if not sock.poll(50):
                continue
            frames = sock.recv_multipart()
            req = pb.Request()
            req.ParseFromString(frames[-1])
            op = req.WhichOneof("op")
            if getattr(getattr(req, op), "name", "") == "silent":
                SILENT[op] = SILENT.get(op, 0) + 1  # counted, never answered
                continue
            rep = pb.Reply(request_id=req.request_id, status=pb.OK,
                           message="%s %s" % (frames[-2].decode(), op))
            if op == "env_show" and req.env_show.name:
                rep.env.name = req.env_show.name
            if op == "host_remove" and req.host_remove.id == "refuse":
                rep.status, rep.message = pb.FORBIDDEN, "no"
            sock.send_multipart(frames[:-1] + [rep.SerializeToString()])
    t = threading.Thread(target=serve)
    t.start()
    yield "tcp://127.0.0.1:%d" % port
    stop.set()
    t.join()
    sock.close(linger=0)


def test_registry_methods_send_their_op(fake_broker):
    """The generated method of every row (sync and asyncio) sends that op to
    the row's service; fields go positionally in the message's order or by
    name; the Reply's result comes back; a refusal raises."""
    from ttfleet import _ops
    with ttfleet.Client(broker=fake_broker, tenant="pyt", timeout_ms=2000, retries=1) as c:
        for op, spec in _ops.OPS.items():
            rep = getattr(_ops.Ops, op)(c)
            assert rep.message == "%s %s" % (spec.service, op)
        assert c.env_show("e1").name == "e1"
        assert c.env_extend("e1", 60).message == "tt.env env_extend"
        assert c.key_list().message == "tt.admin key_list"
        assert c.image_list(all=True).message == "tt.admin image_list"
        with pytest.raises(TypeError):
            c.env_stop("e1", name="e2")
        with pytest.raises(TypeError):
            c.host_drain(nonsense=1)
        with pytest.raises(ttfleet.errors.Forbidden):
            c.host_remove("refuse", True)

    async def aio():
        async with ttfleet.aio.Client(broker=fake_broker, tenant="pyt", timeout_ms=2000,
                                      retries=1) as c:
            for op, spec in _ops.OPS.items():
                rep = await getattr(_ops.AsyncOps, op)(c)
                assert rep.message == "%s %s" % (spec.service, op)
            assert (await c.env_stop("e1")).message == "tt.env env_stop"
            assert (await c.queue_list(all=True)).message == "tt.admin queue_list"
    asyncio.run(aio())


def test_once_ops_are_not_retried(fake_broker):
    """An op flagged ONCE in the registry (env_exec, env_copy: a retry would
    run the command or write the chunk again) is sent once by the generated
    methods, sync and asyncio; other ops retry as call() does."""
    from ttfleet import _ops
    assert "ONCE" in _ops.OPS["env_exec"].flags and "ONCE" in _ops.OPS["env_copy"].flags
    assert "ONCE" not in _ops.OPS["env_show"].flags
    SILENT.clear()
    with ttfleet.Client(broker=fake_broker, tenant="pyt", timeout_ms=200, retries=3) as c:
        for op in ("env_exec", "env_copy", "env_show"):
            with pytest.raises(ttfleet.errors.TransportError):
                getattr(_ops.Ops, op)(c, name="silent")

    async def aio():
        async with ttfleet.aio.Client(broker=fake_broker, tenant="pyt", timeout_ms=200,
                                      retries=3) as c:
            for op in ("env_exec", "env_copy", "env_show"):
                with pytest.raises(ttfleet.errors.TransportError):
                    await getattr(_ops.AsyncOps, op)(c, name="silent")
    asyncio.run(aio())
    time.sleep(0.2)
    assert SILENT == {"env_exec": 2, "env_copy": 2, "env_show": 6}


def test_env_lifecycle(client):
    env = client.env_create("life", images=[("sleeper", 2)], cpu=1, mem_mib=128, ports=[80])
    assert env.name == "life" and env.tenant == "pyt" and len(env.vms) == 2
    assert all(vm.state == pb.VM_RUNNING for vm in env.vms)
    assert "life" in [e.name for e in client.env_list()]
    assert client.env_show("life").vm_count == 2
    assert client.env_pause("life").state == "paused"
    assert client.env_resume("life").state == "running"
    assert client.env_extend("life", 7200).lifetime == 7200
    assert 8080 in client.env_update("life", ports=[80, 8080]).ports
    con = client.env_console("life", env.vms[0].vm_id)
    assert con.vm_id == env.vms[0].vm_id and isinstance(con.text, bytes)
    assert client.env_stop("life").state == "stopped"
    client.env_delete("life")
    with pytest.raises(ttfleet.NotFound) as e:
        client.env_show("life")
    assert e.value.status == "NOT_FOUND" and e.value.message


def test_exec_and_copy(client):
    env = client.env_create("guest", images=["sleeper"], cpu=1, mem_mib=64)
    vm = env.vms[0].vm_id
    try:
        res = client.env_exec("guest", vm, ["sh", "-c", "uname -r; echo e >&2; exit 4"])
        assert res.status == "OK" and res.exit_code == 4
        assert res.stdout.decode().strip() == os.uname().release and res.stderr == b"e\n"
        big = client.env_exec("guest", vm, ["sh", "-c", "seq 1 100000"])
        assert big.stdout == b"".join(b"%d\n" % i for i in range(1, 100001))
        assert not big.stdout_truncated
        late = client.env_exec("guest", vm, ["sleep", "30"], timeout_s=1)
        assert late.status == "TIMEOUT" and late.signal == 9
        data = os.urandom(300 * 1024)
        cwd = client.env_exec("guest", vm, ["pwd"]).stdout.decode().strip()
        client.env_cp_put("guest", vm, cwd + "/blob", data)
        assert client.env_cp_get("guest", vm, cwd + "/blob") == data
        with pytest.raises(ttfleet.BrokerError) as e:
            client.env_cp_get("guest", vm, cwd + "/missing-file-xyz")
        assert e.value.status == "GUEST_FAILED" and "No such file" in e.value.message
    finally:
        client.env_delete("guest")


def test_exceptions(client):
    client.env_create("taken", images=["sleeper"], cpu=1, mem_mib=64)
    try:
        with pytest.raises(ttfleet.AlreadyExists):
            client.env_create("taken", images=["sleeper"], cpu=1, mem_mib=64)
        with pytest.raises(ttfleet.InvalidState):
            client.env_update("taken", cpu=2)
        with pytest.raises(ttfleet.Forbidden):
            client.env_extend("taken", 86400)
    finally:
        client.env_delete("taken")
    with pytest.raises(ttfleet.BadRequest):
        client.env_create("bad name", images=["sleeper"])
    with pytest.raises(ttfleet.NoCapacity):
        client.env_create("huge", images=["sleeper"], cpu=64)
    with pytest.raises(ttfleet.Unavailable):
        client.env_create("noimg", images=["no-such-image"])
    with pytest.raises(ttfleet.Forbidden):
        client.host_list()
    assert issubclass(ttfleet.NotFound, ttfleet.BrokerError)


def test_admin(admin):
    hosts = admin.host_list()
    assert [h.id for h in hosts] == ["h1"]
    assert admin.host_show("h1").state == "online"
    admin.host_drain("h1")
    assert admin.host_show("h1").draining
    admin.host_drain("h1", undo=True)
    assert not admin.host_show("h1").draining
    assert admin.pool_status().hosts_online == 1
    with pytest.raises(ttfleet.NotFound):
        admin.host_show("nope")


def test_same_request_id_is_one_env(client):
    first = client.env_create("idem", images=["sleeper"], cpu=1, mem_mib=64, request_id="py-idem-1")
    try:
        again = client.env_create("idem", images=["sleeper"], cpu=1, mem_mib=64,
                                  request_id="py-idem-1")
        assert [v.vm_id for v in again.vms] == [v.vm_id for v in first.vms]
    finally:
        client.env_delete("idem")


def test_timeout_and_retries():
    dead = "tcp://127.0.0.1:%d" % harness.free_port()
    c = ttfleet.Client(broker=dead, tenant="pyt", timeout_ms=100, retries=3)
    t0 = time.monotonic()
    with pytest.raises(ttfleet.TransportError) as e:
        c.pool_status()
    assert "3 attempts" in str(e.value)
    assert time.monotonic() - t0 < 5
    c.close()


def test_retry_reaches_a_late_broker(pool):
    """The first attempts go nowhere (the broker is stopped); a retry with
    the same request id on a fresh socket reaches the broker once it is back."""
    pool.stop_broker()
    c = ttfleet.Client(broker=pool.clients_ep, tenant="pyt", timeout_ms=1500, retries=10)
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("s", c.pool_status()))
    t.start()
    time.sleep(1.0)
    pool.start_broker()
    t.join(30)
    assert out["s"].hosts_total >= 0
    c.close()
    pool.wait_online(["h1"])


def test_endpoint_list_follows_not_leader(pool):
    """broker="EP1,EP2,EP3": a silent endpoint is skipped, a NOT_LEADER
    naming the leader sends the same request (same id) there, and a retry
    with that id gets the first answer."""
    import zmq
    ctx = zmq.Context.instance()
    follower = ctx.socket(zmq.ROUTER)
    follower.setsockopt(zmq.LINGER, 0)
    fport = follower.bind_to_random_port("tcp://127.0.0.1")
    dead = "tcp://127.0.0.1:%d" % harness.free_port()
    seen = []
    stop = threading.Event()

    def serve():  # a follower: NOT_LEADER naming the real broker, same id
        while not stop.is_set():
            if not follower.poll(50):
                continue
            frames = follower.recv_multipart()
            req = pb.Request()
            req.ParseFromString(frames[-1])
            seen.append(req.request_id)
            rep = pb.Reply(request_id=req.request_id, status=pb.NOT_LEADER,
                           leader=pool.clients_ep, message="not the leader")
            follower.send_multipart(frames[:-1] + [rep.SerializeToString()])
    t = threading.Thread(target=serve)
    t.start()
    try:
        eps = ",".join([dead, "tcp://127.0.0.1:%d" % fport, pool.clients_ep])
        with ttfleet.Client(broker=eps, tenant="pyt", timeout_ms=2000, retries=3) as c:
            env = c.env_create("listed", images=["sleeper"], cpu=1, mem_mib=64,
                               request_id="list-1")
            assert c.endpoints[c.cur] == pool.clients_ep
            assert seen == ["list-1"]
            again = c.env_create("listed", images=["sleeper"], cpu=1, mem_mib=64,
                                 request_id="list-1")
            assert again.vms[0].vm_id == env.vms[0].vm_id
            c.env_delete("listed")

        # the asyncio client the same way
        async def aio_listed():
            async with ttfleet.aio.Client(broker=eps, tenant="pyt", timeout_ms=2000,
                                          retries=3) as a:
                req = pb.Request(request_id="list-aio")
                req.env_create.name = "listed-aio"
                img = req.env_create.images.add()
                img.image, img.dup = "sleeper", 1
                req.env_create.cpu, req.env_create.mem_mib = 1, 64
                first = await a.call("tt.env", req)
                assert first.status == pb.OK, first
                assert a.endpoints[a.cur] == pool.clients_ep
                second = await a.call("tt.env", req)
                assert second.env.vms[0].vm_id == first.env.vms[0].vm_id
                await a.env_delete("listed-aio")
        seen.clear()
        asyncio.run(aio_listed())
        assert seen == ["list-aio"]
        # a leader outside the list is not followed; every endpoint failing: TransportError
        with ttfleet.Client(broker="tcp://127.0.0.1:%d,%s" % (fport, dead), tenant="pyt",
                            timeout_ms=300, retries=2) as c:
            with pytest.raises(ttfleet.TransportError):
                c.env_list()
    finally:
        stop.set()
        t.join()
        follower.close()


def test_watch(client, pool):
    got = []
    t = threading.Thread(target=lambda: got.extend(
        client.watch(topic="env.", env="watched", timeout_ms=15000, count=4)))
    t.start()
    time.sleep(0.5)
    c2 = ttfleet.Client(broker=pool.clients_ep, tenant="pyt", timeout_ms=5000)
    c2.env_create("watched", images=["sleeper"], cpu=1, mem_mib=64)
    c2.env_delete("watched")
    c2.close()
    t.join(20)
    # env.created when it is placed, env.state (running) when the create
    # ends, then env.ready (a VM with no readiness check is ready as soon as
    # it runs)
    assert [e.kind for e in got] == ["env.created", "env.state", "env.ready", "env.deleted"]


def test_bad_key_file(tmp_path):
    with pytest.raises(ttfleet.KeyFileError):
        ttfleet.Client(broker="tcp://127.0.0.1:1", key=str(tmp_path / "nope"),
                       broker_key=str(tmp_path / "nope2"))


def test_wait_ready(client):
    """wait(ready=True) returns once every VM's probe succeeded, and times
    out with each VM that is not ready named, with its console tail."""
    client.env_create("rdy-none", images=[("sleeper", 2)], cpu=1, mem_mib=64, ready="none")
    env = client.wait("rdy-none", ready=True, timeout_s=30)
    assert [vm.ready for vm in env.vms] == [True, True]
    assert all(vm.ready_at > 0 for vm in env.vms)
    client.env_create("rdy-never", images=["sleeper"], cpu=1, mem_mib=64, ports=[9],
                      ready="tcp:9")
    t0 = time.monotonic()
    with pytest.raises(TimeoutError) as e:
        client.wait("rdy-never", ready=True, timeout_s=2)
    assert 2 <= time.monotonic() - t0 < 15
    assert "0 of 1 VMs ready" in str(e.value)
    assert "VM_RUNNING" in str(e.value)
    # running (not ready) is enough without ready=True
    assert client.wait("rdy-never", timeout_s=10).name == "rdy-never"
    with pytest.raises(ttfleet.NotFound):
        client.wait("no-such-env", timeout_s=1)
    with pytest.raises(ttfleet.BadRequest):
        client.env_create("rdy-bad", images=["sleeper"], ready="tcp:notaport")
    for name in ("rdy-none", "rdy-never"):
        client.env_delete(name)


def test_every_status_has_an_exported_class():
    """Each value of the .proto's Status enum but OK has its own exported,
    documented BrokerError subclass (walks the enum of the schema the
    package was built from)."""
    names = [v.name for v in pb.Status.DESCRIPTOR.values]
    assert "QUOTA_EXCEEDED" in names and "GUEST_UNREACHABLE" in names and "QUEUED" in names
    for v in pb.Status.DESCRIPTOR.values:
        if v.name == "OK":
            continue
        cls = ttfleet.errors.BY_STATUS.get(v.name)
        assert cls is not None, "no exception class for status %s" % v.name
        assert getattr(ttfleet, cls.__name__) is cls, "%s is not exported" % cls.__name__
        assert cls.__name__ in ttfleet.__all__, "%s is not in __all__" % cls.__name__
        assert issubclass(cls, ttfleet.BrokerError)
        assert (cls.status, cls.code) == (v.name, v.number)
        assert v.name in ttfleet.errors.STATUS_DOCS, "status %s is not documented" % v.name
        assert ttfleet.errors.STATUS_DOCS[v.name] in cls.__doc__
        assert ttfleet.errors.for_status(v.name) is cls
    assert ttfleet.QuotaExceeded.status == "QUOTA_EXCEEDED"
    assert ttfleet.GuestUnreachable.status == "GUEST_UNREACHABLE"
    assert ttfleet.Queued.status == "QUEUED"
    assert ttfleet.WorkerTimeout.status == "TIMEOUT"
    unknown = ttfleet.errors.for_status("99")
    assert issubclass(unknown, ttfleet.BrokerError) and unknown.status == "99"


def test_queued_create_returns_its_position(client, pool):
    """A create with queue=True on a full pool returns normally, with state
    "queued" and its position; it runs once the capacity frees. A quota
    refusal raises the exported QuotaExceeded."""
    # the earlier tests' deletes may still be in flight on the worker
    harness.create_while_freeing(
        lambda: client.env_create("q-fill", images=["sleeper"], cpu=8, mem_mib=64))
    try:
        env = client.env_create("q-wait", images=["sleeper"], cpu=4, mem_mib=64, queue=True,
                                max_wait=60)
        assert env.state == "queued" and env.queue_position == 1, env
        second = client.env_create("q-wait2", images=["sleeper"], cpu=4, mem_mib=64,
                                   queue=True, max_wait=60)
        assert second.queue_position == 2
        assert client.env_show("q-wait").state == "queued"
    finally:
        client.env_delete("q-fill")
    assert client.wait("q-wait", timeout_s=30).state == "running"
    assert client.wait("q-wait2", timeout_s=30).state == "running"
    client.env_delete("q-wait")
    client.env_delete("q-wait2")
    r = pool.ctl("quota", "set", "pyt-quota", "--envs", 0, tenant=harness.ADMIN)
    assert r.rc == 0, repr(r)
    with ttfleet.Client(broker=pool.clients_ep, tenant="pyt-quota", timeout_ms=5000) as c:
        with pytest.raises(ttfleet.QuotaExceeded) as e:
            c.env_create("q-over", images=["sleeper"], cpu=1, mem_mib=64)
    assert e.value.status == "QUOTA_EXCEEDED" and "envs" in e.value.message
