/* p2pload: the lab's P2PDMA workload. It maps pages of an NVMe controller memory buffer (QEMU's
 * cmb_size_mb) through the kernel's p2pmem/allocate file (vm_insert_page), moves data between
 * them and the controller's namespace with O_DIRECT (the block layer pins them with
 * FOLL_PCI_P2PDMA), and unmaps them (free_zone_device_folio -> p2pdma_folio_free). Every step
 * is checked: no P2PDMA memory, a failed or short I/O, wrong data or pages not given back to the
 * pool is exit 1. `bug-double-put` has the lab's test module drop one reference too many on a
 * mapped page (xtask/lab/p2pdma).
 * Built statically by `cargo xtask` and installed in the guest at /usr/lib/refwatch-lab. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "say.h"

#define PAGE 4096UL
/* 64 pages: 256 KiB, half of QEMU's largest NVMe transfer (mdts 7), so one I/O each way. */
#define PAGES 64UL
#define NAMESPACE "/dev/nvme0n1"
#define ALLOCATE_GLOB "/sys/bus/pci/devices/*/p2pmem/allocate"
#define DOUBLE_PUT "/sys/kernel/debug/refwatch_p2pdma/double_put"

/* A decimal sysfs attribute of the p2pmem directory (size, available, published). */
static unsigned long long attribute(const char *dir, const char *name)
{
	char path[512];
	unsigned long long value;
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "r");
	if (!f)
		die("open %s", path);
	if (fscanf(f, "%llu", &value) != 1) {
		errno = 0;
		die("%s: no number", path);
	}
	fclose(f);
	return value;
}

/* The p2pmem directory of the one PCI device that offers P2PDMA memory (the NVMe controller). */
static void find_p2pmem(char *dir, size_t size)
{
	glob_t g;
	if (glob(ALLOCATE_GLOB, 0, NULL, &g) || g.gl_pathc == 0) {
		errno = 0;
		die("no %s: the guest has no P2PDMA memory (no NVMe controller with a CMB, or a kernel "
		    "without CONFIG_PCI_P2PDMA)", ALLOCATE_GLOB);
	}
	snprintf(dir, size, "%.*s", (int)(strrchr(g.gl_pathv[0], '/') - g.gl_pathv[0]), g.gl_pathv[0]);
	globfree(&g);
	say("P2PDMA memory: %s: size %llu, available %llu, published %llu", dir, attribute(dir, "size"),
	    attribute(dir, "available"), attribute(dir, "published"));
}

static char *map_p2pmem(const char *dir, size_t bytes)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/allocate", dir);
	int fd = open(path, O_RDWR);
	if (fd < 0)
		die("open %s", path);
	/* The kernel refuses private mappings and non-zero offsets. */
	char *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		die("mmap %zu bytes of %s", bytes, path);
	close(fd);
	say("mapped %zu P2PDMA pages at %p", bytes / PAGE, (void *)p);
	return p;
}

/* Whole words: the buffer is device memory, and under TCG every access to it is a callback. */
static uint64_t word(size_t i, unsigned seed)
{
	return (uint64_t)i * 0x9e3779b97f4a7c15ULL + seed;
}

static void fill(char *p, size_t bytes, unsigned seed)
{
	volatile uint64_t *w = (volatile uint64_t *)p;
	for (size_t i = 0; i < bytes / 8; i++)
		w[i] = word(i, seed);
}

/* The first byte offset where p differs from fill(seed), or -1. */
static long long differs(const char *p, size_t bytes, unsigned seed)
{
	const volatile uint64_t *w = (const volatile uint64_t *)p;
	for (size_t i = 0; i < bytes / 8; i++)
		if (w[i] != word(i, seed))
			return (long long)(i * 8);
	return -1;
}

static void io(int write, int fd, char *buf, size_t bytes, const char *what)
{
	ssize_t n = write ? pwrite(fd, buf, bytes, 0) : pread(fd, buf, bytes, 0);
	if (n != (ssize_t)bytes) {
		if (n >= 0)
			errno = 0;
		die("O_DIRECT %s %s (%zd of %zu bytes)", write ? "write" : "read", what, n, bytes);
	}
	say("O_DIRECT %s %s: %zu bytes", write ? "write" : "read", what, bytes);
}

