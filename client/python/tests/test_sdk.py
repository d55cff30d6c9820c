"""pytest: the high-level API (ttfleet.sdk, ttfleet.aio, the pytest plugin,
client/examples/ci_job.py) against a real broker and worker (process
engine), the package pip-installed from this tree as a user would."""

import asyncio
import dataclasses
import os
import subprocess
import sys
import tempfile
import threading
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "tests",
                                "integration"))
import harness  # noqa: E402

harness.ttfleet_package()
import ttfleet  # noqa: E402
import ttfleet.aio  # noqa: E402
from ttfleet import durations  # noqa: E402

EXAMPLES = os.path.join(harness.SOURCE, "client", "examples")
SMALL = dict(image="sleeper", cpu=1, mem_mib=64, disk_mib=64)


@pytest.fixture(scope="module")
def pool():
    harness.watchdog(170)
    p = harness.Pool(hosts={"h1": {"cpu": 16, "mem": 8192,
                                   "args": ["--public-address", "127.0.0.1"]}}).start()
    yield p
    p.close()
    harness.watchdog(0)


@pytest.fixture
def client(pool):
    with ttfleet.Client(broker=pool.clients_ep, tenant="sdk", timeout_ms=5000,
                        events=pool.events_ep) as c:
        yield c


def gone(client, name):
    with pytest.raises(ttfleet.NotFound):
        client.env_show(name)
    return True


def test_durations():
    assert durations.parse("90s") == (90, False)
    assert durations.parse("10m") == (600, False)
    assert durations.parse("2h") == (7200, False)
    assert durations.parse("1d") == (86400, False)
    assert durations.parse("1h30m") == (5400, False)
    assert durations.parse("+1h") == (3600, True)
    assert durations.parse(45) == (45, False)
    assert durations.parse("45") == (45, False)
    assert durations.parse(1.2) == (2, False)
    for bad in ("", "h", "-5", "5y", "1h 30m", "1.5h", "+", "++1h", None, True, -1,
                float("nan"), "99999999d"):
        with pytest.raises(ValueError):
            durations.parse(bad)
    with pytest.raises(ValueError):
        durations.seconds("+1h")


def test_env_context_creates_waits_and_deletes(client):
    with client.env("sdk-ctx", dup=2, ready="none", timeout="30s", lifetime="1h",
                    ports=[80], **SMALL) as env:
        assert isinstance(env, ttfleet.Env) and dataclasses.is_dataclass(env)
        assert env.name == "sdk-ctx" and env.tenant == "sdk" and env.lifetime == 3600
        assert env.state == "running" and env.state is ttfleet.EnvState.RUNNING
        assert len(env.vms) == 2
        for vm in env.vms:
            assert isinstance(vm, ttfleet.VM) and dataclasses.is_dataclass(vm)
            assert vm.state == "running" and vm.state is ttfleet.VmState.RUNNING
            assert str(vm.state) == "running"
            assert vm.ready and vm.cpu == 1 and vm.mem_mib == 64
            assert {p.guest for p in vm.ports} == {22, 80}
            assert all(isinstance(p, ttfleet.PortMap) for p in vm.ports)
        listed = client.list_envs()
        assert [e.name for e in listed] == ["sdk-ctx"]
        assert isinstance(listed[0], ttfleet.EnvInfo) and listed[0].state == "running"
        again = client.get_env("sdk-ctx")
        assert [v.vm_id for v in again.vms] == [v.vm_id for v in env.vms]
        assert env.vm(env.vms[1].vm_id) is env.vms[1]
        with pytest.raises(LookupError):
            env.vm(1)
        # the low-level API still returns protobuf messages
        assert client.env_show("sdk-ctx").vms[0].state == ttfleet.pb.VM_RUNNING
    assert gone(client, "sdk-ctx")


