"""pytest plugin: the `ttfleet_env` and `ttfleet_client` fixtures.

Installed with the package, pytest loads it by itself (entry point
pytest11 "ttfleet"); without the entry point, add
`pytest_plugins = ["ttfleet.pytest_plugin"]` to a conftest.py.

    import pytest

    @pytest.mark.ttfleet_env(image="debian12", dup=2, cpu=2, ready="ssh", timeout="10m")
    def test_build(ttfleet_env):
        for vm in ttfleet_env.vms:
            vm.exec(["make", "test"], check=True)

ttfleet_env creates an env for the test (a fresh name: "pytest-", the test's
name and 8 random hex digits, unless the marker gives name=), waits until it
is ready, hands it over as a ttfleet.sdk.Env and deletes it after the test,
passed or failed. The marker's keywords are Client.env()'s; without a marker
(or without image=) the image is --ttfleet-image.

Where the broker is: --ttfleet-broker (default $TTFLEET_BROKER or
tcp://127.0.0.1:5555), --ttfleet-tenant ($TTFLEET_TENANT or "default"),
--ttfleet-key and --ttfleet-broker-key ($TTFLEET_KEY, $TTFLEET_BROKER_KEY)
for CURVE, --ttfleet-timeout-ms per attempt.
"""

import os
from typing import Iterator

import pytest

from . import sdk
from .client import Client


def pytest_addoption(parser: "pytest.Parser") -> None:
    g = parser.getgroup("ttfleet", "ttfleet test envs (the ttfleet_env fixture)")
    g.addoption("--ttfleet-broker", default=os.environ.get("TTFLEET_BROKER",
                                                           "tcp://127.0.0.1:5555"),
                help="the broker's clients endpoint (default $TTFLEET_BROKER or "
                     "tcp://127.0.0.1:5555)")
    g.addoption("--ttfleet-tenant", default=os.environ.get("TTFLEET_TENANT", "default"),
                help="tenant (ignored under CURVE; default $TTFLEET_TENANT or 'default')")
    g.addoption("--ttfleet-key", default=os.environ.get("TTFLEET_KEY"),
                help="CURVE client certificate ($TTFLEET_KEY)")
    g.addoption("--ttfleet-broker-key", default=os.environ.get("TTFLEET_BROKER_KEY"),
                help="the broker's public CURVE certificate ($TTFLEET_BROKER_KEY)")
    g.addoption("--ttfleet-timeout-ms", type=int, default=10000,
                help="timeout of one request attempt (default 10000)")
    g.addoption("--ttfleet-image", default=None,
                help="image of ttfleet_env when its marker names none")


def pytest_configure(config: "pytest.Config") -> None:
    config.addinivalue_line(
        "markers", "ttfleet_env(**keywords): the env ttfleet_env creates for the test "
        "(ttfleet.Client.env keywords: image, dup, cpu, mem_mib, ready, timeout, ...)")


@pytest.fixture
def ttfleet_client(request: "pytest.FixtureRequest") -> Iterator[Client]:
    """A ttfleet.Client for the broker of the --ttfleet-* options."""
    opt = request.config.getoption
    client = Client(broker=opt("--ttfleet-broker"), tenant=opt("--ttfleet-tenant"),
                    key=opt("--ttfleet-key"), broker_key=opt("--ttfleet-broker-key"),
                    timeout_ms=opt("--ttfleet-timeout-ms"))
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def ttfleet_env(request: "pytest.FixtureRequest", ttfleet_client: Client) -> Iterator[sdk.Env]:
    """A ready env for the test, deleted after it (see the module doc)."""
    marker = request.node.get_closest_marker("ttfleet_env")
    spec = dict(marker.kwargs) if marker else {}
    if marker and marker.args:
        raise pytest.UsageError("ttfleet_env marker: keywords only, got %r" % (marker.args,))
    if "image" not in spec and "images" not in spec:
        image = request.config.getoption("--ttfleet-image")
        if not image:
            raise pytest.UsageError("ttfleet_env: no image (mark the test "
                                    "@pytest.mark.ttfleet_env(image=...) or give "
                                    "--ttfleet-image)")
        spec["image"] = image
    name = spec.pop("name", None) or sdk.unique_name("pytest-" + request.node.name)
    with ttfleet_client.env(name, **spec) as env:
        yield env
