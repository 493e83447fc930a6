# The verifier of every lab kernel accepts every kprobe program, and every fentry program of
# the functions the kernel's plan uses (`probes --verify` exits 2 on any rejection).
refwatch probes --verify > /out/verify.txt 2>&1; rc=$?
[ $rc = 0 ] || fail "probes --verify exit $rc: $(tail -5 /out/verify.txt)"
grep -q '^fentry:   allowed' /out/verify.txt || fail "fentry not allowed: $(grep '^fentry' /out/verify.txt)"
grep -q '^verifier: \([0-9]*\)/\1 programs load' /out/verify.txt || fail "$(grep '^verifier' /out/verify.txt)"
