/* daxload: the lab's workloads on the emulated pmem (/dev/pmem0, ext4 -o dax at /mnt/dax).
 * Each subcommand drives one ZONE_DEVICE refcount path that refwatch must observe.
 * Built statically by `cargo xtask` and installed in the guest at /usr/lib/refwatch-lab. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL
#define FILE_SIZE (16UL << 20)
#define PMD_SIZE (2UL << 20)
#define DAX_DIR "/mnt/dax"
#define NAMESPACE "namespace0.0"
#define DAX_DEVICE "dax0.0"
/* The bug-* scenarios: what the spliced page holds, and what a later file writes. */
#define OLD_BYTE 'o'
#define NEW_BYTE 'N'
/* How long bug-truncate-pipe's holder keeps the pipe before draining it. */
#define HOLD_MS 2000L
/* How long a child may take to end after it is expected to (then it is reported as stuck). */
#define REAP_MARGIN_MS 15000L

static void die(const char *fmt, ...)
{
	va_list ap;
	int err = errno;
	va_start(ap, fmt);
	fputs("daxload: ", stderr);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, ": %s\n", strerror(err));
	exit(1);
}

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static double started;

/* Progress of the bug-* scenarios, stamped with the pid and the seconds since start. */
static void say(const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "daxload[%d] +%.3fs: %s\n", (int)getpid(), now() - started, msg);
}

static void sleep_ms(long ms)
{
	struct timespec t = { ms / 1000, (ms % 1000) * 1000000L };
	while (nanosleep(&t, &t) && errno == EINTR)
		;
}

static long env_ms(const char *name, long fallback)
{
	const char *value = getenv(name);
	if (!value || !*value)
		return fallback;
	char *end;
	long ms = strtol(value, &end, 10);
	if (*end || ms < 0) {
		errno = EINVAL;
		die("%s=%s", name, value);
	}
	return ms;
}

/* Writes one value to a sysfs attribute (driver bind/unbind) and reports how long the kernel
 * took; returns 0 or the errno, which is printed, not fatal. */
static int sysfs_write(const char *path, const char *value)
{
	int err = 0;
	say("writing \"%s\" to %s", value, path);
	double start = now();
	int fd = open(path, O_WRONLY);
	if (fd < 0) {
		err = errno;
	} else {
		ssize_t n = write(fd, value, strlen(value));
		if (n < 0)
			err = errno;
		else if ((size_t)n != strlen(value))
			err = EIO;
		if (close(fd) && !err)
			err = errno;
	}
	say("write to %s %s after %.3f s%s%s", path, err ? "FAILED" : "returned", now() - start,
	    err ? ": " : "", err ? strerror(err) : "");
	return err;
}

/* Prints a small /proc file (state, wchan, stack of a stuck process) line by line. */
static void show_file(const char *path)
{
	char line[256];
	FILE *f = fopen(path, "r");
	if (!f) {
		say("%s: %s", path, strerror(errno));
		return;
	}
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = 0;
		say("%s: %s", path, line);
	}
	fclose(f);
}

/* Scheduler state and wait channel of a process, e.g. "D in dax_break_layout", for the report
 * of who is blocked where. */
static const char *proc_state(pid_t pid)
{
	static char what[160];
	char path[64], stat[512] = "", wchan[128] = "?";
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "r");
	if (f) {
		if (!fgets(stat, sizeof(stat), f))
			stat[0] = 0;
		fclose(f);
	}
	snprintf(path, sizeof(path), "/proc/%d/wchan", (int)pid);
	f = fopen(path, "r");
	if (f) {
		if (!fgets(wchan, sizeof(wchan), f))
			strcpy(wchan, "?");
		fclose(f);
	}
	/* Some kernels (5.10) say "0": take the first frame of the stack that is not the scheduler. */
	snprintf(path, sizeof(path), "/proc/%d/stack", (int)pid);
	if (!strcmp(wchan, "0") && (f = fopen(path, "r"))) {
		char frame[160];
		while (fgets(frame, sizeof(frame), f)) {
			char *name = strchr(frame, ' ');
			if (!name || strstr(name, "schedule") || strstr(name, "wait_for_common"))
				continue;
			name[strcspn(name, "+\n")] = 0;
			snprintf(wchan, sizeof(wchan), "%s (stack)", name + 1);
			break;
		}
		fclose(f);
	}
	/* The state follows the command name, which is in parentheses. */
	const char *paren = strrchr(stat, ')');
	snprintf(what, sizeof(what), "%c in %s", paren && paren[1] && paren[2] ? paren[2] : '?', wchan[0] ? wchan : "-");
	return what;
}

