#!/bin/sh
# Builds a Debian 12 guest image for the qemu engine from Debian packages:
# systemd, OpenSSH, cloud-init (NoCloud), the QEMU guest agent and the
# distribution kernel, with systemd-networkd as the network stack cloud-init
# renders to (with ifupdown the guest's network did not come up).
#
#   tools/mkimage-debian.sh OUTDIR
#
# OUTDIR becomes a qemu image directory for ttworker (worker/engines/engine_qemu.c):
#   kernel, initrd   the guest's own kernel and initramfs (direct boot)
#   disk.qcow2       its root filesystem (ext4, no partition table: /dev/vda)
#   cmdline          kernel arguments the engine appends (root=/dev/vda rw)
#   nocloud          marker: every VM gets a NoCloud seed (worker/guest/seed.c)
#   ready            the image's default readiness probe (worker/guest/probe.h)
#   inputs.sha256    what it was built from; the build is skipped when the
#                    inputs (this script, the suite, the package list) are
#                    unchanged and every output is present.
# The root filesystem is made with `mke2fs -d` (no loop mount, no
# privileges beyond what mmdebstrap needs). Nothing binary is kept in the
# repository. Needs mmdebstrap, e2fsprogs and qemu-utils; as root, or where
# mmdebstrap's unshare mode works. Takes about 70 s and ~780 MB on a warm
# network. e2fsprogs lets cloud-init grow the root filesystem to a bigger VM
# disk; sudo serves the default user (debian) that gets the keys.
set -eu
OUT=${1:?usage: tools/mkimage-debian.sh OUTDIR}
SUITE=${TTFLEET_DEBIAN_SUITE:-bookworm}
MIRROR=${TTFLEET_DEBIAN_MIRROR:-http://deb.debian.org/debian}
DISK_MIB=${TTFLEET_IMAGE_DISK_MIB:-2048}
PKGS="systemd-sysv,openssh-server,cloud-init,qemu-guest-agent,linux-image-amd64,udev,dbus,ca-certificates,e2fsprogs,sudo"

for tool in mmdebstrap mke2fs qemu-img sha256sum; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "mkimage-debian: $tool is not installed (Debian packages mmdebstrap, e2fsprogs, qemu-utils)" >&2
        exit 1
    fi
done

INPUTS=$( { cat "$0"; echo "$SUITE $MIRROR $DISK_MIB $PKGS"; } | sha256sum | cut -d' ' -f1)
if [ -f "$OUT/inputs.sha256" ] && [ "$(cat "$OUT/inputs.sha256")" = "$INPUTS" ] &&
   [ -s "$OUT/kernel" ] && [ -s "$OUT/initrd" ] && [ -s "$OUT/disk.qcow2" ]; then
    echo "mkimage-debian: $OUT is up to date"
    exit 0
fi

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
TMP=$(mktemp -d "$OUT/.build.XXXXXX")
trap 'rm -rf "$TMP"' EXIT INT TERM
ROOT=$TMP/root
T0=$(date +%s)

mmdebstrap --quiet --variant=apt --include="$PKGS" \
    --customize-hook='rm -f "$1"/etc/machine-id; touch "$1"/etc/machine-id' \
    "$SUITE" "$ROOT" "$MIRROR"

# Network: cloud-init renders the seed's network-config for systemd-networkd;
# a fallback .network matches any e* NIC with DHCP.
mkdir -p "$ROOT/etc/systemd/network" "$ROOT/etc/cloud/cloud.cfg.d"
cat >"$ROOT/etc/systemd/network/99-tt-fallback.network" <<'NET'
[Match]
Name=e*

[Network]
DHCP=ipv4
NET
cat >"$ROOT/etc/cloud/cloud.cfg.d/90-ttfleet.cfg" <<'CFG'
# ttfleet: the NoCloud seed is the only datasource; networkd renders.
datasource_list: [NoCloud, None]
system_info:
  network:
    renderers: [networkd]
CFG
rm -f "$ROOT/etc/network/interfaces"
echo "/dev/vda / ext4 defaults,errors=remount-ro 0 1" >"$ROOT/etc/fstab"
chroot "$ROOT" systemctl enable systemd-networkd.service ssh.service >/dev/null 2>&1 || true
chroot "$ROOT" systemctl enable serial-getty@ttyS0.service >/dev/null 2>&1 || true
# Host keys are made per VM at first boot (cloud-init), never shared.
rm -f "$ROOT"/etc/ssh/ssh_host_*
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin

K=$(ls -1 "$ROOT"/boot/vmlinuz-* | sort -V | tail -n 1)
I=$ROOT/boot/initrd.img-${K##*/vmlinuz-}
if [ ! -s "$K" ] || [ ! -s "$I" ]; then
    echo "mkimage-debian: the rootfs has no kernel and initrd under /boot" >&2
    exit 1
fi
cp "$K" "$TMP/kernel"
cp "$I" "$TMP/initrd"
chmod 644 "$TMP/kernel" "$TMP/initrd"

mke2fs -q -t ext4 -L root -d "$ROOT" "$TMP/root.img" "${DISK_MIB}M" >/dev/null
qemu-img convert -O qcow2 "$TMP/root.img" "$TMP/disk.qcow2"
echo "root=/dev/vda rw" >"$TMP/cmdline"
: >"$TMP/nocloud"
echo "ssh" >"$TMP/ready"
for f in kernel initrd disk.qcow2 cmdline nocloud ready; do mv "$TMP/$f" "$OUT/$f"; done
echo "$INPUTS" >"$OUT/inputs.sha256"
echo "mkimage-debian: $OUT in $(( $(date +%s) - T0 )) s (rootfs $(du -sm "$ROOT" | cut -f1) MB, disk $(du -m "$OUT/disk.qcow2" | cut -f1) MB)"
