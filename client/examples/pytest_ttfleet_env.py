"""pytest with the ttfleet_env fixture (the ttfleet package's pytest
plugin): each test gets a ready env of its own, deleted after the test.

    pytest client/examples/pytest_ttfleet_env.py \
        --ttfleet-broker tcp://broker:5555 --ttfleet-tenant ci --ttfleet-image debian12
"""

import pytest


def test_default_env(ttfleet_env):
    """--ttfleet-image, one VM."""
    assert ttfleet_env.state == "running"
    assert len(ttfleet_env.vms) == 1
    r = ttfleet_env.vms[0].exec("echo hello from $(uname -s)", check=True)
    assert r.stdout == "hello from Linux\n"


@pytest.mark.ttfleet_env(dup=2, cpu=1, mem_mib=64, ready="none", timeout="60s")
def test_two_vms(ttfleet_env):
    """The marker's keywords are Client.env()'s."""
    assert [vm.state for vm in ttfleet_env.vms] == ["running", "running"]
    for vm in ttfleet_env.vms:
        assert vm.exec(["true"]).exit_code == 0