/* Runs a shell command for the namespace plumbing (ndctl, umount); fails loudly. */
static void sh(const char *cmd)
{
	fprintf(stderr, "daxload: + %s\n", cmd);
	int status = system(cmd);
	if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		errno = 0;
		die("`%s` failed (status %d)", cmd, status);
	}
}

static int create_file(const char *path, size_t size)
{
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		die("open %s", path);
	/* fallocate gives the file real (2 MiB-aligned where possible) blocks before mapping. */
	if (fallocate(fd, 0, 0, size))
		die("fallocate %s", path);
	return fd;
}

static char *map(int fd, size_t size, int nohuge)
{
	char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		die("mmap");
	/* Exact per-page counts need PTE faults; the PMD scenario wants the opposite. */
	if (nohuge && madvise(p, size, MADV_NOHUGEPAGE))
		die("madvise");
	return p;
}

static void touch(char *p, size_t size)
{
	for (size_t off = 0; off < size; off += PAGE)
		p[off] = (char)(off / PAGE);
}

static void unmap(char *p, size_t size)
{
	if (msync(p, size, MS_SYNC))
		die("msync");
	if (munmap(p, size))
		die("munmap");
}

/* Pins every page through GUP (process_vm_readv on our own mapping) and releases it. */
static void pin_each_page(char *p, size_t size)
{
	char buf[PAGE];
	for (size_t off = 0; off < size; off += PAGE) {
		struct iovec local = { buf, sizeof(buf) };
		struct iovec remote = { p + off, PAGE };
		if (process_vm_readv(getpid(), &local, 1, &remote, 1, 0) != (ssize_t)PAGE)
			die("process_vm_readv at offset %zu", off);
	}
}

/* mremap moves the mapping's PTEs to another address: nothing is unmapped or faulted. */
static char *move(char *p, size_t size)
{
	char *to = mmap(NULL, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (to == MAP_FAILED)
		die("mmap destination");
	char *moved = mremap(p, size, size, MREMAP_MAYMOVE | MREMAP_FIXED, to);
	if (moved == MAP_FAILED)
		die("mremap");
	return moved;
}

static int fsdax(int gup, int truncate, int moved)
{
	const char *path = DAX_DIR "/daxload";
	int fd = create_file(path, FILE_SIZE);
	char *p = map(fd, FILE_SIZE, 1);
	touch(p, FILE_SIZE);
	if (gup)
		pin_each_page(p, FILE_SIZE);
	if (truncate) {
		/* Punching a hole under a live mapping must unmap the DAX pages first
		 * (dax_layout_busy_page), then the next touch faults fresh blocks in. */
		if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, FILE_SIZE))
			die("punch hole");
		touch(p, FILE_SIZE);
		if (ftruncate(fd, 0))
			die("ftruncate");
		if (ftruncate(fd, FILE_SIZE))
			die("ftruncate back");
		touch(p, FILE_SIZE);
	}
	if (moved)
		p = move(p, FILE_SIZE);
	unmap(p, FILE_SIZE);
	close(fd);
	if (unlink(path))
		die("unlink %s", path);
	return 0;
}

/* Maps the file at a 2 MiB-aligned address so the kernel may fault PMDs in. The caller
 * munmaps *area (FILE_SIZE + PMD_SIZE) after the mapping itself. */
