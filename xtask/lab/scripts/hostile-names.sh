# A process named with terminal escapes (any local user can pick its name) touching device
# memory with a real bug: refwatch's live outputs on the root terminal and its kernel-log line
# show the bytes escaped, never raw.
h=$(printf '/tmp/\033]0;PWN\007\033[2J')
ln -s "$(command -v daxload)" "$h" || fail "cannot make the hostile name"
refwatch live -d 120 > /out/live.txt 2> /out/live.err & l=$!
refwatch stream -d 120 > /out/stream.txt 2> /out/stream.err & s=$!
for i in $(seq 300); do grep -q events /out/live.txt && break; sleep 0.1; done
sleep 2
"$h" bug-pmem-unbind pte > /out/bug.log 2>&1
sleep 1; kill -INT $l $s; wait $l; wait $s
dmesg | grep 'refwatch: ' > /out/kmsg.txt
for f in live.txt stream.txt kmsg.txt; do
  grep -q "$(printf '\033')" /out/$f && fail "$f has a raw ESC"
  grep -q "$(printf '\007')" /out/$f && fail "$f has a raw BEL"
  grep -qF '\x1b]0;PWN\x07' /out/$f || fail "$f does not show the name escaped: $(tail -2 /out/$f)"
done
