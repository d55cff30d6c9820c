#!/bin/sh
# Every ttctl command the op registry (schema/ops.def, last column) names is
# a command `ttctl --help` lists. Usage: test_registry_cli.sh OPS_DEF TTCTL
set -eu
ops=$1 ttctl=$2
help=$("$ttctl" --help 2>&1)
n=0 bad=0
for cli in $(sed -n 's/^TT_OP(.*, *"\([a-z][a-z -]*\)")$/\1/p' "$ops" | tr ' ' '_' | sort -u); do
    verb=$(echo "$cli" | tr '_' ' ')
    n=$((n + 1))
    if ! printf '%s\n' "$help" | grep -q "^  $verb\( \|$\)"; then
        echo "FAIL: schema/ops.def names 'ttctl $verb', which ttctl --help does not list"
        bad=$((bad + 1))
    fi
done
[ "$n" -gt 20 ] || { echo "FAIL: read only $n commands from $ops"; exit 1; }
[ "$bad" -eq 0 ] || exit 1
echo "registry: $n ttctl commands, all listed by ttctl --help"
