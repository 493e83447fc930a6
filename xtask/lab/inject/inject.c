// SPDX-License-Identifier: GPL-2.0
/*
 * inject - drive refwatch_inject.ko through one scenario.
 *
 *   inject [-t generic|fsdax] [-u] [-w MS] SCENARIO
 *
 * SCENARIO: healthy insert-zero-ref free-while-mapped get-from-zero
 *           put-underflow teardown-busy
 * -t  force the pgmap type (default: the scenario's natural one)
 * -u  get-from-zero/healthy: also GUP the page from user space
 *     (process_vm_readv on ourselves) while it is in the scenario state
 * -w  wait MS milliseconds in the scenario state before putting the page
 *     right: time for a tracer to act on what it saw (refwatch arms a
 *     watchpoint on a finding's page)
 *
 * Exit 0 when every step behaved as the scenario expects.
 * Build: gcc -O2 -Wall -static -o inject inject.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/uio.h>

#include "refwatch_inject.h"

static const char *const names[] = {
	"healthy", "insert-zero-ref", "free-while-mapped",
	"get-from-zero", "put-underflow", "teardown-busy",
};

static int fd;
static int failed;

#define NPAGES 4	/* pages we map and touch */

static void check(int ok, const char *what)
{
	printf("inject: %-48s %s\n", what, ok ? "ok" : "UNEXPECTED");
	if (!ok)
		failed = 1;
}

static struct inj_state state(unsigned long idx)
{
	struct inj_state st = { .index = idx };

	if (ioctl(fd, INJ_STATE, &st))
		perror("INJ_STATE");
	return st;
}

static void show(const char *when)
{
	struct inj_state st = state(0);

	if (st.live)
		printf("inject: [%s] page0 pfn %#llx refcount %d mapcount %d frees %u\n",
		       when, (unsigned long long)st.pfn, st.refcount,
		       st.mapcount, st.frees);
	else
		printf("inject: [%s] pgmap gone, frees %u\n", when, st.frees);
}

/*
 * From 6.15 a fault the module refuses (an insert at refcount 0, a page
 * whose pgmap is gone) is SIGBUS: accesses that may get it go through here.
 */
static sigjmp_buf bus_jmp;

static void on_sigbus(int sig)
{
	(void)sig;
	siglongjmp(bus_jmp, 1);
}

/* *p = v; 0 if the access got SIGBUS */
static int poke(volatile unsigned char *p, unsigned char v)
{
	if (sigsetjmp(bus_jmp, 1))
		return 0;
	*p = v;
	return 1;
}

/* *p == v; 0 if it differs or the access got SIGBUS */
static int peek(volatile unsigned char *p, unsigned char v)
{
	if (sigsetjmp(bus_jmp, 1))
		return 0;
	return *p == v;
}

/* GUP from user space: process_vm_readv pins the pages of the source */
static long user_gup(void *p, size_t len)
{
	char buf[4096];
	struct iovec l = { buf, len < sizeof(buf) ? len : sizeof(buf) };
	struct iovec r = { p, l.iov_len };

	return process_vm_readv(getpid(), &l, 1, &r, 1, 0);
}

static void usage(void)
{
	fprintf(stderr, "usage: inject [-t generic|fsdax] [-u] [-w MS] SCENARIO\n"
		"  healthy insert-zero-ref free-while-mapped get-from-zero\n"
		"  put-underflow teardown-busy\n");
	exit(2);
}

