# $seconds (60 unless set before this file) of mixed DAX workloads under `refwatch record`,
# sampling its RSS every 5 s: no event dropped, a trace that reads clean, and RSS flat (the
# last sample at most 25% + 4 MiB above the first one after a 20 s warm-up).
seconds=${seconds:-60}
refwatch record -o /out/soak.rwt -d $seconds 2> /out/record.err & p=$!
wait_for /out/soak.rwt
( while kill -0 $p 2>/dev/null; do
	for w in fsdax-mmap fsdax-gup fsdax-truncate fsdax-pmd; do kill -0 $p 2>/dev/null && daxload $w > /dev/null; done
done ) &
while kill -0 $p 2>/dev/null; do
	grep VmRSS /proc/$p/status 2>/dev/null | awk -v t=$(cut -d. -f1 /proc/uptime) '{print t, $2}' >> /out/rss.txt
	sleep 5
done
wait $p; rc=$?
[ $rc = 0 ] || fail "record exit $rc: $(cat /out/record.err)"
wait
events /out/soak.rwt
[ $rc = 0 ] && [ -z "$(cat /out/soak.rwt.report.err)" ] || fail "report exit $rc: $(cat /out/soak.rwt.report.err)"
grep -q '"dropped": 0,' /out/soak.rwt.json || fail "events dropped: $(grep dropped /out/soak.rwt.json)"
echo "soak: $n events; RSS samples (uptime, KiB):"; cat /out/rss.txt
awk 'NR == 1 { t0 = $1 } !base && $1 - t0 >= 20 { base = $2 } { last = $2 }
	END { if (!base) { print "FAIL: no RSS sample after the warm-up"; exit 1 }
	       if (last > base * 1.25 + 4096) { printf "FAIL: RSS grew from %d to %d KiB\n", base, last; exit 1 } }' /out/rss.txt || failed=1
