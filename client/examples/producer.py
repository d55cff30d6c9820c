#!/usr/bin/env python3
"""Example ttfleet producer in Python: create an env, show it, delete it.

It uses nothing of ttfleet but schema/ttfleet.proto: any Majordomo (7/MDP)
client plus the protobuf messages is enough to drive the broker. The
ttfleet_pb2 module is generated from the .proto, for example:

    protoc --proto_path=schema --python_out=/tmp/pb schema/ttfleet.proto
    PYTHONPATH=/tmp/pb client/examples/producer.py --image sleeper

Frames of a request on a DEALER socket: [empty]["MDPC01"][service][body],
and the reply has the same shape. A retry after a timeout reuses the
request id (the broker then answers with the first attempt's outcome) on a
fresh socket, so a late reply to the old one can never be taken for the
new answer.

With CURVE on the broker, give this client's certificate and the broker's
public one (as `ttctl keygen` writes them): --key CERT (CERT_secret is read
too) and --broker-key CERT, or TTFLEET_KEY / TTFLEET_BROKER_KEY. The tenant
then comes from the key and --tenant is ignored by the broker.

Exit status: 0 when every step succeeded, 1 when the broker answered with an
error, 2 when a key file cannot be read, 3 when the broker did not answer.
"""

import argparse
import os
import sys
import time
import uuid

import zmq

try:
    import ttfleet_pb2 as pb
except ImportError:
    sys.exit("producer: ttfleet_pb2 not found: generate it with protoc --python_out "
             "from schema/ttfleet.proto and put its directory on PYTHONPATH")

MDP_CLIENT = b"MDPC01"


class TransportError(Exception):
    pass


def load_curve(key, broker_key):
    """(public, secret, broker public) from a client cert (CERT and
    CERT_secret, as `ttctl keygen` writes them) and the broker's public cert.
    Raises ValueError naming the file that is missing or unusable."""
    import zmq.auth  # only CURVE users need it
    if not key or not broker_key:
        raise ValueError("CURVE needs both a client key and the broker's key")
    secret_path = key if key.endswith("_secret") else key + "_secret"
    try:
        public, secret = zmq.auth.load_certificate(secret_path)
        server, _ = zmq.auth.load_certificate(broker_key)
    except (OSError, ValueError) as e:
        raise ValueError("cannot load a CURVE certificate: %s" % e) from e
    if not secret:
        raise ValueError("%s has no secret key" % secret_path)
    return public, secret, server


class Client:
    """A minimal 7/MDP client: one request at a time, retries, id matching."""

    def __init__(self, endpoint, tenant, timeout_ms=10000, retries=3, key=None,
                 broker_key=None):
        self.endpoint = endpoint
        self.tenant = tenant
        self.timeout_ms = timeout_ms
        self.retries = retries
        self.ctx = zmq.Context.instance()
        self.sock = None
        self.curve = load_curve(key, broker_key) if key or broker_key else None

    def _connect(self):
        if self.sock is not None:
            self.sock.close(linger=0)
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if self.curve:
            public, secret, server = self.curve
            self.sock.curve_publickey = public
            self.sock.curve_secretkey = secret
            self.sock.curve_serverkey = server
        self.sock.connect(self.endpoint)

    def close(self):
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None

    def call(self, service, request):
        """Sends a Request, returns the Reply; raises TransportError."""
        request.request_id = request.request_id or uuid.uuid4().hex[:16]
        request.tenant = request.tenant or self.tenant
        body = request.SerializeToString()
        for _attempt in range(self.retries):
            if self.sock is None:
                self._connect()
            self.sock.send_multipart([b"", MDP_CLIENT, service.encode(), body])
            deadline = time.monotonic() + self.timeout_ms / 1000.0
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not self.sock.poll(int(left * 1000) + 1):
                    break
                reply = self._parse(self.sock.recv_multipart(), service, request.request_id)
                if reply is None:
                    continue
                if reply.status == pb.IN_PROGRESS:
                    time.sleep(0.2)
                    self.sock.send_multipart([b"", MDP_CLIENT, service.encode(), body])
                    continue
                return reply
            self.close()  # a fresh socket for the retry
        raise TransportError("no reply from %s after %d attempts of %d ms"
                             % (self.endpoint, self.retries, self.timeout_ms))

    @staticmethod
    def _parse(frames, service, request_id):
        """The Reply in frames if they are a valid answer to request_id."""
        if len(frames) != 4 or frames[0] != b"" or frames[1] != MDP_CLIENT:
            print("producer: dropped a malformed reply", file=sys.stderr)
            return None
        if frames[2] != service.encode():
            print("producer: dropped a reply from service %r" % frames[2], file=sys.stderr)
            return None
        reply = pb.Reply()
        try:
            reply.ParseFromString(frames[3])
        except Exception:  # protobuf raises DecodeError, but be broad on input
            print("producer: dropped an undecodable reply", file=sys.stderr)
            return None
        # An error without a request id answers a request the broker could
        # not decode (e.g. an unknown service): with one request in flight,
        # it is ours. Anything else with another id is a late reply.
        anonymous_error = not reply.request_id and reply.status not in (pb.OK, pb.IN_PROGRESS)
        if reply.request_id != request_id and not anonymous_error:
            print("producer: dropped a stale reply", file=sys.stderr)
            return None
        return reply


