# tracefs and debugfs unmounted: kprobes attach through the perf kprobe PMU, so recording works.
umount /sys/kernel/tracing; umount /sys/kernel/debug
grep -q tracefs /proc/mounts && fail "tracefs still mounted"
refwatch record -o /out/t.rwt -- daxload fsdax-mmap 2> /out/record.err; rc=$?
[ $rc = 0 ] || fail "record exit $rc: $(cat /out/record.err)"
events /out/t.rwt
[ $rc = 0 ] && [ "${n:-0}" -ge 4096 ] || fail "report exit $rc, $n events (expected >= 4096)"
