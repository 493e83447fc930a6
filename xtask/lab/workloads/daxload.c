/* daxload: the lab's workloads on the emulated pmem (/dev/pmem0, ext4 -o dax at /mnt/dax).
 * Each subcommand drives one ZONE_DEVICE refcount path that refwatch must observe.
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
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096UL
#define FILE_SIZE (16UL << 20)
#define PMD_SIZE (2UL << 20)
#define DAX_DIR "/mnt/dax"
#define NAMESPACE "namespace0.0"

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

static int fsdax_pmd(void)
{
	const char *path = DAX_DIR "/daxload-pmd";
	int fd = create_file(path, FILE_SIZE);
	/* Reserve PMD_SIZE extra so the mapping can start on a 2 MiB boundary; the file offset
	 * is 0 and ext4 allocates the fallocated extent 2 MiB-aligned on an empty fs. */
	char *area = mmap(NULL, FILE_SIZE + PMD_SIZE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (area == MAP_FAILED)
		die("reserve");
	char *aligned = (char *)(((uintptr_t)area + PMD_SIZE - 1) & ~(PMD_SIZE - 1));
	char *p = mmap(aligned, FILE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0);
	if (p == MAP_FAILED)
		die("mmap fixed");
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

static int devdax(void)
{
	const char *dev = "/dev/dax0.0";
	if (access(dev, F_OK)) {
		if (dax_mounted())
			sh("umount " DAX_DIR);
		sh("ndctl create-namespace --force --reconfig=" NAMESPACE " --mode=devdax --align=4K");
	}
	int fd = open(dev, O_RDWR);
	if (fd < 0)
		die("open %s", dev);
	char *p = mmap(NULL, FILE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		die("mmap %s", dev);
	touch(p, FILE_SIZE);
	if (munmap(p, FILE_SIZE))
		die("munmap");
	close(fd);
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

int main(int argc, char **argv)
{
	const char *cmd = argc > 1 ? argv[1] : "";
	setvbuf(stderr, NULL, _IONBF, 0);
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
	fprintf(stderr, "usage: daxload fsdax-mmap|fsdax-gup|fsdax-truncate|fsdax-mremap|fsdax-pmd|devdax|teardown\n");
	return 2;
}