def test_deleted_on_exception_and_failed_wait(client):
    with pytest.raises(RuntimeError):
        with client.env("sdk-exc", **SMALL):
            raise RuntimeError("the test failed")
    assert gone(client, "sdk-exc")
    # a readiness probe that never succeeds: the wait times out, the env goes
    t0 = time.monotonic()
    with pytest.raises(TimeoutError) as e:
        with client.env("sdk-never", ready="tcp:9", ports=[9], timeout="2s", **SMALL):
            pytest.fail("the block ran without a ready env")
    assert 2 <= time.monotonic() - t0 < 20
    assert "0 of 1 VMs ready" in str(e.value)
    assert gone(client, "sdk-never")
    # keep=True leaves it; refused creates do not delete someone else's env
    with client.env("sdk-keep", keep=True, **SMALL):
        pass
    with pytest.raises(ttfleet.AlreadyExists):
        with client.env("sdk-keep", **SMALL):
            pass
    assert client.env_show("sdk-keep").state == "running"
    client.env_delete("sdk-keep")
    with pytest.raises(ValueError):
        client.env("bad name", **SMALL)
    with pytest.raises(ValueError):
        client.env("sdk-x", image="sleeper", images=["sleeper"])
    with pytest.raises(ValueError):
        client.env("sdk-x", image="sleeper", lifetime="soon")


def test_exec(client):
    with client.env("sdk-exec", **SMALL) as env:
        vm = env.vms[0]
        r = vm.exec(["echo", "a b", "$HOME"])  # a list is argv: no shell
        assert isinstance(r, ttfleet.ExecResult) and dataclasses.is_dataclass(r)
        assert (r.exit_code, r.stdout, r.stderr, r.ok) == (0, "a b $HOME\n", "", True)
        assert r.stdout_bytes == b"a b $HOME\n" and r.argv == ["echo", "a b", "$HOME"]
        r = vm.exec("echo $((1 + 2)); echo oops >&2; exit 3")  # a string: sh -c
        assert (r.exit_code, r.stdout, r.stderr, r.ok) == (3, "3\n", "oops\n", False)
        with pytest.raises(ttfleet.ExecError) as e:
            vm.exec("echo out; echo err >&2; exit 7", check=True)
        assert (e.value.exit_code, e.value.stdout, e.value.stderr) == (7, "out\n", "err\n")
        assert e.value.result.argv[:2] == ["sh", "-c"] and "exited 7" in str(e.value)
        assert vm.exec("cat", stdin="fed").stdout == "fed"
        t0 = time.monotonic()
        r = vm.exec(["sleep", "30"], timeout="1s")
        assert r.timed_out and not r.ok and r.signal == 9 and time.monotonic() - t0 < 15
        with pytest.raises(ttfleet.ExecError) as e:
            vm.exec(["sleep", "30"], timeout=1, check=True)
        assert e.value.result.timed_out and "timed out" in str(e.value)
        for bad in ([], "", "  "):
            with pytest.raises(ValueError):
                vm.exec(bad)
        with pytest.raises(ValueError):
            vm.exec(["true"], timeout="2h")


def test_put_get_and_ssh_command(client, tmp_path):
    with client.env("sdk-cp", **SMALL) as env:
        vm = env.vms[0]
        work = vm.exec("pwd", check=True).stdout.strip()
        data = os.urandom(200 * 1024)
        digest = vm.put(data, work + "/blob")
        assert len(digest) == 64
        assert vm.get(work + "/blob") == data
        src = tmp_path / "src.txt"
        src.write_text("from a file\n")
        vm.put(str(src), work + "/f.txt")
        vm.get(work + "/f.txt", tmp_path / "back.txt")
        assert (tmp_path / "back.txt").read_text() == "from a file\n"
        with pytest.raises(ValueError):
            vm.put(data, "relative/path")
        with pytest.raises(ttfleet.GuestFailed):
            vm.get(work + "/no-such-file")
        argv = vm.ssh_command(identity="/k/id")
        port = vm.public_port(22)
        assert 40000 <= port <= 59999
        assert argv[:3] == ["ssh", "-p", str(port)] and argv[-1] == "root@127.0.0.1"
        assert "-i" in argv and "StrictHostKeyChecking=no" in argv
        assert vm.ssh_command(user="debian", command=["uname"])[-3:] == [
            "debian@127.0.0.1", "--", "uname"]
        with pytest.raises(ttfleet.Unavailable):
            dataclasses.replace(vm, public_address="").ssh_command()
        for user in ("-oProxyCommand=x", "a b", "", "x" * 65, "r@h"):
            with pytest.raises(ValueError):
                vm.ssh_command(user=user)
        with pytest.raises(ttfleet.Error):
            dataclasses.replace(vm, public_address="-oProxyCommand=x").ssh_command()
        assert isinstance(vm.console(), str)


