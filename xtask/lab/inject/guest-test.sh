#!/bin/sh
# Runs inside the guest (busybox sh): load refwatch_inject.ko, arm tracefs
# kprobes on the functions refwatch hooks (reading page->_refcount at
# +0x34 and _mapcount at +0x30, the offsets on 6.1 and 6.12; refwatch itself
# reads them from BTF), run each scenario and print what the probes saw,
# with kernel stacks.  Used to validate the module until refwatch itself
# runs in the lab.
#
#   guest-test.sh KO INJECT [scenario...]
# A scenario may carry inject options after commas: "get-from-zero,-u".
KO=$1 INJ=$2
shift 2
SCEN=${*:-healthy insert-zero-ref free-while-mapped get-from-zero put-underflow teardown-busy}
T=/sys/kernel/tracing
[ -d $T/events ] || mount -t tracefs none $T

insmod "$KO" || exit 1
P0=$(cat /sys/module/refwatch_inject/parameters/page0_addr)
# page0 .. page0 + 512 pages * 64 bytes (the module's default 2 MiB)
P0HEX=$(printf '0x%x' "$P0")
PEND=$(printf '0x%x' $((P0 + 512 * 64)))
# pfn_t of page 0 as __vm_insert_mixed gets it: PFN_DEV|PFN_MAP|pfn
PFN0T=$(printf '0x%x' $((0x3000000000000000 | $(cat /sys/module/refwatch_inject/parameters/base) >> 12)))
REF=$(printf '0x%x' $((P0 + 0x34)))
MAP=$(printf '0x%x' $((P0 + 0x30)))
echo "guest: $(uname -r) page0 $P0HEX"

has() { grep -q " $1\$" /proc/kallsyms; }
if has free_zone_device_folio; then
	FREE=free_zone_device_folio DPUT=__put_devmap_managed_folio_refs
	DEVMAP_BIT=0x200000000000000	# bit 57 on 6.12
	GRAB=""				# try_grab_page is gone
else
	FREE=free_zone_device_page DPUT=__put_devmap_managed_page_refs
	DEVMAP_BIT=0x400000000000000	# bit 58 on 6.1
	GRAB=try_grab_page
fi

echo "guest: probed symbols:"
grep -E ' (__vm_insert_mixed|insert_pfn|try_grab_page|try_grab_folio|try_grab_folio_fast|gup_put_folio|__put_devmap_managed_(page|folio)_refs|free_zone_device_(page|folio)|memremap_pages|memunmap_pages|vm_normal_page)$' /proc/kallsyms | sed 's/^[0-9a-f]* /  /'
FAST=""
has try_grab_folio_fast && FAST=try_grab_folio_fast	# 6.12 GUP-fast (speculative)

PG="pg=%di:x64 ref=+52(%di):s32 map=+48(%di):s32"
{
	echo "p:ins __vm_insert_mixed pfn=%dx:x64 ref=@$REF:s32 map=@$MAP:s32"
	echo "p:ipfn insert_pfn pfn=%dx:x64 ref=@$REF:s32"
	[ -n "$GRAB" ] && echo "p:grab $GRAB $PG flags=%si:x32"
	echo "p:grabf try_grab_folio $PG refs=%si:s32 flags=%dx:x32"
	[ -n "$FAST" ] && echo "p:grabff $FAST $PG refs=%si:s32 flags=%dx:x32"
	echo "p:gput gup_put_folio $PG refs=%si:s32 flags=%dx:x32"
	echo "p:dput $DPUT $PG refs=%si:s32"
	echo "p:free $FREE $PG"
	echo "p:mremap memremap_pages pgmap=%di:x64"
	echo "p:munmap memunmap_pages pgmap=%di:x64 ref=@$REF:s32 map=@$MAP:s32"
	echo "p:vnp vm_normal_page addr=%si:x64 pte=%dx:x64 ref=@$REF:s32"
} > $T/kprobe_events || { echo "kprobe_events failed"; cat $T/error_log; }

# Only our pages, and only devmap PTEs for vm_normal_page.  The trigger
# needs the same condition: triggers do not honour the event filter.
filter() {
	case $1 in
	grab|grabf|grabff|gput|dput|free) echo "pg >= $P0HEX && pg < $PEND" ;;
	ins|ipfn) echo "pfn == $PFN0T" ;;	# page 0 only: ref is page 0's
	vnp) echo "pte & $DEVMAP_BIT" ;;	# ref shown is page 0's
	esac
}
EVENTS="ins ipfn grab grabf grabff gput dput free mremap munmap vnp"
for e in $EVENTS; do
	[ -d $T/events/kprobes/$e ] || continue
	f=$(filter $e)
	[ -n "$f" ] && echo "$f" > $T/events/kprobes/$e/filter
	echo 1 > $T/events/kprobes/$e/enable
	echo "stacktrace${f:+ if $f}" > $T/events/kprobes/$e/trigger
done

# one line per event: "event ... | frame <- frame <- ..." (probe plumbing dropped)
show_trace() {
	grep -v '^#' $T/trace | awk '
		/<stack trace>/ { next }
		/^ => / { f = $2; if (f ~ /^(kprobe_|0x)/) next;
			  if (n++ < 8) line = line " <- " f; next }
		{ if (line != "") print line; line = $0 " |"; n = 0 }
		END { if (line != "") print line }'
}

for s in $SCEN; do
	echo > $T/trace
	echo "==================== $s"
	dmesg -c > /dev/null
	echo 1 > $T/tracing_on
	$INJ $(echo "$s" | tr , ' ' | awk '{ for (i = NF; i > 0; i--) printf "%s ", $i }')
	echo "inject exit: $?"
	echo 0 > $T/tracing_on
	echo "---- dmesg"
	dmesg -c
	echo "---- trace"
	show_trace
done
for e in $EVENTS; do
	[ -d $T/events/kprobes/$e ] || continue
	f=$(filter $e)
	echo "!stacktrace${f:+ if $f}" > $T/events/kprobes/$e/trigger
	echo 0 > $T/events/kprobes/$e/enable
done
echo > $T/kprobe_events
rmmod refwatch_inject && echo "guest: module unloaded"
grep -E 'nr_foll_pin' /proc/vmstat
