#!/bin/sh
# Quick start: installs what ttfleet needs (Debian 12), builds it, starts a
# broker and one local worker on their embedded defaults (loopback
# endpoints, state under ./run), creates an env and shows it.
#
#   tools/quickstart.sh          # build, start, create env "demo", show it
#   tools/quickstart.sh stop     # delete env "demo", stop both daemons
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
        $CTL env delete demo >/dev/null 2>&1 || true
    fi
    for name in worker broker; do
        pidfile=$RUN/$name.pid
        if [ -f "$pidfile" ]; then
            pid=$(cat "$pidfile")
            # only our own pid, and only if it is still the program we started
            if kill -0 "$pid" 2>/dev/null &&
               grep -q "tt$name" "/proc/$pid/cmdline" 2>/dev/null; then
                kill "$pid"
                i=0
                while kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
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
"$BIN/broker/ttbroker" --state "$RUN/broker" >"$RUN/broker.log" 2>&1 &
echo $! >"$RUN/broker.pid"
"$BIN/worker/ttworker" --state "$RUN/worker" --host-id local \
    --images "$ROOT/tools/images" >"$RUN/worker.log" 2>&1 &
echo $! >"$RUN/worker.pid"

# wait (bounded) until the worker has joined the pool
i=0
until $BIN/tools/ttctl --tenant admin --json host list 2>/dev/null | grep -q '"online"'; do
    i=$((i + 1))
    if [ $i -gt 100 ]; then
        echo "quickstart: the worker did not join within 10 s; see $RUN/*.log" >&2
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
echo "broker and worker are running (logs in $RUN). Try:"
echo "  $BIN/tools/ttctl --tenant demo env list"
echo "  $BIN/tools/ttctl --tenant admin host list"
echo "stop everything with: tools/quickstart.sh stop"