static char *map_pmd_aligned(int fd, char **area)
{
	/* Reserve PMD_SIZE extra so the mapping can start on a 2 MiB boundary; the file offset
	 * is 0 and ext4 allocates the fallocated extent 2 MiB-aligned on an empty fs. */
	*area = mmap(NULL, FILE_SIZE + PMD_SIZE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (*area == MAP_FAILED)
		die("reserve");
	char *aligned = (char *)(((uintptr_t)*area + PMD_SIZE - 1) & ~(PMD_SIZE - 1));
	char *p = mmap(aligned, FILE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0);
	if (p == MAP_FAILED)
		die("mmap fixed");
	return p;
}

static int fsdax_pmd(void)
{
	const char *path = DAX_DIR "/daxload-pmd";
	int fd = create_file(path, FILE_SIZE);
	char *area;
	char *p = map_pmd_aligned(fd, &area);
	touch(p, FILE_SIZE);
	unmap(p, FILE_SIZE);
	munmap(area, FILE_SIZE + PMD_SIZE);
	close(fd);
	if (unlink(path))
		die("unlink %s", path);
	return 0;
}

static int dax_mounted(void)
{
	char line[512];
	int found = 0;
	FILE *f = fopen("/proc/mounts", "r");
	if (!f)
		die("open /proc/mounts");
	while (!found && fgets(line, sizeof(line), f))
		found = strstr(line, " " DAX_DIR " ") != NULL;
	fclose(f);
	return found;
}

/* Turns the namespace into device-dax (4 KiB pages) unless /dev/dax0.0 already exists. */
static void devdax_namespace(const char *dev)
{
	if (access(dev, F_OK)) {
		if (dax_mounted())
			sh("umount " DAX_DIR);
		sh("ndctl create-namespace --force --reconfig=" NAMESPACE " --mode=devdax --align=4K");
	}
}

/* The first `size` bytes of a device-dax device, shared; the mapping holds the file. */
static char *map_device(const char *dev, size_t size)
{
	int fd = open(dev, O_RDWR);
	if (fd < 0)
		die("open %s", dev);
	char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		die("mmap %s", dev);
	close(fd);
	return p;
}

static int devdax(void)
{
	const char *dev = "/dev/" DAX_DEVICE;
	devdax_namespace(dev);
	char *p = map_device(dev, FILE_SIZE);
	touch(p, FILE_SIZE);
	if (munmap(p, FILE_SIZE))
		die("munmap");
	return 0;
}

/* Unmounts and disables the namespace so the pmem driver's memunmap_pages runs. */
static int teardown(void)
{
	if (dax_mounted())
		sh("umount " DAX_DIR);
	sh("ndctl disable-namespace " NAMESPACE);
	return 0;
}

/* ---- Real ZONE_DEVICE refcount bugs of Debian's kernels (not run by the matrix) ----
 * bug-truncate-pipe and bug-devdax-unbind-pipe pin a page through a pipe (vmsplice takes a
 * plain GUP reference, no SPLICE_F_GIFT), drop the mapping, then take the memory away under
 * that reference. The pipe is held and drained by a child, so that a kernel which correctly
 * waits for the page to go idle does not wait forever on the process that is waiting.
 * bug-pmem-unbind takes the device away under a live mapping. Each reports its steps with
 * timings on stderr, and exits 3 when a child was killed (oops) or is stuck in the kernel. */

#define CHILD_CRASHED 3

/* Disk byte of a file offset (FIEMAP), or -1. */
static long long disk_byte(int fd, off_t off)
{
	struct fiemap *fm = calloc(1, sizeof(*fm) + sizeof(struct fiemap_extent));
	if (!fm)
		die("calloc");
	fm->fm_start = off;
	fm->fm_length = PAGE;
	fm->fm_flags = FIEMAP_FLAG_SYNC;
	fm->fm_extent_count = 1;
	long long at = -1;
	if (!ioctl(fd, FS_IOC_FIEMAP, fm) && fm->fm_mapped_extents == 1)
		at = (long long)(fm->fm_extents[0].fe_physical + (off - fm->fm_extents[0].fe_logical));
	free(fm);
	return at;
}

/* File offset whose block is at disk byte `at`, or -1. */
static long long offset_of_disk_byte(int fd, size_t size, long long at)
{
	enum { EXTENTS = 256 };
	struct fiemap *fm = calloc(1, sizeof(*fm) + EXTENTS * sizeof(struct fiemap_extent));
	if (!fm)
		die("calloc");
	fm->fm_length = size;
	fm->fm_flags = FIEMAP_FLAG_SYNC;
	fm->fm_extent_count = EXTENTS;
	long long off = -1;
	if (!ioctl(fd, FS_IOC_FIEMAP, fm)) {
		for (unsigned i = 0; i < fm->fm_mapped_extents; i++) {
			struct fiemap_extent *e = &fm->fm_extents[i];
			if (at >= (long long)e->fe_physical && at < (long long)(e->fe_physical + e->fe_length))
				off = (long long)(e->fe_logical + (at - e->fe_physical));
		}
	}
	free(fm);
	return off;
}

/* Vmsplices the page at p into the pipe (a GUP reference the pipe owns). */
static void splice_page(char *p, int pipe_in)
{
	struct iovec iov = { p, PAGE };
	ssize_t n = vmsplice(pipe_in, &iov, 1, 0);
	if (n != (ssize_t)PAGE)
		die("vmsplice (%zd bytes)", n);
	say("vmspliced the page at %p into the pipe", (void *)p);
}

static const char *classify(const char *buf, ssize_t n)
{
	static char what[128];
	ssize_t old = 0, new = 0, zero = 0;
	for (ssize_t i = 0; i < n; i++) {
		old += buf[i] == OLD_BYTE;
		new += buf[i] == NEW_BYTE;
		zero += buf[i] == 0;
	}
	if (n > 0 && old == n)
		return "all 'o': the spliced page's own data";
	if (n > 0 && new == n)
		return "all 'N': ANOTHER FILE'S DATA (the freed block was reused under the pipe)";
	if (n > 0 && zero == n)
		return "all zeros";
	snprintf(what, sizeof(what), "mixed ('o' %zd, 'N' %zd, zero %zd; first byte %#x)", old, new, zero,
		 n > 0 ? (unsigned char)buf[0] : 0);
	return what;
}

/* Creates the pipe and forks its holder, before any file or device is opened: the holder must
 * not keep the file's inode alive (eviction would then happen in it, at its close). Once the
 * page is in the pipe, the holder keeps it referenced for hold_ms, then reads the pipe (the page
 * is released there), closes it and exits. The caller keeps only the write end. */
static pid_t pipe_holder(int *pipe_in, long hold_ms)
{
	int pfd[2];
	if (pipe(pfd))
		die("pipe");
	pid_t pid = fork();
	if (pid < 0)
		die("fork");
	if (pid) {
		close(pfd[0]);
		*pipe_in = pfd[1];
		return pid;
	}
	close(pfd[1]);
	struct pollfd wait_page = { .fd = pfd[0], .events = POLLIN };
	while (poll(&wait_page, 1, -1) < 0)
		if (errno != EINTR)
			die("holder: poll");
	say("holder: the page is in the pipe; holding it for %ld ms", hold_ms);
	sleep_ms(hold_ms);
	char buf[PAGE];
	say("holder: the parent is %s", proc_state(getppid()));
	say("holder: reading the pipe");
	ssize_t n = read(pfd[0], buf, sizeof(buf));
	int read_err = n < 0 ? errno : 0;
	if (n < 0)
		say("holder: read FAILED: %s", strerror(errno));
	else
		say("holder: read %zd bytes: %s", n, classify(buf, n));
	/* An explicit close, so that a crash releasing the page is seen here, not at exit. */
	say("holder: closing the pipe");
	if (close(pfd[0]))
		say("holder: close FAILED: %s", strerror(errno));
	say("holder: pipe closed, exiting");
	_exit(read_err ? 1 : 0);
}

/* Waits up to timeout_ms for a child (the pipe's holder, the mapper) and says how it ended:
 * exit, signal, or stuck (then its state, wchan and kernel stack). Returns 0 only when it
 * exited with status 0. */
static int reap(pid_t pid, const char *who, long timeout_ms)
{
	double start = now();
	for (;;) {
		int status;
		pid_t r = waitpid(pid, &status, WNOHANG);
		if (r < 0 && errno == ECHILD) {
			/* An oops while the task was already exiting leaves it EXIT_DEAD: never reaped. */
			say("%s %d can no longer be waited for (ECHILD): it died inside the kernel%s", who, (int)pid,
			    kill(pid, 0) ? "" : " and its task still exists");
			return -1;
		}
		if (r < 0)
			die("waitpid");
		if (r == pid) {
			if (WIFEXITED(status))
				say("%s %d exited with status %d", who, (int)pid, WEXITSTATUS(status));
			else if (WIFSIGNALED(status))
				say("%s %d KILLED by signal %d (%s)", who, (int)pid, WTERMSIG(status),
				    strsignal(WTERMSIG(status)));
			return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
		}
		if ((now() - start) * 1000 > (double)timeout_ms)
			break;
		sleep_ms(50);
	}
	say("%s %d STUCK: not reaped %ld ms after we started waiting", who, (int)pid, timeout_ms);
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	show_file(path);
	snprintf(path, sizeof(path), "/proc/%d/wchan", (int)pid);
	show_file(path);
	snprintf(path, sizeof(path), "/proc/%d/stack", (int)pid);
	show_file(path);
	return -1;
}

/* Has a new file take the block at disk byte `at` (freed by the truncate, if it was) and writes
 * NEW_BYTE into it, so the pipe shows whether it still points at that block. */
static void reuse_block(const char *path, long long at)
{
	/* ext4 lets freed data blocks be allocated again only once the journal committed. */
	int dir = open(DAX_DIR, O_RDONLY | O_DIRECTORY);
	if (dir < 0 || syncfs(dir))
		die("syncfs " DAX_DIR);
	struct statvfs vfs;
	if (fstatvfs(dir, &vfs))
		die("statvfs " DAX_DIR);
	close(dir);
	/* The allocator need not pick that block for a small file: take (nearly) all free space. */
	long long size = (long long)(vfs.f_bavail * vfs.f_frsize) & ~(long long)(PMD_SIZE - 1);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		die("open %s", path);
	while (size > 0 && fallocate(fd, 0, 0, size))
		size -= PMD_SIZE;
	long long off = size > 0 ? offset_of_disk_byte(fd, (size_t)size, at) : -1;
	if (off < 0) {
		say("%s: %lld MiB allocated, none of it page 0's old block", path, size >> 20);
	} else {
		static char page[PAGE];
		memset(page, NEW_BYTE, sizeof(page));
		if (pwrite(fd, page, sizeof(page), (off_t)off) != (ssize_t)sizeof(page))
			die("write %s", path);
		say("%s: %lld MiB allocated; its offset %#llx is page 0's old block, written with 'N'", path,
		    size >> 20, off);
	}
	close(fd);
}

/* Bugs E/F: truncate, punch hole or eviction frees an fsdax block a pipe still references.
 * <=6.12: dax_disassociate_entry() WARNs (once per boot) and the block is freed at once, so a
 * new file can reuse it and the pipe then reads that file's data. >=6.15: the fs waits for the
 * page to go idle (truncate/punch interruptibly, eviction uninterruptibly): ~HOLD_MS here. */
static int bug_truncate_pipe(const char *how)
{
	int truncate = !strcmp(how, "truncate"), punch = !strcmp(how, "punch"), evict = !strcmp(how, "evict");
	if (!truncate && !punch && !evict) {
		fprintf(stderr, "usage: daxload bug-truncate-pipe [truncate|punch|evict]\n");
		return 2;
	}
	const char *path = DAX_DIR "/daxload-pipe";
	const char *reuse = DAX_DIR "/daxload-pipe-reuse";
	int pipe_in;
	pid_t holder = pipe_holder(&pipe_in, HOLD_MS);
	int fd = create_file(path, FILE_SIZE);
	char *p = map(fd, FILE_SIZE, 1);
	touch(p, FILE_SIZE);
	memset(p, OLD_BYTE, PAGE);
	long long at = disk_byte(fd, 0);
	say("%s: %lu pages written; page 0 is at disk byte %#llx", path, FILE_SIZE / PAGE, at);
	splice_page(p, pipe_in);
	close(pipe_in);
	unmap(p, FILE_SIZE);
	say("munmapped");

	say("%s (the pipe still holds page 0)", truncate ? "ftruncate(fd, 0)" : punch ? "punching a hole over the file" : "close + unlink (eviction)");
	double start = now();
	if (truncate && ftruncate(fd, 0))
		die("ftruncate");
	if (punch && fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, FILE_SIZE))
		die("punch hole");
	if (evict) {
		close(fd);
		fd = -1;
		if (unlink(path))
			die("unlink %s", path);
	}
	say("%s returned after %.3f s", how, now() - start);

	reuse_block(reuse, at);
	int rc = reap(holder, "holder", HOLD_MS + REAP_MARGIN_MS);
	if (fd >= 0) {
		close(fd);
		if (unlink(path))
			die("unlink %s", path);
	}
	if (unlink(reuse))
		die("unlink %s", reuse);
	say("done");
	return rc ? CHILD_CRASHED : 0;
}

