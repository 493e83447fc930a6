# SIGINT, SIGTERM and SIGKILL at random points of a recording over a DAX workload. INT and TERM
# end it cleanly: exit 0 and a footer whose count matches every event (report has no warning).
# KILL leaves a trace cut off after a whole frame (the recorder writes each ring-buffer batch
# at once): report reads it with a warning.
for sig in INT TERM KILL INT TERM KILL; do
	t=/out/$sig-$RANDOM.rwt
	# A duration far past the kill, and the workload repeated until refwatch is gone: the
	# signal always lands on a running recording, however fast one workload pass is.
	refwatch record --force -o $t -d 120 2> $t.err & p=$!
	wait_for $t
	( while kill -0 $p 2>/dev/null; do daxload fsdax-gup > /dev/null; done ) & w=$!
	# Up to 3 s in: from before the first event to well into the workload (≈20k events a pass).
	sleep $((RANDOM % 30 / 10)).$((RANDOM % 10))
	kill -$sig $p; wait $p; rrc=$?
	wait $w
	events $t
	echo "$sig: record exit $rrc, report exit $rc, $n events, $(cat $t.report.err)"
	if [ $sig = KILL ]; then
		[ $rrc = 137 ] || fail "$sig: record exit $rrc"
		# Cut off after a whole frame, or complete when the kill came after the footer.
		[ $rc = 0 ] || fail "$sig: report exit $rc: $(cat $t.report.err)"
		[ -z "$(cat $t.report.err)" ] || grep -q 'warning: trace cut off' $t.report.err \
			|| fail "$sig: $(cat $t.report.err)"
	else
		[ $rrc = 0 ] || fail "$sig: record exit $rrc: $(cat $t.err)"
		[ $rc = 0 ] && [ -z "$(cat $t.report.err)" ] || fail "$sig: report exit $rc: $(cat $t.report.err)"
		grep -q '"dropped": 0,' $t.json || fail "$sig: footer missing or drops"
	fi
done
