# No BTF (its file replaced by an empty one): refwatch cannot learn the struct layout or check
# prototypes, so every attaching command refuses with exit 2 naming BTF; `probes` still works.
mount --bind /dev/null /sys/kernel/btf/vmlinux || fail "cannot hide BTF"
refwatch record -o /out/t.rwt -d 1 2> /out/record.err; rc=$?
[ $rc = 2 ] || fail "record exit $rc, expected 2"
grep -q 'cannot run on .*struct layout unknown: /sys/kernel/btf/vmlinux' /out/record.err || fail "record: $(cat /out/record.err)"
[ -e /out/t.rwt ] && fail "a trace file was left behind"
refwatch stream -d 1 2> /out/stream.err; rc=$?
[ $rc = 2 ] || fail "stream exit $rc, expected 2"
refwatch probes > /out/probes.txt; rc=$?
[ $rc = 0 ] || fail "probes exit $rc"
grep -q '^BTF:      no' /out/probes.txt || fail "probes does not say BTF is missing"