/* Prints the smaps lines that tell how the VMA at p is mapped. */
static void show_smaps(const char *p)
{
	char line[256], head[32];
	int in = 0;
	snprintf(head, sizeof(head), "%lx-", (unsigned long)p);
	FILE *f = fopen("/proc/self/smaps", "r");
	if (!f)
		die("open /proc/self/smaps");
	while (fgets(line, sizeof(line), f)) {
		/* VMA headers are the only lines that start with a (lowercase hex) address. */
		if (line[0] && strchr("0123456789abcdef", line[0]))
			in = !strncmp(line, head, strlen(head));
		if (in && (!strncmp(line, "Size:", 5) || !strncmp(line, "Rss:", 4) || !strncmp(line, "FilePmdMapped:", 14) ||
			   !strncmp(line, "AnonHugePages:", 14) || !strncmp(line, "THPeligible:", 12) || !strncmp(line, "VmFlags:", 8))) {
			line[strcspn(line, "\n")] = 0;
			say("smaps: %s", line);
		}
	}
	fclose(f);
}

static long faults(void)
{
	struct rusage ru;
	if (getrusage(RUSAGE_SELF, &ru))
		die("getrusage");
	return ru.ru_minflt + ru.ru_majflt;
}

/* Bug G / §2 #2: the pmem namespace is unbound under a live ext4-DAX mapping. Nothing makes
 * ext4 drop its DAX mappings first: <=6.12 leaves special PTEs/PMDs to freed device memory,
 * >=6.15 leaves refcounted mappings of a freed memmap that munmap/exit then puts. */
