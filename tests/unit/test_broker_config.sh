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
echo "test_broker_config: ok"