int main(int argc, char **argv)
{
	struct inj_setup s = { 0 };
	struct inj_fire f = { 0 };
	int opt, sc = -1, ugup = 0, i, mapped;
	long wait_ms = 0;
	int faulted[NPAGES];
	volatile unsigned char *p;
	char what[64];
	size_t len;

	while ((opt = getopt(argc, argv, "t:uw:")) != -1) {
		if (opt == 't' && !strcmp(optarg, "generic"))
			s.type = INJ_TYPE_GENERIC;
		else if (opt == 't' && !strcmp(optarg, "fsdax"))
			s.type = INJ_TYPE_FS_DAX;
		else if (opt == 'u')
			ugup = 1;
		else if (opt == 'w')
			wait_ms = atol(optarg);
		else
			usage();
	}
	if (optind != argc - 1)
		usage();
	for (i = 0; i < INJ_NR_SCENARIOS; i++)
		if (!strcmp(argv[optind], names[i]))
			sc = i;
	if (sc < 0)
		usage();
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGBUS, on_sigbus);

	fd = open(INJ_DEV_PATH, O_RDWR);
	if (fd < 0) {
		perror(INJ_DEV_PATH);
		return 1;
	}
	s.scenario = sc;
	if (ioctl(fd, INJ_SETUP, &s)) {
		perror("INJ_SETUP");
		return 1;
	}
	printf("inject: %s: %s pgmap at %#llx, %llu pages, page0 %#llx\n",
	       names[sc], s.type == INJ_TYPE_FS_DAX ? "FS_DAX" : "GENERIC",
	       (unsigned long long)s.phys, (unsigned long long)s.nr_pages,
	       (unsigned long long)s.page0);
	show("setup");
	/* page 0's refcount once mapped: from 6.15 the mapping holds one */
	mapped = s.idle + s.map_ref;

	len = NPAGES * 4096;
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	/*
	 * First touch: write faults -> inj_vm_fault -> vmf_insert_mixed
	 * (vmf_insert_page_mkwrite from 6.15).  insert-zero-ref: page 0 is at
	 * refcount 0 here (armed at SETUP).
	 */
	for (i = 0; i < NPAGES; i++)
		faulted[i] = poke(p + i * 4096, 0x5a + i);
	for (i = 0; i < NPAGES; i++)
		if (faulted[i] && !peek(p + i * 4096, 0x5a + i))
			check(0, "read back device memory");
	show("mapped");
	if (sc == INJ_INSERT_ZERO_REF && s.map_ref) {
		check(!faulted[0] && state(0).refcount == 0,
		      "insert at refcount 0 refused (SIGBUS)");
	} else if (sc == INJ_INSERT_ZERO_REF) {
		check(state(0).refcount == 0, "page inserted at refcount 0");
	} else {
		snprintf(what, sizeof(what), "page inserted at refcount %d (%s)",
			 mapped, s.map_ref ? "idle + mapping" : "idle");
		check(faulted[0] && state(0).refcount == mapped, what);
	}

	f.uaddr = (unsigned long)p;
	f.nr_pages = NPAGES;
	if (ioctl(fd, INJ_FIRE, &f)) {
		perror("INJ_FIRE");
		return 1;
	}
	printf("inject: fire: ret %d refcount before %d after %d\n",
	       f.ret, f.refcount_at, f.refcount);
	show("fired");

	switch (sc) {
	case INJ_HEALTHY:
		snprintf(what, sizeof(what), "pin %d->%d, unpin ->%d", mapped,
			 mapped + 1024, mapped);
		check(f.ret == NPAGES && f.refcount_at == mapped + 1024 &&
		      f.refcount == mapped, what);
		if (ugup)
			check(user_gup((void *)p, 4096) == 4096,
			      "process_vm_readv of the mapping");
		break;
	case INJ_INSERT_ZERO_REF:
		if (s.map_ref)
			check(state(0).refcount == 0 && state(0).mapcount == -1,
			      "still at refcount 0, not mapped");
		else
			check(state(0).refcount == 0, "still mapped at refcount 0");
		break;
	case INJ_FREE_WHILE_MAPPED:
		if (s.map_ref)
			check(f.ret == (s.type == INJ_TYPE_FS_DAX) &&
			      f.refcount == f.refcount_at - 1,
			      "put of the mapping's reference (FS_DAX: freed)");
		else if (s.type == INJ_TYPE_FS_DAX)
			check(f.ret == 0 && f.refcount == 0,
			      "FS_DAX: put 1->0 without free");
		else
			check(f.ret == 1 && f.refcount == 1,
			      "freed at 0 (page_free ran, reset to 1)");
		/* the PTE is still there: the memory is still reachable */
		check(peek(p, 0x5a), "still mapped after the free");
		break;
	case INJ_GET_FROM_ZERO:
		check(f.refcount_at == 0 && f.ret == -ENOMEM && f.refcount == 0,
		      "pin of a page at 0 refused (-ENOMEM)");
		if (ugup) {
			long r = user_gup((void *)p, 4096);

			printf("inject: process_vm_readv: %ld (%s)\n", r,
			       r < 0 ? strerror(errno) : "ok");
			check(r < 0, "user GUP of a page at 0 refused");
		}
		break;
	case INJ_PUT_UNDERFLOW:
		snprintf(what, sizeof(what), "double unpin: %d -> %d", mapped,
			 mapped - 1024);
		check(f.ret == 0 && f.refcount_at == mapped &&
		      f.refcount == mapped - 1024, what);
		break;
	case INJ_TEARDOWN_BUSY:
		check(f.ret == 0 && f.refcount_at == s.idle + 1024 &&
		      !state(0).live, s.map_ref ?
		      "memunmap_pages with page pinned, mappings zapped" :
		      "memunmap_pages with page pinned+mapped");
		if (s.map_ref)
			check(!peek(p, 0x5a), "zapped mapping refaults: SIGBUS");
		else	/* the stale PTE still points at the reserved range */
			check(peek(p, 0x5a), "stale mapping still readable");
		break;
	}

	if (wait_ms > 0) {
		struct timespec ts = { wait_ms / 1000, wait_ms % 1000 * 1000000 };

		printf("inject: waiting %ld ms before the restore\n", wait_ms);
		nanosleep(&ts, NULL);
	}
	if (ioctl(fd, INJ_RESTORE))
		perror("INJ_RESTORE");
	show("restored");
	if (munmap((void *)p, len))
		perror("munmap");
	if (ioctl(fd, INJ_TEARDOWN))
		perror("INJ_TEARDOWN");
	show("teardown");
	close(fd);
	printf("inject: %s: %s\n", names[sc], failed ? "FAILED" : "done");
	return failed;
}