static int pmem_unbind_mapper(int pmd, const char *mode, long grace)
{
	const char *path = DAX_DIR "/daxload-unbind";
	int fd = create_file(path, FILE_SIZE);
	char *area = NULL;
	char *p = pmd ? map_pmd_aligned(fd, &area) : map(fd, FILE_SIZE, 1);
	/* A few faults are not the mapping's: the child's first touch of code and stack pages. */
	long before = faults();
	double start = now();
	touch(p, FILE_SIZE);
	long n = faults() - before;
	say("mapper: %s mapping at %p: wrote %lu pages in %.3f s with %ld faults (%lu = one per PTE, %lu = one per PMD) -> %s",
	    mode, (void *)p, FILE_SIZE / PAGE, now() - start, n, FILE_SIZE / PAGE, FILE_SIZE / PMD_SIZE,
	    n <= (long)(FILE_SIZE / PMD_SIZE) + 8 ? "PMD-mapped" : n >= (long)(FILE_SIZE / PAGE) ? "PTE-mapped" : "mixed");
	say("mapper: page 0 is at disk byte %#llx", disk_byte(fd, 0));
	show_smaps(p);

	sysfs_write("/sys/bus/nd/drivers/nd_pmem/unbind", NAMESPACE);
	say("mapper: grace: %ld ms with the mapping still live", grace);
	sleep_ms(grace);
	say("mapper: munmap");
	start = now();
	if (munmap(p, FILE_SIZE))
		die("munmap");
	if (area)
		munmap(area, FILE_SIZE + PMD_SIZE);
	say("mapper: munmap returned after %.3f s", now() - start);
	if (close(fd))
		say("mapper: close: %s", strerror(errno));
	say("mapper: exiting");
	return 0;
}

