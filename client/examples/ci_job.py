#!/usr/bin/python3
"""A CI job on ttfleet with the high-level Python API: make an env, copy the
test script into every VM, run it on all of them at once, collect each VM's
report, and always delete the env (also when a test fails or the job is
interrupted).

    ci_job.py --broker tcp://broker:5555 --tenant ci --image debian12 --dup 3 \
        --ready ssh --script ./run-tests.sh

Exit status: 0 every VM passed, 1 a test failed (its output is printed),
2 the env could not be made ready (or another ttfleet error), 3 no broker.
"""

import argparse
import concurrent.futures
import os
import sys

import ttfleet


def run_on(vm, script, workdir, timeout):
    """Copies the script into the VM, runs it, fetches its report."""
    remote = os.path.join(workdir, "ci-test.sh")
    vm.put(script, remote)
    result = vm.exec(["sh", remote, workdir], check=True, timeout=timeout)
    report = vm.get(os.path.join(workdir, "report.txt"))
    return result, report


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--broker", default=os.environ.get("TTFLEET_BROKER", "tcp://127.0.0.1:5555"))
    ap.add_argument("--tenant", default=os.environ.get("TTFLEET_TENANT", "ci"))
    ap.add_argument("--name", default=None, help="env name (default: ci- and random hex)")
    ap.add_argument("--image", default="debian12")
    ap.add_argument("--dup", type=int, default=3)
    ap.add_argument("--cpu", type=int, default=2)
    ap.add_argument("--mem-mib", type=int, default=2048)
    ap.add_argument("--ready", default="ssh", help="readiness: none, ssh, tcp:PORT, ...")
    ap.add_argument("--timeout", default="10m", help="how long the env may take to be ready")
    ap.add_argument("--test-timeout", default="20m", help="how long the tests may run")
    ap.add_argument("--script", required=True, help="the test script (gets the workdir as $1 "
                    "and writes $1/report.txt)")
    ap.add_argument("--workdir", default="/tmp", help="absolute directory in the VMs")
    args = ap.parse_args(argv)

    client = ttfleet.Client(broker=args.broker, tenant=args.tenant)
    name = args.name or ttfleet.sdk.unique_name("ci")
    try:
        with client.env(name, image=args.image, dup=args.dup, cpu=args.cpu,
                        mem_mib=args.mem_mib, ready=args.ready, timeout=args.timeout,
                        lifetime="2h") as env:
            print("env %s ready: %s" % (env.name, ", ".join(
                "vm %d on %s (%s)" % (vm.vm_id, vm.host, vm.state) for vm in env.vms)))
            with concurrent.futures.ThreadPoolExecutor(len(env.vms)) as pool:
                # one Client per thread: a Client is not thread-safe
                jobs = {}
                for vm in env.vms:
                    own = ttfleet.Client(broker=args.broker, tenant=args.tenant)
                    mine = own.get_env(env.name).vm(vm.vm_id, vm.host)
                    jobs[pool.submit(run_on, mine, args.script, args.workdir,
                                     args.test_timeout)] = (vm, own)
                failed = 0
                for job in concurrent.futures.as_completed(jobs):
                    vm, own = jobs[job]
                    try:
                        result, report = job.result()
                        print("vm %d passed: %s" % (vm.vm_id, report.decode().strip()))
                    except ttfleet.ExecError as e:
                        failed += 1
                        print("vm %d FAILED (exit %d):\n%s%s" % (vm.vm_id, e.exit_code,
                                                               e.stdout, e.stderr))
                    finally:
                        own.close()
            return 1 if failed else 0
    except ttfleet.TransportError as e:
        print("ci_job: %s" % e, file=sys.stderr)
        return 3
    except (ttfleet.Error, TimeoutError) as e:
        print("ci_job: %s" % e, file=sys.stderr)
        return 2
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
