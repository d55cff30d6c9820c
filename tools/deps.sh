#!/bin/sh
# Installs the Debian 12 packages ttfleet needs to build and test.
# The fourth line is the qemu engine and nft backend: libnftables, QEMU,
# and what tools/mkguest.sh builds the test guest from (the distribution
# kernel and busybox-static). The one after is ttgw and what its tests use:
# libmicrohttpd, pytest, the OpenAPI checker (yaml, jsonschema), the
# Prometheus text parser and promtool (the prometheus package: the metrics
# and alert rules linter), Chart.js for the dashboard's charts, Chromium and
# its DevTools client (websocket), scdoc for the man pages, systemd-analyze,
# dpkg and lintian for the package tests; libyaml for ttctl -o yaml. libraft
# and libuv are broker HA (broker/ha): C-Raft and its I/O; libseccomp-dev for
# the process engine's system-call filter.
# Runs `apt-get update` once, and only when something is missing, so a second
# run is fast.
set -eu
PKGS="build-essential cmake pkg-config libczmq-dev libzmq3-dev libprotobuf-c-dev
protobuf-c-compiler protobuf-compiler libsqlite3-dev sqlite3 python3 python3-zmq
python3-protobuf iproute2 procps util-linux e2fsprogs libjansson-dev libyaml-dev python3-yaml clang
libnftables-dev nftables qemu-system-x86 qemu-utils busybox-static linux-image-amd64
libmicrohttpd-dev python3-pytest python3-setuptools python3-pip python3-yaml python3-jsonschema
python3-prometheus-client prometheus libjs-chart.js python3-websocket chromium scdoc systemd dpkg
libssl-dev libpcre2-dev genisoimage mmdebstrap openssh-client lintian libraft-dev libuv1-dev
libseccomp-dev"
if [ -n "${TTFLEET_EXTRA_PKGS:-}" ]; then PKGS="$PKGS $TTFLEET_EXTRA_PKGS"; fi
missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
        missing="$missing $p"
    fi
done
if [ -n "$missing" ]; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
    echo "deps: installing:$missing" >&2
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends $missing
fi