/* The mapping lives in a child, the mapper: on 7.x the oops in munmap leaves it holding its
 * own mmap lock, and its exit then waits for that lock forever. This process reports that
 * and returns, so that a command waiting for daxload (refwatch record, the lab) ends. */
static int bug_pmem_unbind(const char *mode)
{
	int pmd = !strcmp(mode, "pmd");
	if (!pmd && strcmp(mode, "pte")) {
		fprintf(stderr, "usage: daxload bug-pmem-unbind [pte|pmd]\n");
		return 2;
	}
	long grace = env_ms("DAXLOAD_GRACE_MS", 3000);
	pid_t mapper = fork();
	if (mapper < 0)
		die("fork");
	if (!mapper)
		_exit(pmem_unbind_mapper(pmd, mode, grace));
	int rc = reap(mapper, "mapper", grace + REAP_MARGIN_MS);
	say("done");
	return rc ? CHILD_CRASHED : 0;
}

/* §2 #1: device-dax unbound while a pipe holds one of its pages. 5.10 waits in
 * memunmap_pages() until the pipe is drained; from 5.18 on the unbind returns at once and the
 * holder's read/release touches the removed memmap. */
static int bug_devdax_unbind_pipe(void)
{
	const char *dev = "/dev/" DAX_DEVICE;
	long grace = env_ms("DAXLOAD_GRACE_MS", 3000);
	devdax_namespace(dev);
	int pipe_in;
	pid_t holder = pipe_holder(&pipe_in, grace);
	char *p = map_device(dev, PMD_SIZE);
	memset(p, OLD_BYTE, PAGE);
	say("%s mapped at %p, page 0 written", dev, (void *)p);
	splice_page(p, pipe_in);
	close(pipe_in);
	if (munmap(p, PMD_SIZE))
		die("munmap");
	say("munmapped %s", dev);

	sysfs_write("/sys/bus/dax/drivers/device_dax/unbind", DAX_DEVICE);
	int rc = reap(holder, "holder", grace + REAP_MARGIN_MS);
	say("done");
	return rc ? CHILD_CRASHED : 0;
}

