# The hot-path bench's guest program (xtask/src/bench.rs): `run VARIANT REP` lines follow
# it. The host replaces its upper-case placeholders (the two loads and the hot probes'
# options) before the guest gets it.
cd /tmp
BT_OK=1
run() { # variant rep
	echo "lab: bench $1, repetition $2" > /dev/console
	# A repetition takes seconds: one still running after 5 min has hung. Show where.
	( sleep 300; echo "lab: bench $1 $2 hung; user tasks:" > /dev/console
	  for p in /proc/[0-9]*; do [ -e $p/exe ] && echo "$(cat $p/comm) $(cat $p/wchan) $(tr '\n' ' ' < $p/stack)"; done > /dev/console ) &
	watchdog=$!
	run_variant "$@"
	kill $watchdog 2>/dev/null
}
measure() { # variant rep [tracer command…]: churn, then zap, each under the tracer
	v=$1; rep=$2; shift 2
	for load in churn zap; do
		case $load in churn) work="CHURN" ;; zap) work="ZAP" ;; esac
		out=$("$@" $work 2>&1)
		# Kept for their entry counts (the last repetition's).
		[ -f /tmp/h.rwt ] && mv /tmp/h.rwt /out/$v-$load.rwt
		echo "$out" | grep -E '^(churn|zap)' | sed "s/^/RESULT variant=$v rep=$rep /"
		echo "$out" | grep -vE '^(churn|zap)' | sed "s/^/LOG $v $rep: /"
	done
}
# A bpftrace that does not exit on SIGINT must not hang the run: KILL it after 10 s.
stop_bpftrace() {
	kill -INT $bt 2>/dev/null; ( sleep 10; kill -KILL $bt 2>/dev/null ) & wait $bt
}
run_variant() { # variant rep
	case $1 in
	base|again) measure $1 $2 ;;
	kprobe|fentry) measure $1 $2 refwatch record --force -o /tmp/h.rwt --attach $1 -- ;;
	wide) measure $1 $2 refwatch record --force -o /tmp/h.rwt --attach kprobe HOT_OPTIONS -- ;;
	bpftrace)
		[ $BT_OK = 1 ] || return 0
		bpftrace /bench/refwatch.bt > /tmp/bt.out 2>&1 &
		bt=$!
		i=0
		# It is ready in about 15 s; bookworm's bpftrace 0.17 once sat idle, never ready.
		while ! grep -q '^ready' /tmp/bt.out && kill -0 $bt 2>/dev/null && [ $i -lt 480 ]; do sleep 0.25; i=$((i+1)); done
		if ! grep -q '^ready' /tmp/bt.out; then
			BT_OK=0
			stop_bpftrace
			echo "BPFTRACE_FAILED repetition $2: $(grep -v '^$' /tmp/bt.out | tail -n 3 | tr '\n' ' ')"
			cp /tmp/bt.out /out/bpftrace-failed.log
			return 0
		fi
		measure $1 $2
		stop_bpftrace
		cat /tmp/bt.out >> /out/bpftrace.log ;;
	esac
}
# Warm-up: the first runs after boot are slower.
CHURN > /dev/null
ZAP > /dev/null
