#!/bin/sh
# Stand-in for the lab command until xtask has it: busybox initramfs with
# the module, inject and guest-test.sh; boot it under TCG; log to stdout.
#
#   smoke.sh ABI VMLINUZ [scenario...]     e.g.
#   smoke.sh 6.1.0-56 /tmp/boot/vmlinuz-6.1.0-56-amd64
# (vmlinuz: dpkg-deb --fsys-tarfile linux-image-$ABI-amd64-unsigned_*.deb
#  | tar -x ./boot/vmlinuz-$ABI-amd64).  Needs busybox-static, qemu-system-x86.
set -eu
ABI=$1 KERNEL=$2
shift 2
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$HOME/.cache/refwatch/inject/out}
R=$(mktemp -d)
trap 'rm -rf "$R"' EXIT
mkdir -p "$R/bin" "$R/proc" "$R/sys" "$R/dev" "$R/tmp"
cp /bin/busybox "$R/bin/busybox"
cp "$OUT/$ABI/refwatch_inject.ko" "$R/"
gcc -O2 -Wall -static -o "$R/inject" "$HERE/inject.c"
cp "$HERE/guest-test.sh" "$R/"
cat > "$R/init" <<EOI
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mount -t tracefs none /sys/kernel/tracing
grep -i -E 'reserved|persistent' /proc/iomem
sh /guest-test.sh /refwatch_inject.ko /inject $*
echo "guest: tainted \$(cat /proc/sys/kernel/tainted)"
poweroff -f
EOI
chmod +x "$R/init"
(cd "$R" && find . | cpio -o -H newc 2>/dev/null | gzip -1) > "$R.cpio.gz"
timeout 300 qemu-system-x86_64 -accel tcg,thread=single -cpu qemu64 -smp 2 -m 2G \
	-nographic -no-reboot -kernel "$KERNEL" -initrd "$R.cpio.gz" \
	-append 'console=ttyS0 panic=-1 loglevel=4 memmap=256M!1G memmap=128M$0x60000000'
rm -f "$R.cpio.gz"
