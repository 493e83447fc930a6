# What a CI wrapping its tests in refwatch relies on: a failed command is no pass, a check that
# saw no device memory is inconclusive unless told, `-o` and `--junit` leave stdout to the
# command, and `-p` keeps another process's page events out in the kernel.
refwatch check -- sh -c 'daxload fsdax-mmap > /dev/null; exit 3' > /out/failed.txt 2>&1; rc=$?
[ $rc = 1 ] || fail "check over a failing command exit $rc, expected 1: $(tail -3 /out/failed.txt)"
grep -q 'status 3' /out/failed.txt || fail "the command's status is not in the text: $(tail -5 /out/failed.txt)"
refwatch check -- true > /out/idle.txt 2>&1; rc=$?
[ $rc = 4 ] || fail "check over an idle command exit $rc, expected 4: $(tail -3 /out/idle.txt)"
refwatch check --allow-idle -- true > /dev/null 2>&1; rc=$?
[ $rc = 0 ] || fail "check --allow-idle over an idle command exit $rc, expected 0"
refwatch check --json -o /out/check.json --junit /out/junit.xml -- sh -c 'echo workload-output; daxload fsdax-mmap > /dev/null' > /out/stdout.txt 2> /out/check.err; rc=$?
[ $rc = 0 ] || fail "check -o exit $rc: $(tail -3 /out/check.err)"
[ "$(cat /out/stdout.txt)" = workload-output ] || fail "stdout is not the command's alone: $(head -3 /out/stdout.txt)"
grep -q '"findings_total": 0' /out/check.json || fail "no verdict in the -o file: $(head -5 /out/check.json)"
grep -q 'name="insert-zero-ref"' /out/junit.xml || fail "no test case per rule: $(head -5 /out/junit.xml)"
refwatch record -o /out/s.rwt --summary /out/summary.txt -- sh -c 'echo workload >&2; daxload fsdax-mmap > /dev/null' 2> /out/record.err || fail "record --summary exit $?: $(tail -3 /out/record.err)"
grep -q 'events, 0 dropped' /out/summary.txt || fail "no summary in --summary's file: $(cat /out/summary.txt)"
[ "$(cat /out/record.err)" = workload ] || fail "stderr is not the command's alone: $(head -3 /out/record.err)"
sh -c 'sleep 4; exec daxload fsdax-mmap' > /dev/null & p=$!
refwatch record -o /out/pid.rwt -p $p -d 25 2> /out/pid.err & r=$!
sleep 2; daxload fsdax-gup > /dev/null
wait $p; wait $r || fail "record -p exit $?: $(tail -3 /out/pid.err)"
refwatch stream --json --trace /out/pid.rwt > /out/pid.jsonl 2> /out/pid-stream.err
n=$(grep -c '"kind":"insert"' /out/pid.jsonl)
[ "$n" -ge 4096 ] || fail "record -p saw $n inserts of its process, expected >= 4096"
others=$(grep '"kind":"\(insert\|get\|put\|free\|unmap\)"' /out/pid.jsonl | grep -vc "\"tgid\":$p,")
[ "$others" = 0 ] || fail "record -p kept $others page events of other processes: $(grep -v "\"tgid\":$p," /out/pid.jsonl | grep '"kind":"\(insert\|get\)"' | head -2)"
# --no-stacks: the same events, none with the kernel stack each has by default.
refwatch record -o /out/nostacks.rwt --no-stacks -- daxload fsdax-mmap > /dev/null 2> /out/nostacks.err || fail "record --no-stacks exit $?: $(tail -3 /out/nostacks.err)"
refwatch stream --json --trace /out/nostacks.rwt > /out/nostacks.jsonl 2>&1
refwatch stream --json --trace /out/s.rwt > /out/s.jsonl 2>&1
n=$(grep -c '"kind":"insert"' /out/nostacks.jsonl)
[ "$n" -ge 4096 ] || fail "record --no-stacks saw $n inserts, expected >= 4096"
grep -q '"kind":"insert".*"stack":\["__vm_insert_mixed' /out/s.jsonl || fail "record without --no-stacks: an insert with no stack: $(grep -m1 '"kind":"insert"' /out/s.jsonl)"
with=$(grep -c '"stack":\["' /out/nostacks.jsonl)
[ "$with" = 0 ] || fail "record --no-stacks: $with events with a stack: $(grep -m1 '"stack":\["' /out/nostacks.jsonl)"
