#!/bin/sh
# Build the libFuzzer targets with clang and run each for a bounded time.
#   tests/fuzz/run.sh [SECONDS_PER_TARGET]   (default 30)
# Seeds come from tests/fuzz/corpus/<kind>; new inputs go to a temporary
# copy, removed at the end. A finding makes the script fail, and the
# crashing input is kept in build-fuzz/findings/.
set -eu
cd "$(dirname "$0")/../.."
SECS=${1:-30}
CC=clang cmake -S . -B build-fuzz -DTTFLEET_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j "$(nproc 2>/dev/null || echo 2)" \
    --target fuzz_broker_client fuzz_broker_worker fuzz_worker_command fuzz_gw_json fuzz_evstream fuzz_worker_guest fuzz_broker_ready
WORK=$(mktemp -d /tmp/ttfuzz-run-XXXXXX)
trap 'rm -rf "$WORK"' EXIT INT TERM
mkdir -p build-fuzz/findings
status=0
for pair in broker_client:client broker_worker:worker worker_command:worker_cmd gw_json:gw_json evstream:evstream worker_guest:guest broker_ready:ready; do
    target=${pair%%:*}
    kind=${pair#*:}
    mkdir -p "$WORK/$kind"
    cp tests/fuzz/corpus/"$kind"/* "$WORK/$kind"/
    echo "== fuzz_$target for ${SECS}s"
    if ! ./build-fuzz/tests/fuzz/fuzz_"$target" -max_total_time="$SECS" -max_len=8192 \
        -artifact_prefix=build-fuzz/findings/"$target"- -print_final_stats=1 \
        "$WORK/$kind" >"$WORK/$target.log" 2>&1; then
        tail -40 "$WORK/$target.log"
        status=1
    else
        grep -E "^(Done|stat::number_of_executed_units)" "$WORK/$target.log" || true
    fi
done
exit $status
