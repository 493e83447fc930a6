/* SPDX-License-Identifier: GPL-2.0 */
/*
 * ioctl ABI shared by refwatch_inject.ko and the inject user program.
 * Test-only: this interface exists to break ZONE_DEVICE refcounting on
 * purpose so that refwatch can be shown to catch it.
 */
#ifndef REFWATCH_INJECT_H
#define REFWATCH_INJECT_H

#ifdef __KERNEL__
#include <linux/types.h>
#include <linux/ioctl.h>
#else
#include <stdint.h>
#include <sys/ioctl.h>
typedef uint32_t __u32;
typedef int32_t __s32;
typedef uint64_t __u64;
#endif

#define INJ_DEV_PATH "/dev/refwatch_inject"

enum inj_scenario {
	INJ_HEALTHY = 0,
	INJ_INSERT_ZERO_REF = 1,
	INJ_FREE_WHILE_MAPPED = 2,
	INJ_GET_FROM_ZERO = 3,
	INJ_PUT_UNDERFLOW = 4,
	INJ_TEARDOWN_BUSY = 5,
	INJ_NR_SCENARIOS,
};

/* pgmap types we offer; the kernel's enum values differ per version */
enum inj_type {
	INJ_TYPE_DEFAULT = 0,	/* the scenario's natural type */
	INJ_TYPE_GENERIC = 1,	/* MEMORY_DEVICE_GENERIC (device-dax like) */
	INJ_TYPE_FS_DAX = 2,	/* MEMORY_DEVICE_FS_DAX (pmem/fsdax like) */
};

struct inj_setup {
	__u32 scenario;		/* in: enum inj_scenario */
	__u32 type;		/* in: enum inj_type; out: the type used */
	__u64 nr_pages;		/* out: pages the device maps (mmap size) */
	__u64 phys;		/* out: physical base of the pgmap */
	__u64 page0;		/* out: kernel address of struct page of pfn 0 */
	__s32 idle;		/* out: _refcount of an idle page */
	__u32 map_ref;		/* out: 1 if a mapping holds a reference (6.15+) */
};

struct inj_fire {
	__u64 uaddr;		/* in: user address of the target page (faulted in) */
	__u64 nr_pages;		/* in: pages at uaddr (healthy only) */
	__s32 ret;		/* out: result of the kernel call under test */
	__s32 refcount;		/* out: _refcount of the page after the step */
	__s32 refcount_at;	/* out: _refcount right before the wrong step */
	__u32 pad;
};

struct inj_state {
	__u64 index;		/* in: page index inside the device */
	__s32 refcount;		/* out */
	__s32 mapcount;		/* out: raw _mapcount (-1 = none) */
	__u64 pfn;		/* out */
	__u32 live;		/* out: pgmap present */
	__u32 frees;		/* out: page_free callbacks seen so far */
};

#define INJ_IOC_MAGIC	'R'
#define INJ_SETUP	_IOWR(INJ_IOC_MAGIC, 1, struct inj_setup)
#define INJ_FIRE	_IOWR(INJ_IOC_MAGIC, 2, struct inj_fire)
#define INJ_RESTORE	_IO(INJ_IOC_MAGIC, 3)
#define INJ_TEARDOWN	_IO(INJ_IOC_MAGIC, 4)
#define INJ_STATE	_IOWR(INJ_IOC_MAGIC, 5, struct inj_state)

#endif /* REFWATCH_INJECT_H */