def test_extend_and_events(client):
    with client.env("sdk-ext", lifetime="1h", **SMALL) as env:
        assert env.extend("2h").lifetime == 7200
        assert env.extend("+10m").lifetime == 7800 and env.lifetime == 7800
        with pytest.raises(ValueError):
            env.extend("2 hours")
        got = []
        t = threading.Thread(target=lambda: got.extend(
            env.events(topic="env.", timeout="15s", count=1)))
        t.start()
        time.sleep(0.5)  # the subscription is made when iteration starts
        env.pause()
        t.join(20)
        assert len(got) == 1 and isinstance(got[0], ttfleet.Event), got
        assert got[0].env == "sdk-ext" and got[0].kind.startswith("env.")
        assert got[0].id > 0  # the broker's event log id
        assert env.state == "paused"
        assert env.resume().state == "running"
        assert env.refresh().vms[0].state == "running"
        # suspend needs an engine that saves memory (qemu): the process
        # engine is refused with the reason, the env untouched
        with pytest.raises(ttfleet.BadRequest) as e:
            env.suspend()
        assert "cannot save a VM's memory" in str(e.value)
        assert env.refresh().state == "running"


def test_queued_env_context(client, pool):
    """queue=True: the context waits through the admission queue."""
    # the earlier tests' deletes may still be in flight on the worker
    harness.create_while_freeing(
        lambda: client.env_create("sdk-fill", images=["sleeper"], cpu=16, mem_mib=64))
    other = ttfleet.Client(broker=pool.clients_ep, tenant="sdk", timeout_ms=5000)
    freed = threading.Timer(1.5, lambda: other.env_delete("sdk-fill"))
    freed.start()
    t0 = time.monotonic()
    try:
        with client.env("sdk-queued", queue=True, max_wait="1m", timeout="30s", **SMALL) as env:
            assert env.state == "running" and len(env.vms) == 1
            assert time.monotonic() - t0 >= 1.4  # it waited in the queue for the delete
    finally:
        freed.join()
        other.close()
    assert gone(client, "sdk-queued")


def test_aio(pool):
    async def main():
        async with ttfleet.aio.Client(broker=pool.clients_ep, tenant="sdk-aio",
                                      timeout_ms=5000) as c:
            async with c.env("aio-ctx", dup=2, ready="none", timeout="30s", **SMALL) as env:
                assert isinstance(env, ttfleet.aio.AsyncEnv) and env.state == "running"
                results = await asyncio.gather(*(vm.exec(["sh", "-c", "echo $0", vm.ip])
                                                 for vm in env.vms))
                assert [r.stdout.strip() for r in results] == [vm.ip for vm in env.vms]
                # calls on one client run at once: two 2 s commands take < 4 s
                t0 = time.monotonic()
                await asyncio.gather(*(vm.exec("sleep 2", check=True) for vm in env.vms))
                assert 2 <= time.monotonic() - t0 < 3.6
                with pytest.raises(ttfleet.ExecError) as e:
                    await env.vms[0].exec("exit 5", check=True)
                assert e.value.exit_code == 5
                assert (await env.extend("+1h")).lifetime == env.lifetime
                assert [e.name for e in await c.env_list()] == ["aio-ctx"]
                shown = await c.env_show("aio-ctx")
                assert shown.vms[0].state == "running"
                with pytest.raises(ttfleet.BadRequest) as e:
                    await env.suspend()
                assert "cannot save a VM's memory" in str(e.value)
                with pytest.raises(ttfleet.InvalidState):
                    await env.resume()  # running: nothing to resume
            with pytest.raises(ttfleet.NotFound):
                await c.env_show("aio-ctx")
            with pytest.raises(RuntimeError):
                async with c.env("aio-exc", **SMALL):
                    raise RuntimeError("boom")
            with pytest.raises(ttfleet.NotFound):
                await c.env_show("aio-exc")
            info = await c.env_create("aio-raw", ["sleeper"], cpu=1, mem_mib=64)
            assert info.state == "running"
            assert (await c.wait("aio-raw", timeout="20s")).vms[0].ready
            big = await c.exec("aio-raw", info.vms[0].vm_id, "seq 1 100000")
            assert big.stdout_bytes == b"".join(b"%d\n" % i for i in range(1, 100001))
            await c.env_delete("aio-raw")
            with pytest.raises(ttfleet.NoCapacity):
                await c.env_create("aio-huge", ["sleeper"], cpu=64)
        dead = ttfleet.aio.Client(broker="tcp://127.0.0.1:%d" % harness.free_port(),
                                  timeout_ms=100, retries=2)
        with pytest.raises(ttfleet.TransportError):
            await dead.env_list()
        dead.close()
    asyncio.run(main())


