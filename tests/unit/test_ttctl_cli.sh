#!/bin/sh
# ttctl's command line without a broker: --version on every binary, durations
# and sizes parsed (or refused with exit 2) by the one option parser, -o,
# per-command help from the option tables, the generated shell completion,
# and a dead endpoint answered in about a second.
# usage: test_ttctl_cli.sh BUILD_DIR
set -u
B=$1
T=$B/tools/ttctl
fail=0
no() { echo "FAIL: $*"; fail=1; }
# expect RC PATTERN CMD...: exit code RC and PATTERN in stdout+stderr
expect() {
    want=$1 pat=$2
    shift 2
    out=$("$@" 2>&1)
    rc=$?
    [ "$rc" = "$want" ] || no "$* -> rc $rc, want $want: $out"
    printf '%s' "$out" | grep -q -- "$pat" || no "$* -> no '$pat' in: $out"
}
for b in broker/ttbroker worker/ttworker gw/ttgw tools/ttbench tools/ttcheck tools/ttctl; do
    expect 0 "^$(basename $b) [0-9][0-9.]*\$" "$B/$b" --version
done
dead=tcp://127.0.0.1:9 # discard: nothing listens on loopback
# durations and sizes pass the parser (then the dead endpoint answers)
expect 3 "no broker at $dead" $T --broker $dead env create x --image a --lifetime 2h --mem 2G --disk 10G
expect 3 "no broker at $dead" $T --broker $dead env create x --image a --lifetime 90m --max-wait 1h --queue
expect 3 "no broker at $dead" $T --broker $dead --timeout 5s env extend x +1h
expect 3 "no broker at $dead" $T --broker $dead env extend x 1h30m
expect 3 "no broker at $dead" $T --broker $dead quota set t --max-lifetime 1d
expect 2 "not a duration" $T env create x --image a --lifetime 2x
expect 2 "not a duration" $T env create x --image a --lifetime 0
expect 2 "not a duration" $T env create x --image a --lifetime 1000d
expect 2 "not a duration" $T env extend x +
expect 2 "not a duration" $T env extend x 1h30
expect 2 "not a size" $T env create x --image a --mem 2X
expect 2 "not a size" $T env create x --image a --mem 2000G
expect 2 "not a time" $T --timeout 2d status
expect 2 "--output takes json, yaml, table or wide" $T -o xml status
expect 2 "--state takes" $T env list --state sleepy
expect 2 "--wait takes running|ready" $T env start x --wait=soon
expect 2 "unknown option '--nope'" $T env show x --nope
expect 2 "env name is required" $T env show
# help from the tables
expect 0 "--lifetime DUR" $T env create --help
expect 0 "90m, 2h, 1d" $T env create --help
expect 0 "--state STATE" $T env list -h
expect 0 "-o, --output" $T --help
# a dead endpoint: about 1 s, not 3 attempts of 10 s
start=$(date +%s)
expect 3 "no broker at $dead" $T --broker $dead status
[ $(($(date +%s) - start)) -le 4 ] || no "a dead endpoint took $(($(date +%s) - start)) s"
# completion, generated from the same tables
comp() { # comp WORD... : what bash completes for the last word
    bash -c 'source <("$0" completion bash); COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _ttctl; echo "${COMPREPLY[*]}"' "$T" ttctl "$@"
}
[ "$(comp ima)" = "image" ] || no "completion of 'ima': $(comp ima)"
[ "$(comp env cr)" = "create" ] || no "completion of 'env cr': $(comp env cr)"
[ "$(comp env create web --life)" = "--lifetime" ] || no "completion of '--life': $(comp env create web --life)"
[ "$(comp env list --st)" = "--state" ] || no "completion of 'env list --st': $(comp env list --st)"
[ "$(comp --vers)" = "--version" ] || no "completion of '--vers': $(comp --vers)"
expect 0 "bashcompinit" $T completion zsh
expect 2 "give bash or zsh" $T completion fish
[ $fail = 0 ] && echo "ok"
exit $fail
