#!/bin/sh
# ttbroker --config FILE: the file's options apply, flags override them,
# unknown keys and bad values are refused with a reason. Uses ipc
# endpoints in a private directory; stops only the broker it started.
set -u
BROKER=$1
T=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

cat > "$T/b.cfg" <<CFG
broker
    state = "$T/from-file"
    clients = "ipc://$T/c"
    workers = "ipc://$T/w"
    events = "ipc://$T/e"
    spread = true
CFG
"$BROKER" --config "$T/b.cfg" --state "$T/from-flag" >"$T/log" 2>&1 &
pid=$!
i=0
# the database appears before the endpoints are logged: wait for both
while { [ ! -e "$T/from-flag/broker.db" ] || ! grep -q "ipc://$T/c" "$T/log"; } && [ $i -lt 100 ]; do
    sleep 0.1
    i=$((i + 1))
done
[ -e "$T/from-flag/broker.db" ] || { cat "$T/log"; fail "the --state flag did not override the file"; }
[ ! -e "$T/from-file" ] || fail "the file's state dir was used although a flag overrode it"
grep -q "ipc://$T/c" "$T/log" || { cat "$T/log"; fail "the file's clients endpoint was not used"; }
kill "$pid"; wait "$pid" 2>/dev/null; pid=

printf 'broker\n    bogus = 1\n' > "$T/bad.cfg"
"$BROKER" --config "$T/bad.cfg" 2>"$T/err" && fail "an unknown key was accepted"
grep -q "bogus is not a ttbroker option" "$T/err" || fail "no reason for the unknown key"
printf 'liveness = 1\n' > "$T/bad2.cfg"
"$BROKER" --config "$T/bad2.cfg" 2>"$T/err" && fail "a bad value was accepted"
grep -q "liveness wants an integer in 2..100" "$T/err" || fail "no reason for the bad value"
# broker HA: the --raft-* options go together and are checked, from flags
# and from the file alike, before anything starts
# (bounded: a broker that accepts runs on, and the check fails at once)
raft() { timeout 10 "$BROKER" --state "$T/raft" --clients "ipc://$T/rc" --workers "ipc://$T/rw" \
    --events "ipc://$T/re" "$@" 2>"$T/err" && fail "accepted: $*"; }
P="1=127.0.0.1:17901,2=127.0.0.1:17902,3=127.0.0.1:17903"
C="1=tcp://127.0.0.1:17911,2=tcp://127.0.0.1:17912,3=tcp://127.0.0.1:17913"
W="1=tcp://127.0.0.1:17921,2=tcp://127.0.0.1:17922,3=tcp://127.0.0.1:17923"
raft --raft-id 1 --raft-peers "$P" --raft-clients "$C" --raft-workers "$W"
grep -q -- "--raft-dir is required" "$T/err" || fail "no reason for a missing --raft-dir"
raft --raft-id 4 --raft-peers "$P" --raft-clients "$C" --raft-workers "$W" --raft-dir "$T/r"
grep -q "raft-id 4 is not among the members" "$T/err" || fail "no reason for an unknown id"
raft --raft-id 1 --raft-peers "$P" --raft-clients "1=tcp://127.0.0.1:1" --raft-workers "$W" \
    --raft-dir "$T/r"
grep -q "member 2 is missing from --raft-clients" "$T/err" || fail "no reason for a member without clients"
raft --raft-id 1 --raft-peers "1=127.0.0.1:0,2=x:2,3=y:3" --raft-dir "$T/r"
grep -q "want HOST:PORT" "$T/err" || fail "no reason for port 0"
raft --raft-id 1 --raft-peers "1=127.0.0.1:5,1=127.0.0.1:6" --raft-dir "$T/r"
grep -q "member 1 appears twice" "$T/err" || fail "no reason for a member given twice"
raft --raft-id 1 --raft-peers "1=127.0.0.1:5,2=127.0.0.1:6" --raft-clients "1=tcp://a:1,2=tcp://a:2" \
    --raft-workers "1=tcp://a:3,2=tcp://a:4" --raft-dir "$T/r"
grep -q "use an odd number" "$T/err" || fail "no reason for two members"
raft --raft-id 1 --raft-peers "1=10.1.2.3:5,2=10.1.2.4:5,3=10.1.2.5:5" --raft-clients "$C" \
    --raft-workers "$W" --raft-dir "$T/r"
grep -q "is not loopback" "$T/err" || fail "no reason for a non-loopback Raft address"
# a name that only starts like a loopback address resolves anywhere
raft --raft-id 1 --raft-peers "1=127.0.0.1:5,2=127.0.0.1.example.com:5,3=127.evil.example:5" \
    --raft-clients "$C" --raft-workers "$W" --raft-dir "$T/r"
grep -q "Raft address 127.0.0.1.example.com:5 of member 2 is not loopback" "$T/err" ||
    fail "a host name starting with 127. passed as loopback"
raft --raft-id 1 --raft-peers "1=127.0.0.1:5" --raft-clients "1=http://x" --raft-dir "$T/r"
grep -q "want a tcp:// or ipc:// endpoint" "$T/err" || fail "no reason for a bad clients endpoint"
printf 'broker\n    raft-id = 1\n    raft-peers = "%s"\n' "$P" > "$T/raft.cfg"
"$BROKER" --config "$T/raft.cfg" 2>"$T/err" && fail "a partial raft config file was accepted"
grep -q -- "--raft-dir is required" "$T/err" || fail "no reason for the file's missing raft-dir"
[ ! -e "$T/raft" ] || fail "a refused raft config created the state dir"
echo "test_broker_config: ok"
