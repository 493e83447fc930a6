/* SPDX-License-Identifier: GPL-2.0 */
/*
 * ioctl ABI shared by refwatch_private.ko and privload (xtask/lab/workloads/privload.c).
 * Test-only: a fake device with device-private memory, and the refcount bugs the lab injects
 * into it on purpose.
 */
#ifndef REFWATCH_PRIVATE_H
#define REFWATCH_PRIVATE_H

#ifdef __KERNEL__
#include <linux/types.h>
#include <linux/ioctl.h>
#else
#include <stdint.h>
#include <sys/ioctl.h>
typedef uint64_t __u64;
#endif

#define RWP_DEV_PATH "/dev/refwatch_private"

/* The caller's anonymous pages [addr, addr + npages pages). */
struct rwp_range {
	__u64 addr;
	__u64 npages;
};

/* What the device did so far (the user program checks each step against it). */
struct rwp_stats {
	__u64 allocs;	/* zone_device_page_init */
	__u64 frees;	/* ops->folio_free */
	__u64 faults;	/* ops->migrate_to_ram */
	__u64 free_pages;	/* on the free list now */
};

#define RWP_MAGIC 0xb8
/* memremap_pages of a new MEMORY_DEVICE_PRIVATE pgmap. */
#define RWP_SETUP _IO(RWP_MAGIC, 1)
/* Migrates the range to device pages; returns how many moved. */
#define RWP_MIGRATE _IOW(RWP_MAGIC, 2, struct rwp_range)
/* A device page put once more than taken, then handed out again. */
#define RWP_PUT_UNDERFLOW _IO(RWP_MAGIC, 3)
/* The last reference of the page the caller migrated last dropped under its entry. */
#define RWP_FREE_WHILE_MAPPED _IO(RWP_MAGIC, 4)
/* memunmap_pages: waits until no device page is allocated. */
#define RWP_TEARDOWN _IO(RWP_MAGIC, 5)
#define RWP_STATS _IOR(RWP_MAGIC, 6, struct rwp_stats)

#endif
