#!/bin/sh
# Quick start: installs what ttfleet needs (Debian 12), builds it, starts a
# broker and one local worker on their embedded defaults (loopback
# endpoints, state under ./run), creates an env and shows it. When QEMU is
# installed it also builds the test guest (tools/mkguest.sh), offers the
# qemu engine with user-mode networking (public ports on 127.0.0.1), boots
# the guest in env "guest" and shows its port map and its answer.
#
#   tools/quickstart.sh          # build, start, create envs "demo" (and "guest"), show them
#   tools/quickstart.sh stop     # delete them, stop both daemons
#
# The daemons keep running after the script ends so you can use ttctl:
#   build/tools/ttctl env list
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RUN=$ROOT/run
BIN=$ROOT/build
CTL="$BIN/tools/ttctl --broker tcp://127.0.0.1:5555 --tenant demo"

stop_all() {
    if [ -x "$BIN/tools/ttctl" ]; then
        # the broker answers a delete at once; the worker destroys the VMs
        # after it (a QEMU guest takes its power-off grace): wait, bounded,
        # until their directories are gone, so no QEMU or console logger
        # outlives the worker
        ids=""
        for env in demo guest; do
            ids="$ids $($CTL --json env show "$env" 2>/dev/null | /usr/bin/python3 -c \
                'import json,sys; print(" ".join(str(v["vm_id"]) for v in json.load(sys.stdin)["vms"]))' \
                2>/dev/null || true)"
            $CTL env delete "$env" >/dev/null 2>&1 || true
        done
        i=0
        for id in $ids; do
            while [ -e "$RUN/worker/vms/$id" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
        done
        if [ $i -ge 600 ]; then
            echo "quickstart: VMs$ids not destroyed within 60 s; see $RUN/worker.log" >&2
        fi
    fi
    for name in worker broker; do
        pidfile=$RUN/$name.pid
        if [ -f "$pidfile" ]; then
            pid=$(cat "$pidfile")
            # only our own pid, and only if it is still the program we started
            if kill -0 "$pid" 2>/dev/null &&
               grep -q "tt$name" "/proc/$pid/cmdline" 2>/dev/null; then
                kill "$pid"
                # the worker finishes the operations in flight first, bounded
                # by its stop grace (2 s) + 5 s and 2 s to read what was sent
                i=0
                while kill -0 "$pid" 2>/dev/null && [ $i -lt 150 ]; do sleep 0.1; i=$((i + 1)); done
                if kill -0 "$pid" 2>/dev/null; then
                    echo "quickstart: tt$name $pid still runs after 15 s" >&2
                fi
            fi
            rm -f "$pidfile"
        fi
    done
}

if [ "${1:-}" = stop ]; then
    stop_all
    echo "stopped; state is kept in $RUN"
    exit 0
fi

./tools/deps.sh
cmake -S . -B "$BIN" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BIN" -j "$(nproc 2>/dev/null || echo 2)"

stop_all
mkdir -p "$RUN"
# the images: the repo's sample programs, plus the test guest for QEMU
QEMU=""
rm -rf "$RUN/images"
mkdir -p "$RUN/images"
cp -R "$ROOT"/tools/images/. "$RUN/images/"
if command -v qemu-system-x86_64 >/dev/null && ./tools/mkguest.sh "$BIN/guest/ttguest"; then
    ln -s "$BIN/guest/ttguest" "$RUN/images/ttguest"
    QEMU="--engines process,hollow,qemu --net user"
fi
# mostly idle demo VMs share cpus, as the worker's own default allows
"$BIN/broker/ttbroker" --state "$RUN/broker" --cpu-overcommit 4 >"$RUN/broker.log" 2>&1 &
echo $! >"$RUN/broker.pid"
# shellcheck disable=SC2086 # QEMU holds several flags
"$BIN/worker/ttworker" --state "$RUN/worker" --host-id local \
    --images "$RUN/images" $QEMU >"$RUN/worker.log" 2>&1 &
echo $! >"$RUN/worker.pid"

# wait (bounded) until the worker has joined the pool (with qemu it first
# probes whether KVM works, a few seconds)
i=0
until $BIN/tools/ttctl --tenant admin --json host list 2>/dev/null | grep -q '"online"'; do
    i=$((i + 1))
    if [ $i -gt 300 ]; then
        echo "quickstart: the worker did not join within 30 s; see $RUN/*.log" >&2
        exit 1
    fi
    sleep 0.1
done

# a demo env left over from an earlier run is replaced
$CTL env delete demo >/dev/null 2>&1 || true
$CTL env create demo --image sleeper --dup 2 --cpu 1 --mem 256 --disk 1024 --port 80 \
    --lifetime 3600 >/dev/null
echo "created env demo (tenant demo):"
$CTL env show demo
echo
if [ -n "$QEMU" ]; then
    $CTL env delete guest >/dev/null 2>&1 || true
    $CTL env create guest --image ttguest --engine qemu --cpu 1 --mem 256 --disk 1024 \
        --port 80 --lifetime 3600 >/dev/null
    echo "created env guest (tenant demo): the test guest under QEMU; its port map:"
    $CTL env show guest
    port=$($CTL --json env show guest | /usr/bin/python3 -c \
        'import json,sys; print([p["public"] for p in json.load(sys.stdin)["vms"][0]["ports"] if p["guest"] == 80][0])')
    echo "waiting (up to 90 s) for the guest to boot and answer on 127.0.0.1:$port ..."
    i=0
    until answer=$(/usr/bin/python3 -c 'import sys,urllib.request; print(urllib.request.urlopen("http://127.0.0.1:%s/" % sys.argv[1], timeout=2).read().decode().strip())' "$port" 2>/dev/null); do
        i=$((i + 1))
        if [ $i -gt 90 ]; then
            echo "quickstart: the guest did not answer; see $RUN/worker/vms/*/console.log" >&2
            break
        fi
        sleep 1
    done
    [ -n "${answer:-}" ] && echo "http://127.0.0.1:$port/ says: $answer"
    echo
fi
echo "broker and worker are running (logs in $RUN). Try:"
echo "  $BIN/tools/ttctl --tenant demo env list"
echo "  $BIN/tools/ttctl --tenant admin host list"
echo "stop everything with: tools/quickstart.sh stop"
