/* benchload: the workloads of `cargo xtask bench`. Each prints one result line on stdout,
 * timed inside the process so that probe attach/detach costs stay out of the figure.
 *
 *   benchload churn ROUNDS MIB [BLOCKDEV]
 *       normal-memory page churn: per round, mmap MIB of anonymous memory, touch every page,
 *       munmap it; then read MIB of BLOCKDEV (default /dev/vda) through the page cache and
 *       drop those pages again (POSIX_FADV_DONTNEED). No ZONE_DEVICE page is involved.
 *       prints "churn_round seconds=S" for every round, then "churn seconds=S pages=N"
 *       (S: the sum of the rounds). Each round is marked for the instruction-count plugin.
 *   benchload zap ROUNDS MIB
 *       the unmap probes' own cost: per round, mmap MIB of anonymous memory, write every page,
 *       and time the munmap alone (one call of the unmap probes' functions per page).
 *       prints "zap_round seconds=S" (that munmap) for every round, then
 *       "zap seconds=S pages=N". Each munmap is marked for the instruction-count plugin.
 *   benchload storm PASSES MIB
 *       device-event storm on fsdax: map MIB of a file on /mnt/dax (PTEs only), fault every
 *       page in, then PASSES times pin and release every page through GUP (one
 *       process_vm_readv over the whole mapping), then unmap.
 *       prints "storm seconds=S pages=N passes=P". The timed part is marked for the
 *       instruction-count plugin.
 *   benchload run COMMAND [ARGS...]
 *       runs COMMAND to its end between two marks (a program that cannot mark its own rounds,
 *       e.g. fio); prints "run seconds=S status=X" (X: its wait status).
 *   benchload stamp [COMMAND ARGS...]
 *       start-up timing: prints "stamp seconds=S" (CLOCK_MONOTONIC), then execs COMMAND if
 *       given. `benchload stamp TRACER ... -- benchload stamp` times exec to the moment the
 *       tracer lets its command start.
 * Built statically by `cargo xtask` and installed in the guest at /usr/lib/refwatch-lab. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL

static void die(const char *what)
{
	fprintf(stderr, "benchload: %s: %s\n", what, strerror(errno));
	exit(1);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* SIZE bytes of anonymous memory, every page written with BYTE. */
static char *anon_written(size_t size, char byte)
{
	char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		die("mmap");
	/* Small pages: a THP would turn 512 page events into one. */
	if (madvise(p, size, MADV_NOHUGEPAGE))
		die("madvise");
	for (size_t off = 0; off < size; off += PAGE)
		p[off] = byte;
	return p;
}

/* Marks a round's start and end for the lab's instruction-count plugin (insncount), which
 * logs the guest's instruction count at every `xchg %bx,%bx`; a no-op otherwise. */
static void mark(void)
{
	__asm__ volatile("xchg %%bx,%%bx" ::: "memory");
}

static int churn(long rounds, size_t size, const char *dev)
{
	int fd = open(dev, O_RDONLY);
	if (fd < 0)
		die(dev);
	char *buf = malloc(1 << 16);
	if (!buf)
		die("malloc");
	unsigned long pages = 0;
	double total = 0;
	for (long r = 0; r < rounds; r++) {
		mark();
		double r0 = now();
		char *p = anon_written(size, (char)r);
		if (munmap(p, size))
			die("munmap");
		for (size_t off = 0; off < size; off += 1 << 16)
			if (pread(fd, buf, 1 << 16, off) != 1 << 16)
				die("pread");
		if (posix_fadvise(fd, 0, size, POSIX_FADV_DONTNEED))
			die("fadvise");
		pages += 2 * size / PAGE;
		double t = now() - r0;
		mark();
		total += t;
		printf("churn_round seconds=%.6f\n", t);
	}
	printf("churn seconds=%.6f pages=%lu\n", total, pages);
	return 0;
}

static int zap(long rounds, size_t size)
{
	double total = 0;
	for (long r = 0; r < rounds; r++) {
		char *p = anon_written(size, (char)r);
		mark();
		double t0 = now();
		if (munmap(p, size))
			die("munmap");
		double t = now() - t0;
		mark();
		total += t;
		printf("zap_round seconds=%.6f\n", t);
	}
	printf("zap seconds=%.6f pages=%lu\n", total, (unsigned long)(rounds * (size / PAGE)));
	return 0;
}

static int storm(long passes, size_t size)
{
	const char *path = "/mnt/dax/benchload";
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		die(path);
	if (fallocate(fd, 0, 0, size))
		die("fallocate");
	char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		die("mmap");
	if (madvise(p, size, MADV_NOHUGEPAGE))
		die("madvise");
	char *buf = malloc(size);
	if (!buf)
		die("malloc");
	mark();
	double t0 = now();
	for (size_t off = 0; off < size; off += PAGE)
		p[off] = 1;
	for (long i = 0; i < passes; i++) {
		struct iovec local = { buf, size };
		struct iovec remote = { p, size };
		if (process_vm_readv(getpid(), &local, 1, &remote, 1, 0) != (ssize_t)size)
			die("process_vm_readv");
	}
	if (munmap(p, size))
		die("munmap");
	double t = now() - t0;
	mark();
	close(fd);
	unlink(path);
	printf("storm seconds=%.6f pages=%lu passes=%ld\n", t, (unsigned long)(size / PAGE), passes);
	return 0;
}

static int run(char **argv)
{
	mark();
	double t0 = now();
	pid_t pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		execvp(argv[0], argv);
		die(argv[0]);
	}
	int status;
	if (waitpid(pid, &status, 0) != pid)
		die("waitpid");
	double t = now() - t0;
	mark();
	printf("run seconds=%.6f status=%d\n", t, status);
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc >= 4 && !strcmp(argv[1], "churn"))
		return churn(atol(argv[2]), (size_t)atol(argv[3]) << 20, argc > 4 ? argv[4] : "/dev/vda");
	if (argc == 4 && !strcmp(argv[1], "zap"))
		return zap(atol(argv[2]), (size_t)atol(argv[3]) << 20);
	if (argc == 4 && !strcmp(argv[1], "storm"))
		return storm(atol(argv[2]), (size_t)atol(argv[3]) << 20);
	if (argc >= 3 && !strcmp(argv[1], "run"))
		return run(argv + 2);
	if (argc >= 2 && !strcmp(argv[1], "stamp")) {
		printf("stamp seconds=%.6f\n", now());
		if (argc == 2)
			return 0;
		execvp(argv[2], argv + 2);
		die(argv[2]);
	}
	fprintf(stderr, "usage: benchload churn ROUNDS MIB [BLOCKDEV] | zap ROUNDS MIB | storm PASSES MIB | run COMMAND... | stamp [COMMAND...]\n");
	return 2;
}
