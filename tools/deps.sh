#!/bin/sh
# Installs the Debian 12 packages ttfleet needs to build and test.
# The last line is the qemu engine and nft backend: libnftables, QEMU,
# and what tools/mkguest.sh builds the test guest from (the distribution
# kernel and busybox-static).
# Runs `apt-get update` once, and only when something is missing, so a second
# run is fast.
set -eu
PKGS="build-essential cmake pkg-config libczmq-dev libzmq3-dev libprotobuf-c-dev
protobuf-c-compiler protobuf-compiler libsqlite3-dev sqlite3 python3 python3-zmq
python3-protobuf iproute2 procps util-linux libjansson-dev clang libssl-dev
libnftables-dev nftables qemu-system-x86 qemu-utils busybox-static linux-image-amd64"
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
