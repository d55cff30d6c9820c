#!/usr/bin/env python3
"""Example ttfleet producer in Python: create an env, show it, delete it.

It uses the ttfleet package (client/python), installed from Debian packages
alone:

    pip install --no-build-isolation ./client/python
    client/examples/producer.py --image sleeper

ttfleet.Client speaks 7/MDP to the broker: each call is one Request of
schema/ttfleet.proto; a retry after a timeout reuses the request id on a
fresh socket, so the broker answers it with the first attempt's outcome.

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

try:
    import ttfleet
    from ttfleet import pb
except ImportError:
    sys.exit("producer: the ttfleet package is not installed: "
             "pip install --no-build-isolation ./client/python")

# The names earlier versions of this example exported (tests use Client).
Client = ttfleet.Client
TransportError = ttfleet.TransportError
BrokerError = ttfleet.BrokerError


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
        client = ttfleet.Client(broker=args.broker, tenant=args.tenant, key=args.key,
                                broker_key=args.broker_key, timeout_ms=args.timeout)
    except ttfleet.KeyFileError as e:
        print("producer: %s" % e, file=sys.stderr)
        return 2
    try:
        env = client.env_create(args.name, images=[(args.image, args.dup)], engine=args.engine,
                                cpu=1, mem_mib=64, disk_mib=64, ports=[80], lifetime=600)
        print("created:")
        print_env(env)
        env = client.env_show(args.name)
        print("shown:")
        print_env(env)
        if len(env.vms) != args.dup:
            raise SystemExit("producer: expected %d VMs, got %d" % (args.dup, len(env.vms)))
        client.env_delete(args.name)
        print("deleted env %s" % args.name)
    except ttfleet.BrokerError as e:
        print("producer: %s" % e, file=sys.stderr)
        return 1
    except ttfleet.TransportError as e:
        print("producer: %s" % e, file=sys.stderr)
        return 3
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
