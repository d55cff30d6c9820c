"""ttfleet Python client. The protobuf module (ttfleet/ttfleet_pb2.py) is
generated from schema/ttfleet.proto by protoc when the package is built,
never committed: `pip install --no-build-isolation ./client/python` from the
repository root needs only Debian's python3-setuptools, python3-zmq,
python3-protobuf and protobuf-compiler. TTFLEET_PROTO names another
ttfleet.proto (for a copy of this directory outside the repository)."""

import os
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


def _proto():
    path = os.environ.get("TTFLEET_PROTO") or os.path.join(HERE, "..", "..", "schema",
                                                             "ttfleet.proto")
    if not os.path.exists(path):
        raise SystemExit("ttfleet: %s not found (set TTFLEET_PROTO)" % path)
    return os.path.abspath(path)


class BuildPy(build_py):
    """build_py that first runs protoc into the build tree's package dir."""

    def run(self):
        super().run()
        proto = _proto()
        protoc = shutil.which("protoc")
        if not protoc:
            raise SystemExit("ttfleet: protoc not found (Debian: protobuf-compiler)")
        out = os.path.join(self.build_lib, "ttfleet")
        os.makedirs(out, exist_ok=True)
        subprocess.run([protoc, "--proto_path=" + os.path.dirname(proto), "--python_out=" + out,
                        proto], check=True)


setup(
    name="ttfleet",
    version="0.1.0",
    description="Client for the ttfleet broker (7/MDP over ZeroMQ)",
    packages=["ttfleet"],
    package_data={"ttfleet": ["py.typed"]},  # PEP 561: the package has type hints
    python_requires=">=3.9",
    install_requires=[],  # pyzmq and protobuf come from Debian (python3-zmq, python3-protobuf)
    cmdclass={"build_py": BuildPy},
    # the ttfleet_env / ttfleet_client fixtures (ttfleet/pytest_plugin.py)
    entry_points={"pytest11": ["ttfleet = ttfleet.pytest_plugin"]},
)