int main(int argc, char **argv)
{
	const char *cmd = argc > 1 ? argv[1] : "";
	const char *arg = argc > 2 ? argv[2] : NULL;
	setvbuf(stderr, NULL, _IONBF, 0);
	started = now();
	if (!strcmp(cmd, "fsdax-mmap"))
		return fsdax(0, 0, 0);
	if (!strcmp(cmd, "fsdax-gup"))
		return fsdax(1, 0, 0);
	if (!strcmp(cmd, "fsdax-truncate"))
		return fsdax(0, 1, 0);
	if (!strcmp(cmd, "fsdax-mremap"))
		return fsdax(0, 0, 1);
	if (!strcmp(cmd, "fsdax-pmd"))
		return fsdax_pmd();
	if (!strcmp(cmd, "devdax"))
		return devdax();
	if (!strcmp(cmd, "teardown"))
		return teardown();
	if (!strcmp(cmd, "bug-truncate-pipe"))
		return bug_truncate_pipe(arg ? arg : "truncate");
	if (!strcmp(cmd, "bug-pmem-unbind"))
		return bug_pmem_unbind(arg ? arg : "pte");
	if (!strcmp(cmd, "bug-devdax-unbind-pipe"))
		return bug_devdax_unbind_pipe();
	fprintf(stderr, "usage: daxload fsdax-mmap|fsdax-gup|fsdax-truncate|fsdax-mremap|fsdax-pmd|devdax|teardown\n"
			"       daxload bug-truncate-pipe [truncate|punch|evict]\n"
			"       daxload bug-pmem-unbind [pte|pmd]\n"
			"       daxload bug-devdax-unbind-pipe\n"
			"       (bug-pmem-unbind, bug-devdax-unbind-pipe: DAXLOAD_GRACE_MS, default 3000;\n"
			"        bug-*: exit 3 when a child was killed or is stuck in the kernel)\n");
	return 2;
}
