// SPDX-License-Identifier: GPL-2.0
/*
 * inject - drive refwatch_inject.ko through one scenario.
 *
 *   inject [-t generic|fsdax] [-u] SCENARIO
 *
 * SCENARIO: healthy insert-zero-ref free-while-mapped get-from-zero
 *           put-underflow teardown-busy
 * -t  force the pgmap type (default: the scenario's natural one)
 * -u  get-from-zero/healthy: also GUP the page from user space
 *     (process_vm_readv on ourselves) while it is in the scenario state
 *
 * Exit 0 when every step behaved as the scenario expects.
 * Build: gcc -O2 -Wall -static -o inject inject.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
	fprintf(stderr, "usage: inject [-t generic|fsdax] [-u] SCENARIO\n"
		"  healthy insert-zero-ref free-while-mapped get-from-zero\n"
		"  put-underflow teardown-busy\n");
	exit(2);
}

int main(int argc, char **argv)
{
	struct inj_setup s = { 0 };
	struct inj_fire f = { 0 };
	int opt, sc = -1, ugup = 0, i;
	volatile unsigned char *p;
	size_t len;

	while ((opt = getopt(argc, argv, "t:u")) != -1) {
		if (opt == 't' && !strcmp(optarg, "generic"))
			s.type = INJ_TYPE_GENERIC;
		else if (opt == 't' && !strcmp(optarg, "fsdax"))
			s.type = INJ_TYPE_FS_DAX;
		else if (opt == 'u')
			ugup = 1;
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

	len = NPAGES * 4096;
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	/*
	 * First touch: write faults -> inj_vm_fault -> vmf_insert_mixed.
	 * insert-zero-ref: page 0 is at refcount 0 here (armed at SETUP).
	 */
	for (i = 0; i < NPAGES; i++)
		p[i * 4096] = 0x5a + i;
	for (i = 0; i < NPAGES; i++)
		if (p[i * 4096] != 0x5a + i)
			check(0, "read back device memory");
	show("mapped");
	if (sc == INJ_INSERT_ZERO_REF)
		check(state(0).refcount == 0, "page inserted at refcount 0");
	else
		check(state(0).refcount == 1, "page inserted at refcount 1 (idle)");

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
		check(f.ret == NPAGES && f.refcount_at == 1025 &&
		      f.refcount == 1, "pin 1->1025, unpin ->1");
		if (ugup)
			check(user_gup((void *)p, 4096) == 4096,
			      "process_vm_readv of the mapping");
		break;
	case INJ_INSERT_ZERO_REF:
		check(state(0).refcount == 0, "still mapped at refcount 0");
		break;
	case INJ_FREE_WHILE_MAPPED:
		if (s.type == INJ_TYPE_FS_DAX)
			check(f.ret == 0 && f.refcount == 0,
			      "FS_DAX: put 1->0 without free");
		else
			check(f.ret == 1 && f.refcount == 1,
			      "freed at 0 (page_free ran, reset to 1)");
		/* the PTE is still there: the memory is still reachable */
		check(p[0] == 0x5a, "still mapped after the free");
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
		check(f.ret == 0 && f.refcount_at == 1 && f.refcount == -1023,
		      "double unpin: 1 -> -1023");
		break;
	case INJ_TEARDOWN_BUSY:
		check(f.ret == 0 && f.refcount_at == 1025 && !state(0).live,
		      "memunmap_pages with page pinned+mapped");
		/* the stale PTE still points at the reserved range */
		check(p[0] == 0x5a, "stale mapping still readable");
		break;
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