/* Data through the P2PDMA pages both ways, checked against a RAM buffer's view of the disk. */
static void direct_io(char *p2p, size_t bytes)
{
	int fd = open(NAMESPACE, O_RDWR | O_DIRECT);
	if (fd < 0)
		die("open %s O_DIRECT", NAMESPACE);
	char *ram = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (ram == MAP_FAILED)
		die("mmap RAM buffer");
	long long at;

	fill(p2p, bytes, 1);
	io(1, fd, p2p, bytes, "from the P2PDMA pages to " NAMESPACE);
	io(0, fd, ram, bytes, "from " NAMESPACE " to RAM");
	if ((at = differs(ram, bytes, 1)) >= 0) {
		errno = 0;
		die("the disk does not hold what the P2PDMA pages held (first difference at byte %lld)", at);
	}

	fill(ram, bytes, 2);
	io(1, fd, ram, bytes, "from RAM to " NAMESPACE);
	fill(p2p, bytes, 0);
	io(0, fd, p2p, bytes, "from " NAMESPACE " to the P2PDMA pages");
	if ((at = differs(p2p, bytes, 2)) >= 0) {
		errno = 0;
		die("the P2PDMA pages do not hold what was read (first difference at byte %lld)", at);
	}
	say("data checked both ways");
	munmap(ram, bytes);
	close(fd);
}

/* munmap frees every page (refcount 0: free_zone_device_folio), which gives it back to the
 * device's pool: `available` must be what it was before the mmap. */
static void unmap_and_check(const char *dir, char *p, size_t bytes, unsigned long long before)
{
	if (munmap(p, bytes))
		die("munmap");
	unsigned long long after = attribute(dir, "available");
	say("unmapped; available %llu (before the mmap %llu)", after, before);
	if (after != before) {
		errno = 0;
		die("%llu bytes of P2PDMA memory did not go back to the pool", before - after);
	}
}

static int healthy(void)
{
	char dir[512];
	find_p2pmem(dir, sizeof(dir));
	unsigned long long before = attribute(dir, "available");
	size_t bytes = PAGES * PAGE;
	char *p = map_p2pmem(dir, bytes);
	fill(p, bytes, 0);
	say("touched %lu pages", PAGES);
	direct_io(p, bytes);
	unmap_and_check(dir, p, bytes, before);
	say("done");
	return 0;
}

/* One mapped page, then the test module pins it, unpins it and drops one reference more: the
 * page reaches refcount 0 and goes back to the pool while this process still maps it. */
static int bug_double_put(void)
{
	char dir[512], address[32];
	find_p2pmem(dir, sizeof(dir));
	unsigned long long before = attribute(dir, "available");
	char *p = map_p2pmem(dir, PAGE);
	fill(p, PAGE, 0);
	int fd = open(DOUBLE_PUT, O_WRONLY);
	if (fd < 0)
		die("open %s (is refwatch_p2pdma.ko loaded?)", DOUBLE_PUT);
	int len = snprintf(address, sizeof(address), "%#lx", (unsigned long)p);
	if (write(fd, address, len) != len)
		die("write %s to %s", address, DOUBLE_PUT);
	close(fd);
	say("%s: the module dropped a reference it did not hold on the page at %p", DOUBLE_PUT, (void *)p);
	/* The page went back to the pool at the double put, not at this munmap. */
	unmap_and_check(dir, p, PAGE, before);
	say("done");
	return 0;
}

int main(int argc, char **argv)
{
	const char *cmd = argc > 1 ? argv[1] : "";
	say_prefix = "p2pload";
	setvbuf(stdout, NULL, _IONBF, 0);
	if (!strcmp(cmd, "healthy"))
		return healthy();
	if (!strcmp(cmd, "bug-double-put"))
		return bug_double_put();
	fprintf(stderr, "usage: p2pload healthy|bug-double-put\n");
	return 2;
}
