# Two recordings at once: kprobes stack, so both attach and both see the whole workload.
refwatch record -o /out/a.rwt -d 120 2> /out/a.err & a=$!
wait_for /out/a.rwt
refwatch record -o /out/b.rwt -- daxload fsdax-mmap 2> /out/b.err; rc=$?
[ $rc = 0 ] || fail "second record exit $rc: $(cat /out/b.err)"
kill -INT $a; wait $a; rc=$?
[ $rc = 0 ] || fail "first record exit $rc: $(cat /out/a.err)"
events /out/a.rwt; na=$n; ra=$rc
events /out/b.rwt; nb=$n; rb=$rc
[ $ra = 0 ] && [ $rb = 0 ] || fail "report exits $ra $rb"
[ "${nb:-0}" -ge 4096 ] || fail "second instance saw $nb events"
[ "${na:-0}" -ge "${nb:-0}" ] || fail "first instance saw $na events, the second $nb"
grep -q '"dropped": 0,' /out/a.rwt.json && grep -q '"dropped": 0,' /out/b.rwt.json || fail "drops"
