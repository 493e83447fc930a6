# A ring too small for a GUP storm: events are dropped, counted, and make `check`
# inconclusive (exit 4, kselftest's skip) rather than a pass.
refwatch check --json --ring-kib 4 -- daxload fsdax-gup > /out/check.json 2> /out/check.err; rc=$?
[ $rc = 4 ] || fail "check exit $rc, expected 4 (inconclusive): $(tail -3 /out/check.err)"
grep -q '"dropped": 0,' /out/check.json && fail "no drops with a 4 KiB ring"
grep -q '"verdict": "inconclusive"' /out/check.json || fail "verdict: $(grep -A3 '"verdict"' /out/check.json)"