def test_pytest_plugin(pool):
    """The example test file under a real pytest run: the plugin is found
    by its entry point in the installed package, each test gets its env
    and the envs are gone after."""
    env = dict(os.environ, PYTHONPATH=harness.ttfleet_package())
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        os.path.join(EXAMPLES, "pytest_ttfleet_env.py"),
                        "--ttfleet-broker", pool.clients_ep, "--ttfleet-tenant", "sdk-plugin",
                        "--ttfleet-image", "sleeper"],
                       capture_output=True, text=True, env=env, timeout=90,
                       cwd=tempfile.gettempdir())
    assert p.returncode == 0, p.stdout + p.stderr
    assert "2 passed" in p.stdout
    with ttfleet.Client(broker=pool.clients_ep, tenant="sdk-plugin", timeout_ms=5000) as c:
        assert c.list_envs() == []
    # without an image: a usage error, not a hang
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        os.path.join(EXAMPLES, "pytest_ttfleet_env.py"),
                        "--ttfleet-broker", pool.clients_ep],
                       capture_output=True, text=True, env=env, timeout=60,
                       cwd=tempfile.gettempdir())
    assert p.returncode != 0 and "no image" in p.stdout + p.stderr


def test_ci_job_example(pool, tmp_path):
    """client/examples/ci_job.py (the README's CI script) passes on two VMs,
    reports a failing test with its output and exit 1, and leaves no env."""
    script = tmp_path / "run-tests.sh"
    script.write_text('echo "ran in $(basename "$1")" > "$1/report.txt"\n')
    env = dict(os.environ, PYTHONPATH=harness.ttfleet_package())
    argv = [sys.executable, os.path.join(EXAMPLES, "ci_job.py"), "--broker", pool.clients_ep,
            "--tenant", "sdk-ci", "--image", "sleeper", "--dup", "2", "--cpu", "1",
            "--mem-mib", "64", "--ready", "none", "--timeout", "30s",
            "--script", str(script), "--workdir", "/tmp"]
    p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=90)
    assert p.returncode == 0, p.stdout + p.stderr
    # the VMs' own /tmp (a process VM has a root of its own, not the host's)
    assert p.stdout.count("passed: ran in tmp") == 2, p.stdout
    script.write_text('echo "test_foo failed"; exit 4\n')
    p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=90)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "FAILED (exit 4)" in p.stdout and "test_foo failed" in p.stdout
    with ttfleet.Client(broker=pool.clients_ep, tenant="sdk-ci", timeout_ms=5000) as c:
        assert c.list_envs() == []


def test_installed_with_type_marker_and_plugin_entry_point():
    """PEP 561 marker and the pytest11 entry point are in the installed package."""
    from importlib import metadata
    here = os.path.dirname(ttfleet.__file__)
    assert here.startswith(harness.ttfleet_package())
    assert os.path.exists(os.path.join(here, "py.typed"))
    eps = [ep for ep in metadata.distribution("ttfleet").entry_points if ep.group == "pytest11"]
    assert [(ep.name, ep.value) for ep in eps] == [("ttfleet", "ttfleet.pytest_plugin")]


def test_type_stubs_name_every_status_class():
    """errors.pyi (generated at install) spells out every class errors.py
    makes at import, so type checkers see ttfleet.QuotaExceeded & co."""
    here = os.path.dirname(ttfleet.__file__)
    with open(os.path.join(here, "errors.pyi")) as f:
        stub = f.read()
    for cls in ttfleet.errors.BY_STATUS.values():
        assert "class %s(BrokerError): ...  # %s\n" % (cls.__name__, cls.status) in stub
    assert os.path.exists(os.path.join(here, "ttfleet_pb2.pyi"))
