#!/bin/sh
# Push and fetch throughput of a SIZE_MIB file over loopback against cp of
# the same file (each followed by a sync, as the blob server and the
# fetcher fsync before they commit). Usage: measure.sh BUILD_DIR [SIZE_MIB]
set -eu
B="$1/tests/blob/ttblobtool"
MIB="${2:-1024}"
T=$(mktemp -d /tmp/tt-measure-XXXXXX)
SP=""
cleanup() { [ -n "$SP" ] && kill "$SP" 2>/dev/null; wait 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT INT TERM
PORT=$(python3 -c 'import sys; sys.path.insert(0, "'"$(dirname "$0")"'/../integration"); from harness import free_port; print(free_port())')
EP="tcp://127.0.0.1:$PORT"
{ printf 'QFI\373'; head -c $((MIB * 1048576 - 4)) /dev/urandom; } > "$T/disk.qcow2"
sync
now() { date +%s.%N; }
t0=$(now); cp "$T/disk.qcow2" "$T/copy"; sync; t1=$(now)
cp_s=$(echo "$t1 - $t0" | bc)
"$B" serve "$EP" "$T/srv" > "$T/srv.log" 2>&1 &
SP=$!
sleep 1
t0=$(now); "$B" push "$EP" "$T/disk.qcow2" > "$T/push.log"; sync; t1=$(now)
push_s=$(echo "$t1 - $t0" | bc)
D=$("$B" inspect "$T/disk.qcow2" | cut -d' ' -f2)
t0=$(now); "$B" fetch "$EP" "$T/cache" "$D" > "$T/fetch.log"; sync; t1=$(now)
fetch_s=$(echo "$t1 - $t0" | bc)
cmp "$T/disk.qcow2" "$T/cache/blobs/${D#sha256:}"
echo "size ${MIB} MiB"
echo "cp    ${cp_s} s  $(echo "$MIB / $cp_s" | bc) MiB/s"
echo "push  ${push_s} s  $(echo "$MIB / $push_s" | bc) MiB/s  (includes hashing the file first: $(tail -1 "$T/push.log"))"
echo "fetch ${fetch_s} s  $(echo "$MIB / $fetch_s" | bc) MiB/s"
echo "ratio push/cp $(echo "scale=2; $cp_s / $push_s" | bc)  fetch/cp $(echo "scale=2; $cp_s / $fetch_s" | bc) (1.0 = as fast as cp)"
