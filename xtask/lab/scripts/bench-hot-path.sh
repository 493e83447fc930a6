# The hot-path bench's guest program (xtask/src/bench/hot_path.rs), after bench-common.sh:
# `run VARIANT REP` lines follow it. The host replaces its upper-case placeholders (the two
# loads and the hot probes' options) before the guest gets it.
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
run_variant() { # variant rep
	case $1 in
	base|again) measure $1 $2 ;;
	kprobe|fentry) measure $1 $2 refwatch record --force -o /tmp/h.rwt --attach $1 -- ;;
	wide) measure $1 $2 refwatch record --force -o /tmp/h.rwt --attach kprobe HOT_OPTIONS -- ;;
	bpftrace)
		start_bpftrace /bench/refwatch.bt $2 || return 0
		measure $1 $2
		stop_bpftrace
		cat /tmp/bt.out >> /out/bpftrace.log ;;
	esac
}
# Warm-up: the first runs after boot are slower.
CHURN > /dev/null
ZAP > /dev/null
