/* privload: the lab's device-private workload over the test module refwatch_private
 * (xtask/lab/private): it migrates anonymous pages to the module's device-private pages and
 * back, and has the module break their refcounts on purpose, one scenario per run:
 *   healthy            migrate 16 pages, touch them back, migrate again, munmap, teardown
 *   put-underflow      the module puts a freed page below zero and hands it out again
 *   free-while-mapped  the module drops the last reference of a page this process still maps
 *   teardown-busy      memunmap_pages while a child still maps a page; the child exits later
 * Every step is checked against the module's counters: anything off is exit 1 and a FAILED
 * line; "privload: SCENARIO: done" ends a run that went as designed.
 * Built statically by `cargo xtask` and installed in the guest at /usr/lib/refwatch-lab. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../private/refwatch_private.h"
#include "say.h"

#define PAGE 4096UL
#define PAGES 16UL
/* How long the teardown-busy child keeps its device-private entry after the teardown began. */
#define CHILD_SECONDS 3

static long call(int fd, unsigned long cmd, void *arg, const char *what)
{
	long ret = ioctl(fd, cmd, arg);
	if (ret < 0)
		die("%s", what);
	return ret;
}

static struct rwp_stats stats(int fd)
{
	struct rwp_stats s;
	call(fd, RWP_STATS, &s, "RWP_STATS");
	return s;
}

/* The module's counters must have moved by exactly this much since `before`. */
static void expect(int fd, struct rwp_stats before, long allocs, long frees, long faults)
{
	struct rwp_stats s = stats(fd);
	errno = 0;
	if ((long)(s.allocs - before.allocs) != allocs || (long)(s.frees - before.frees) != frees ||
	    (long)(s.faults - before.faults) != faults)
		die("allocs +%llu frees +%llu faults +%llu, expected +%ld +%ld +%ld",
		    (unsigned long long)(s.allocs - before.allocs),
		    (unsigned long long)(s.frees - before.frees),
		    (unsigned long long)(s.faults - before.faults), allocs, frees, faults);
}

static int open_device(void)
{
	int fd = open(RWP_DEV_PATH, O_RDWR);
	if (fd < 0)
		die("open %s (is refwatch_private.ko loaded?)", RWP_DEV_PATH);
	call(fd, RWP_SETUP, NULL, "RWP_SETUP");
	return fd;
}

/* Anonymous pages, each written with its index (so they exist and have content to move). */
static char *anon(unsigned long pages)
{
	char *p = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		die("mmap");
	/* Small pages: migrate_vma would split a THP first. */
	madvise(p, pages * PAGE, MADV_NOHUGEPAGE);
	for (unsigned long i = 0; i < pages; i++)
		memset(p + i * PAGE, (int)(i + 1), PAGE);
	return p;
}

static void migrate(int fd, char *p, unsigned long pages)
{
	struct rwp_range range = {.addr = (uintptr_t)p, .npages = pages};
	long moved = call(fd, RWP_MIGRATE, &range, "RWP_MIGRATE");
	errno = 0;
	if ((unsigned long)moved != pages)
		die("%ld of %lu pages migrated to the device", moved, pages);
}

/* Reads every page: each read faults its page back through migrate_to_ram. */
static void touch(char *p, unsigned long pages)
{
	for (unsigned long i = 0; i < pages; i++) {
		volatile char *c = p + i * PAGE;
		errno = 0;
		if (c[0] != (char)(i + 1) || c[PAGE - 1] != (char)(i + 1))
			die("page %lu came back with %d, expected %d", i, c[0], (int)(i + 1));
	}
}

static void teardown(int fd)
{
	call(fd, RWP_TEARDOWN, NULL, "RWP_TEARDOWN");
	say("pgmap torn down");
}

static int healthy(void)
{
	int fd = open_device();
	struct rwp_stats s = stats(fd);
	char *p = anon(PAGES);
	migrate(fd, p, PAGES);
	expect(fd, s, PAGES, 0, 0);
	touch(p, PAGES);
	expect(fd, s, PAGES, PAGES, PAGES);
	say("%lu pages to the device and back by CPU faults, content kept", PAGES);
	migrate(fd, p, PAGES);
	if (munmap(p, PAGES * PAGE))
		die("munmap");
	expect(fd, s, 2 * PAGES, 2 * PAGES, PAGES);
	say("migrated again and unmapped: every device page freed");
	teardown(fd);
	return 0;
}

static int put_underflow(void)
{
	int fd = open_device();
	struct rwp_stats s = stats(fd);
	call(fd, RWP_PUT_UNDERFLOW, NULL, "RWP_PUT_UNDERFLOW");
	expect(fd, s, 2, 2, 0);
	say("a device page was put below zero after its free and handed out again");
	teardown(fd);
	return 0;
}

static int free_while_mapped(void)
{
	int fd = open_device();
	struct rwp_stats s = stats(fd);
	char *p = anon(1);
	migrate(fd, p, 1);
	call(fd, RWP_FREE_WHILE_MAPPED, NULL, "RWP_FREE_WHILE_MAPPED");
	expect(fd, s, 1, 1, 0);
	say("the module freed the page under this process's device-private entry");
	/* The module gave the entry its page back: unmapping frees it once more, normally. */
	if (munmap(p, PAGE))
		die("munmap");
	expect(fd, s, 1, 2, 0);
	teardown(fd);
	return 0;
}

static int teardown_busy(void)
{
	int fd = open_device();
	struct rwp_stats s = stats(fd);
	int ready[2];
	if (pipe(ready))
		die("pipe");
	pid_t child = fork();
	if (child < 0)
		die("fork");
	if (child == 0) {
		char *p = anon(1);
		migrate(fd, p, 1);
		if (write(ready[1], "x", 1) != 1)
			die("write");
		/* Holds the device-private entry while the parent's teardown waits for it. */
		sleep(CHILD_SECONDS);
		_exit(0);
	}
	char c;
	if (read(ready[0], &c, 1) != 1)
		die("the child did not migrate its page");
	expect(fd, s, 1, 0, 0);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	teardown(fd);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	int status;
	if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status))
		die("child status %#x", status);
	double waited = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	errno = 0;
	if (waited < 1)
		die("memunmap_pages returned after %.1f s, before the child let go of its page", waited);
	expect(fd, s, 1, 1, 0);
	say("memunmap_pages waited %.1f s for the child's page", waited);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*run)(void);
	} scenarios[] = {
		{"healthy", healthy},
		{"put-underflow", put_underflow},
		{"free-while-mapped", free_while_mapped},
		{"teardown-busy", teardown_busy},
	};
	setvbuf(stdout, NULL, _IONBF, 0);
	for (size_t i = 0; argc > 1 && i < sizeof(scenarios) / sizeof(scenarios[0]); i++) {
		if (strcmp(argv[1], scenarios[i].name))
			continue;
		/* "privload: SCENARIO" before every line. */
		static char prefix[64];
		snprintf(prefix, sizeof(prefix), "privload: %s", argv[1]);
		say_prefix = prefix;
		int status = scenarios[i].run();
		say("done");
		return status;
	}
	fprintf(stderr, "usage: privload healthy|put-underflow|free-while-mapped|teardown-busy\n");
	return 2;
}
