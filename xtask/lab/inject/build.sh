#!/bin/sh
# Build refwatch_inject.ko against Debian's headers for one guest kernel,
# without touching the host's /etc/apt or /usr/src.  See README.md.
#
#   build.sh 6.1.0-56 6.1.192-2 6.1                       # bookworm(-security)
#   build.sh 6.12.95+deb12 6.12.95-1~bpo12+1 6.12.95+deb12 # bookworm-backports
#
# args: ABI (uname -r without -amd64), Debian package version,
#       linux-kbuild-<x> suffix.  Output: $OUT/<abi>/refwatch_inject.ko
set -eu
ABI=$1 VER=$2 KB=$3
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${CACHE:-$HOME/.cache/refwatch/inject}
OUT=${OUT:-$CACHE/out}
APTDIR=$CACHE/apt
TREE=$CACHE/tree-$ABI

# 1. private apt config (never the system's /etc/apt)
mkdir -p "$APTDIR/lists/partial" "$APTDIR/cache/archives/partial" \
	"$APTDIR/parts" "$APTDIR/etc" "$CACHE/debs"
cat > "$APTDIR/etc/sources.list" <<EOF
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-backports main
deb http://deb.debian.org/debian-security bookworm-security main
deb http://deb.debian.org/debian bookworm-updates main
EOF
cat > "$APTDIR/apt.conf" <<EOF
Dir::Etc::SourceList "$APTDIR/etc/sources.list";
Dir::Etc::SourceParts "$APTDIR/parts";
Dir::State::Lists "$APTDIR/lists";
Dir::Cache "$APTDIR/cache";
Dir::State::status "/dev/null";
APT::Architecture "amd64";
EOF
export APT_CONFIG="$APTDIR/apt.conf"
[ -n "$(ls "$APTDIR/lists" 2>/dev/null | grep -v partial)" ] || apt-get -q update

# 2. download (gcc-12 itself comes from the host: Debian 12's gcc-12)
PKGS="linux-headers-$ABI-amd64=$VER linux-headers-$ABI-common=$VER linux-kbuild-$KB=$VER"
case $ABI in 6.1.*) PKGS="$PKGS linux-compiler-gcc-12-x86=$VER" ;; esac
(cd "$CACHE/debs" && apt-get -q download $PKGS)

# 3. extract into a private tree
rm -rf "$TREE"
mkdir -p "$TREE"
for p in $PKGS; do
	n=${p%%=*}
	dpkg-deb -x "$CACHE/debs/${n}_$(echo "$VER" | sed 's/:/%3a/')_"*.deb "$TREE"
done

# 4. fix up: the arch Makefile includes the *absolute* common Makefile.
#    The scripts/tools symlinks are relative (../../lib/linux-kbuild-*)
#    and already resolve inside the tree.
HDR=$TREE/usr/src/linux-headers-$ABI-amd64
sed -i "s|^include /usr/src/|include $TREE/usr/src/|" "$HDR/Makefile"

# 5. build out of the source dir (kbuild writes into M=)
B=$OUT/$ABI
rm -rf "$B"
mkdir -p "$B"
cp "$HERE/refwatch_inject.c" "$HERE/refwatch_inject.h" "$HERE/Kbuild" "$B/"
# Module BTF (6.12 headers ship vmlinux, so modfinal would run pahole, which
# the host may lack): not needed by refwatch (it names module frames from
# kallsyms), so switch it off for this module only.
make -C "$HDR" M="$B" CONFIG_DEBUG_INFO_BTF_MODULES= modules
echo "built $B/refwatch_inject.ko"
