# A release refwatch cannot parse: refused with exit 2 naming it (no guessing of a refcount
# era). A release newer than any known one runs with the newest era's rules.
real=$(cat /proc/sys/kernel/osrelease)
echo garbage > /tmp/osrelease
mount --bind /tmp/osrelease /proc/sys/kernel/osrelease || fail "cannot fake the release"
refwatch record -o /out/t.rwt -d 1 2> /out/garbage.err; rc=$?
[ $rc = 2 ] || fail "garbage release: exit $rc"
grep -q 'kernel release "garbage" has no version refwatch can read' /out/garbage.err || fail "garbage: $(cat /out/garbage.err)"
umount /proc/sys/kernel/osrelease
echo 99.1.0-future > /tmp/osrelease
mount --bind /tmp/osrelease /proc/sys/kernel/osrelease
refwatch probes > /out/probes.txt 2>&1 || fail "probes on 99.1: $(cat /out/probes.txt)"
refwatch record -o /out/future.rwt -- daxload fsdax-mmap 2> /out/future.err; rc=$?
[ $rc = 0 ] || fail "future release: exit $rc: $(cat /out/future.err)"
umount /proc/sys/kernel/osrelease
[ "$(cat /proc/sys/kernel/osrelease)" = "$real" ] || fail "release not restored"
