# What the bench's guest programs share (xtask/src/bench/): each is this file followed by its
# own, which defines run_variant and then lists `run VARIANT REP …` lines.
cd /tmp
run() { # variant rep …
	echo "lab: bench $*" > /dev/console
	# A repetition takes seconds: one still running after 5 min has hung. Show where.
	( sleep 300; echo "lab: bench $* hung; user tasks:" > /dev/console
	  for p in /proc/[0-9]*; do [ -e $p/exe ] && echo "$(cat $p/comm) $(cat $p/wchan) $(tr '\n' ' ' < $p/stack)"; done > /dev/console ) &
	watchdog=$!
	run_variant "$@"
	kill $watchdog 2>/dev/null
}
# Starts bpftrace on SCRIPT, its output in /tmp/bt.out; returns 1 (printing BPFTRACE_FAILED
# and the script's name without .bt) if it is not ready in 2 min, twice, and from then on
# for that script.
start_bpftrace() { # script rep
	grep -qxF "$1" /tmp/bt-failed 2>/dev/null && return 1
	for attempt in 1 2; do
		bpftrace "$1" > /tmp/bt.out 2>&1 &
		bt=$!
		i=0
		# It is ready in about 15 s; bookworm's bpftrace 0.17 sometimes sits idle, never
		# ready: it gets a second start.
		while ! grep -q '^ready' /tmp/bt.out && kill -0 $bt 2>/dev/null && [ $i -lt 480 ]; do sleep 0.25; i=$((i+1)); done
		grep -q '^ready' /tmp/bt.out && return 0
		stop_bpftrace
		echo "lab: bpftrace $1 not ready (attempt $attempt, repetition $2)" > /dev/console
	done
	echo "$1" >> /tmp/bt-failed
	echo "BPFTRACE_FAILED $(basename $1 .bt) repetition $2: $(grep -v '^$' /tmp/bt.out | tail -n 3 | tr '\n' ' ')"
	cp /tmp/bt.out /out/bpftrace-failed-$(basename $1 .bt).log
	return 1
}
# A bpftrace that does not exit on SIGINT must not hang the run: KILL it after 10 s.
stop_bpftrace() {
	kill -INT $bt 2>/dev/null; ( sleep 10; kill -KILL $bt 2>/dev/null ) & wait $bt
}
