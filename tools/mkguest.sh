#!/bin/sh
# Builds the ttfleet test guest from Debian packages: the distribution
# kernel (linux-image-amd64, from /boot) and an initramfs holding
# busybox-static, the e1000 NIC module and tools/guest/init.
#
#   tools/mkguest.sh OUTDIR     # writes OUTDIR/kernel and OUTDIR/initrd
#
# OUTDIR is then a qemu image for ttworker (an image directory with
# `kernel` and `initrd`, see worker/engines/engine_qemu.c). Nothing binary is kept
# in the repository: this runs at build or test time. The output is
# rebuilt only when an input is newer than it.
set -eu
OUT=${1:?usage: tools/mkguest.sh OUTDIR}
HERE=$(cd "$(dirname "$0")" && pwd)
INIT=$HERE/guest/init
BUSYBOX=${TTFLEET_BUSYBOX:-/bin/busybox}

# the newest kernel that has its e1000 module installed beside it
KERNEL= MOD=
for k in $(ls -1 /boot/vmlinuz-* 2>/dev/null | sort -V -r); do
    ver=${k#/boot/vmlinuz-}
    m=$(find "/lib/modules/$ver/kernel/drivers/net/ethernet/intel/e1000" -name 'e1000.ko*' 2>/dev/null | head -n 1)
    if [ -n "$m" ]; then KERNEL=$k MOD=$m; break; fi
done
if [ -z "$KERNEL" ]; then
    echo "mkguest: no /boot/vmlinuz-* with an e1000 module (install linux-image-amd64)" >&2
    exit 1
fi
if ! "$BUSYBOX" --list 2>/dev/null | grep -qx httpd; then
    echo "mkguest: $BUSYBOX is not a full busybox (install busybox-static)" >&2
    exit 1
fi
case "$MOD" in
*.ko) ;;
*) echo "mkguest: $MOD is compressed; busybox insmod needs a plain .ko" >&2; exit 1 ;;
esac

mkdir -p "$OUT"
if [ -f "$OUT/initrd" ] && [ -f "$OUT/kernel" ] &&
   [ "$OUT/initrd" -nt "$INIT" ] && [ "$OUT/initrd" -nt "$0" ] &&
   [ "$OUT/kernel" -nt "$KERNEL" ] && [ "$OUT/initrd" -nt "$MOD" ]; then
    exit 0
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT INT TERM
mkdir -p "$TMP/root/bin" "$TMP/root/lib/modules" "$TMP/root/etc" "$TMP/root/proc" \
    "$TMP/root/sys" "$TMP/root/dev" "$TMP/root/tmp"
cp "$BUSYBOX" "$TMP/root/bin/busybox"
cp "$MOD" "$TMP/root/lib/modules/e1000.ko"
cp "$INIT" "$TMP/root/init"
chmod 755 "$TMP/root/init" "$TMP/root/bin/busybox"
(cd "$TMP/root" && find . | sort | "$BUSYBOX" cpio -o -H newc 2>/dev/null) | gzip -9 >"$TMP/initrd"
cp "$KERNEL" "$TMP/kernel"
mv "$TMP/kernel" "$OUT/kernel"
mv "$TMP/initrd" "$OUT/initrd"
echo "mkguest: $OUT (kernel $(basename "$KERNEL"), $(wc -c <"$OUT/initrd") byte initrd)"
