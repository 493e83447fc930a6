# Shell helpers every script case starts with. `events F` runs `refwatch report --json` on
# trace F: its status in $rc, the event count in $n, stderr in F.report.err, JSON in F.json.
failed=0
fail() { echo "FAIL: $*"; failed=1; }
events() { refwatch report --json "$1" > "$1.json" 2> "$1.report.err"; rc=$?; n=$(sed -n 's/^  "events": \([0-9]*\),$/\1/p' "$1.json"); }
wait_for() { for i in $(seq 300); do [ -s "$1" ] && return 0; sleep 0.1; done; fail "$1 never appeared"; }
