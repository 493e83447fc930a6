# The device bench's guest program (xtask/src/bench/device.rs), after bench-common.sh:
# `run VARIANT REP WORK` lines follow it, then the ring sweep. The host replaces its
# upper-case placeholders (the two workloads, each one marked round) before the guest gets it.
mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null
# bpftrace's output buffer: 8 MiB a CPU (its default is 256 KiB), so that, like refwatch's
# 4 MiB ring, it holds a storm's events rather than losing most of them.
export BPFTRACE_PERF_RB_PAGES=2048
measure() { # variant rep work [tracer command…]: the workload under the tracer
	v=$1; rep=$2; w=$3; shift 3
	case $w in storm) work="STORM" ;; fio) work="FIO" ;; esac
	out=$("$@" $work 2>&1)
	echo "$out" | grep -E '^(storm|run) ' | sed "s/^/RESULT variant=$v rep=$rep work=$w /"
	echo "$out" | grep -vE '^(storm|run) ' | sed "s/^/LOG $v $rep $w: /"
}
# What each tracer delivered, the last repetition's: /out/VARIANT-WORK.* for the host.
run_variant() { # variant rep work
	case $1 in
	base|again) measure "$@" ;;
	record-*)
		measure "$@" refwatch record --force -o /tmp/d.rwt --attach ${1#record-} --
		mv /tmp/d.rwt /out/$3-${1#record-}.rwt ;;
	nostacks-*)
		measure "$@" refwatch record --force --no-stacks -o /tmp/d.rwt --attach ${1#nostacks-} --
		mv /tmp/d.rwt /out/$3-$1.rwt ;;
	check-*)
		measure "$@" refwatch check --json --force -o /out/$1-$3.json --attach ${1#check-} -- ;;
	bpftrace|bpftrace-stacks)
		start_bpftrace /tmp/$1.bt $2 || return 0
		measure "$@"
		# It prints from its buffer in user space, behind the kernel, and exits on INT with
		# the rest unprinted: let it drain first (until its output stops growing, ≤ 60 s).
		n=-1; i=0
		while [ "$n" != "$(wc -l < /tmp/bt.out)" ] && [ $i -lt 60 ]; do
			n=$(wc -l < /tmp/bt.out); sleep 1; i=$((i+1))
		done
		stop_bpftrace
		echo "events=$(grep -c '^kprobe:' /tmp/bt.out)" \
		     "dropped=$(sed -n 's/.*Lost \([0-9]*\) events.*/\1/p' /tmp/bt.out | awk '{s += $1} END {print s + 0}')" \
		     > /out/$1-$3.delivered
		grep -v '^kprobe:' /tmp/bt.out | grep -v '^[[:space:]]' | tail -n 20 > /out/$1-$3.log ;;
	floor-*)
		start_bpftrace /tmp/$1.bt $2 || return 0
		measure "$@"
		stop_bpftrace ;;
	perf|perf-stacks)
		[ $PERF_OK = 1 ] || return 0
		g=; [ $1 = perf-stacks ] && g=-g
		measure "$@" perf record -q $g -e 'probe:*' -a -o /tmp/perf.data --
		perf report -i /tmp/perf.data --stats > /out/$1-$3.stats 2>&1
		rm -f /tmp/perf.data ;;
	esac
}
# Warm-up (the first runs after boot are slower), and the recording the peers' probes come
# from: refwatch's plan on this kernel, its functions and its filter.
refwatch record --force -o /tmp/ref.rwt --attach kprobe -- STORM > /out/reference.txt 2>&1
# Each bpftrace variant's script is /tmp/VARIANT.bt (the host names a failed start by it).
bench_tool bpftrace --print /tmp/ref.rwt > /tmp/bpftrace.bt
bench_tool bpftrace --print-stacks /tmp/ref.rwt > /tmp/bpftrace-stacks.bt
floor() { # kind: empty programs of that kind on the recording's functions
	echo 'BEGIN { printf("ready\n"); }'
	bench_tool functions /tmp/ref.rwt | sed "s/^/$1:/; s/\$/ {}/"
}
floor kprobe > /tmp/floor-kprobe.bt
floor kfunc > /tmp/floor-fentry.bt
cp /tmp/*.bt /out/
PERF_OK=0
for f in $(bench_tool functions /tmp/ref.rwt); do
	perf probe -q -a $f >> /out/perf-probe.log 2>&1 && PERF_OK=1
done
[ $PERF_OK = 1 ] || echo "PERF_FAILED $(grep -v '^$' /out/perf-probe.log | tail -n 3 | tr '\n' ' ')"
FIO > /dev/null