class BrokerError(Exception):
    def __init__(self, what, reply):
        super().__init__("%s: %s: %s" % (what, pb.Status.Name(reply.status), reply.message))


def check(what, reply):
    if reply.status != pb.OK:
        raise BrokerError(what, reply)
    return reply


def print_env(env):
    print("env %s (tenant %s): %s, %d VMs, expires at %d"
          % (env.name, env.tenant, env.state, env.vm_count, env.expires_at))
    for vm in env.vms:
        ports = " ".join("%d->%d" % (p.guest, p.public) for p in vm.ports)
        print("  vm %d on %s: image %s, engine %s, ip %s, mac %s, %s, ports %s"
              % (vm.vm_id, vm.host, vm.image, vm.engine, vm.ip, vm.mac,
                 pb.VmState.Name(vm.state), ports or "-"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--broker", default=os.environ.get("TTFLEET_BROKER", "tcp://127.0.0.1:5555"))
    ap.add_argument("--tenant", default=os.environ.get("TTFLEET_TENANT", "default"))
    ap.add_argument("--image", default="sleeper")
    ap.add_argument("--name", default="py-example")
    ap.add_argument("--dup", type=int, default=1)
    ap.add_argument("--engine", default="")
    ap.add_argument("--timeout", type=int, default=10000, help="ms per attempt")
    ap.add_argument("--key", default=os.environ.get("TTFLEET_KEY"),
                    help="CURVE: this client's certificate (CERT and CERT_secret)")
    ap.add_argument("--broker-key", default=os.environ.get("TTFLEET_BROKER_KEY"),
                    help="CURVE: the broker's public certificate")
    args = ap.parse_args()

    try:
        client = Client(args.broker, args.tenant, timeout_ms=args.timeout, key=args.key,
                        broker_key=args.broker_key)
    except ValueError as e:
        print("producer: %s" % e, file=sys.stderr)
        return 2
    try:
        req = pb.Request()
        req.env_create.name = args.name
        req.env_create.images.add(image=args.image, dup=args.dup)
        req.env_create.engine = args.engine
        req.env_create.cpu = 1
        req.env_create.mem_mib = 64
        req.env_create.disk_mib = 64
        req.env_create.ports.append(80)
        req.env_create.lifetime = 600
        reply = check("create", client.call("tt.env", req))
        print("created:")
        print_env(reply.env)

        req = pb.Request()
        req.env_show.name = args.name
        reply = check("show", client.call("tt.env", req))
        print("shown:")
        print_env(reply.env)
        if len(reply.env.vms) != args.dup:
            raise SystemExit("producer: expected %d VMs, got %d" % (args.dup, len(reply.env.vms)))

        req = pb.Request()
        req.env_delete.name = args.name
        check("delete", client.call("tt.env", req))
        print("deleted env %s" % args.name)
    except BrokerError as e:
        print("producer: %s" % e, file=sys.stderr)
        return 1
    except TransportError as e:
        print("producer: %s" % e, file=sys.stderr)
        return 3
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
