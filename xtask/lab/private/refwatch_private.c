// SPDX-License-Identifier: GPL-2.0
/*
 * refwatch_private: a test-only fake device with device-private memory for the refwatch lab
 * (7.3-src, CONFIG_DEVICE_PRIVATE), in the manner of lib/test_hmm.c, and the refcount bugs the
 * lab injects into it on purpose (xtask/lab/private/README.md).
 *
 * RWP_SETUP hands 2 MiB of free physical address space (request_free_mem_region) to
 * memremap_pages as a MEMORY_DEVICE_PRIVATE pgmap; its pages wait on a free list, linked
 * through zone_device_data. An allocated page keeps the content in a backing system page
 * (zone_device_data too) instead of device memory. With coherent_phys set, the pgmap is
 * MEMORY_DEVICE_COHERENT instead, over the 2 MiB of real memory there (RAM the kernel was told
 * to leave alone): the CPU maps and reads those pages in place, so they need no backing page.
 * RWP_MIGRATE moves the caller's anonymous pages there (migrate_vma_*,
 * MIGRATE_VMA_SELECT_SYSTEM), a CPU touch brings one back (ops->migrate_to_ram), and the last
 * put of a page returns it to the list (ops->folio_free).
 * Each wrong step runs in a noinline function of its own, which refwatch's finding must show.
 *
 * Load it only in a throw-away VM.
 */
#include <linux/fs.h>
#include <linux/highmem.h>
#include <linux/ioport.h>
#include <linux/memremap.h>
#include <linux/migrate.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/uaccess.h>

#include "refwatch_private.h"

/* One 2 MiB subsection: as small as memremap_pages takes, and plenty for the scenarios. */
#define RWP_SIZE (2UL << 20)

static struct dev_pagemap pgmap;
/* The pgmap's range while it is set up: free address space, or coherent_res. */
static struct resource *res;

static unsigned long coherent_phys;
module_param(coherent_phys, ulong, 0444);
MODULE_PARM_DESC(coherent_phys, "2 MiB of reserved RAM there as device-coherent memory");
static struct resource coherent_res;
/* Serialises the ioctls (not the faults, nor folio_free). */
static DEFINE_MUTEX(rwp_lock);
/* Guards the free list and the stats. */
static DEFINE_SPINLOCK(free_lock);
static struct page *free_list;
static struct rwp_stats stats;
/* The device page RWP_MIGRATE moved last: the target of RWP_FREE_WHILE_MAPPED. */
static struct page *last_page;
/* pgmap_owner: migrate_vma_setup picks only our device-private pages. */
static char owner;

static void free_list_push(struct page *page)
{
	page->zone_device_data = free_list;
	free_list = page;
	stats.free_pages++;
}

/* 0 -> 1 and locked, through the kernel's allocation (refwatch's zone_device_page_init). */
static noinline struct page *rwp_alloc_page(void)
{
	struct page *backing = NULL;
	struct page *page;

	if (!coherent_phys) {
		backing = alloc_page(GFP_HIGHUSER);
		if (!backing)
			return NULL;
	}
	spin_lock(&free_lock);
	page = free_list;
	if (page) {
		free_list = page->zone_device_data;
		stats.free_pages--;
		stats.allocs++;
	}
	spin_unlock(&free_lock);
	if (!page) {
		if (backing)
			__free_page(backing);
		return NULL;
	}
	zone_device_page_init(page, &pgmap, 0);
	page->zone_device_data = backing;
	return page;
}

static void rwp_folio_free(struct folio *folio)
{
	struct page *page = &folio->page;

	if (page->zone_device_data)
		__free_page(page->zone_device_data);
	spin_lock(&free_lock);
	free_list_push(page);
	stats.frees++;
	spin_unlock(&free_lock);
}

/* A CPU touched a device-private entry (do_swap_page holds the page, locked). */
static vm_fault_t rwp_migrate_to_ram(struct vm_fault *vmf)
{
	unsigned long src = 0, dst = 0;
	struct migrate_vma args = {
		.vma = vmf->vma,
		.start = vmf->address & PAGE_MASK,
		.end = (vmf->address & PAGE_MASK) + PAGE_SIZE,
		.src = &src,
		.dst = &dst,
		.pgmap_owner = &owner,
		.flags = MIGRATE_VMA_SELECT_DEVICE_PRIVATE,
		.fault_page = vmf->page,
	};
	struct page *spage, *dpage;

	if (migrate_vma_setup(&args))
		return VM_FAULT_SIGBUS;
	spage = migrate_pfn_to_page(src);
	if (spage && (src & MIGRATE_PFN_MIGRATE)) {
		dpage = alloc_page_vma(GFP_HIGHUSER_MOVABLE, vmf->vma, vmf->address);
		if (!dpage) {
			migrate_vma_finalize(&args);
			return VM_FAULT_OOM;
		}
		lock_page(dpage);
		copy_highpage(dpage, spage->zone_device_data);
		dst = migrate_pfn(page_to_pfn(dpage)) | (src & MIGRATE_PFN_WRITE);
	}
	migrate_vma_pages(&args);
	migrate_vma_finalize(&args);
	spin_lock(&free_lock);
	stats.faults++;
	spin_unlock(&free_lock);
	return 0;
}

static const struct dev_pagemap_ops rwp_ops = {
	.folio_free = rwp_folio_free,
	.migrate_to_ram = rwp_migrate_to_ram,
};

static int rwp_setup(void)
{
	unsigned long pfn, first, end;
	void *addr;

	if (res)
		return -EBUSY;
	memset(&pgmap, 0, sizeof(pgmap));
	if (coherent_phys) {
		coherent_res = DEFINE_RES_MEM(coherent_phys, RWP_SIZE);
		res = &coherent_res;
		pgmap.type = MEMORY_DEVICE_COHERENT;
	} else {
		res = request_free_mem_region(&iomem_resource, RWP_SIZE, "refwatch_private");
		if (IS_ERR_OR_NULL(res)) {
			int ret = res ? PTR_ERR(res) : -ENOMEM;

			res = NULL;
			return ret;
		}
		pgmap.type = MEMORY_DEVICE_PRIVATE;
	}
	pgmap.range.start = res->start;
	pgmap.range.end = res->end;
	pgmap.nr_range = 1;
	pgmap.ops = &rwp_ops;
	pgmap.owner = &owner;
	addr = memremap_pages(&pgmap, numa_node_id());
	if (IS_ERR_OR_NULL(addr)) {
		if (!coherent_phys)
			release_mem_region(res->start, resource_size(res));
		res = NULL;
		return addr ? PTR_ERR(addr) : -EFAULT;
	}
	first = res->start >> PAGE_SHIFT;
	end = first + (resource_size(res) >> PAGE_SHIFT);
	spin_lock(&free_lock);
	memset(&stats, 0, sizeof(stats));
	free_list = NULL;
	for (pfn = first; pfn < end; pfn++)
		free_list_push(pfn_to_page(pfn));
	spin_unlock(&free_lock);
	pr_info("refwatch_private: device-%s pfns %#lx-%#lx\n",
		coherent_phys ? "coherent" : "private", first, end);
	return 0;
}

/* Moves the caller's pages [addr, addr + npages) to the device; returns how many moved. */
static long rwp_migrate(struct rwp_range range)
{
	struct mm_struct *mm = current->mm;
	unsigned long i, *src, *dst;
	struct migrate_vma args = {
		.start = range.addr,
		.end = range.addr + range.npages * PAGE_SIZE,
		.pgmap_owner = &owner,
		.flags = MIGRATE_VMA_SELECT_SYSTEM,
	};
	long moved = 0;
	int ret;

	if (!res)
		return -ENODEV;
	if (!range.npages || range.npages > PTRS_PER_PTE)
		return -EINVAL;
	src = kcalloc(range.npages, sizeof(*src), GFP_KERNEL);
	dst = kcalloc(range.npages, sizeof(*dst), GFP_KERNEL);
	if (!src || !dst) {
		ret = -ENOMEM;
		goto out;
	}
	args.src = src;
	args.dst = dst;
	mmap_read_lock(mm);
	args.vma = vma_lookup(mm, args.start);
	ret = args.vma ? migrate_vma_setup(&args) : -EINVAL;
	if (ret) {
		mmap_read_unlock(mm);
		goto out;
	}
	for (i = 0; i < args.npages; i++) {
		struct page *spage = migrate_pfn_to_page(src[i]);
		struct page *dpage, *to;

		if (!(src[i] & MIGRATE_PFN_MIGRATE))
			continue;
		dpage = rwp_alloc_page();
		if (!dpage)
			continue; /* dst 0: the page stays where it is */
		/* A coherent page holds the content itself, a private one in its backing page. */
		to = coherent_phys ? dpage : dpage->zone_device_data;
		if (spage)
			copy_highpage(to, spage);
		else
			clear_highpage(to);
		dst[i] = migrate_pfn(page_to_pfn(dpage)) | (src[i] & MIGRATE_PFN_WRITE);
	}
	migrate_vma_pages(&args);
	for (i = 0; i < args.npages; i++) {
		if (dst[i] && (src[i] & MIGRATE_PFN_MIGRATE)) {
			last_page = migrate_pfn_to_page(dst[i]);
			moved++;
		}
	}
	migrate_vma_finalize(&args);
	mmap_read_unlock(mm);
	ret = moved;
out:
	kfree(src);
	kfree(dst);
	return ret;
}

/*
 * A page allocated and freed, then put once more: 0 -> -1 after its free, an inline
 * folio_put nothing sees (only DEBUG_VM would warn). The free list hands the same page out
 * next, and zone_device_page_init reads -1 at entry; it sets the count to 1 itself, so the
 * page comes out of it healthy and is freed again.
 */
static noinline int rwp_put_underflow(void)
{
	struct page *page = rwp_alloc_page(), *again;

	if (!page)
		return -ENOMEM;
	unlock_page(page);
	put_page(page);
	/* The wrong step: a reference the page does not hold. */
	put_page(page);
	pr_info("refwatch_private: pfn %#lx put to %d after its free\n", page_to_pfn(page),
		page_ref_count(page));
	again = rwp_alloc_page();
	if (!again)
		return -ENOMEM;
	unlock_page(again);
	put_page(again);
	return again == page ? 0 : -EAGAIN;
}

/* Takes a freed page back off the free list. */
static bool free_list_take(struct page *page)
{
	struct page **p;

	for (p = &free_list; *p; p = (struct page **)&(*p)->zone_device_data) {
		if (*p == page) {
			*p = page->zone_device_data;
			stats.free_pages--;
			return true;
		}
	}
	return false;
}

/*
 * The caller's last migrated page holds one reference, its device-private entry's. Dropping
 * it frees the page (free_zone_device_folio with mapcount 1) while the entry still points at
 * it. Then the page is given back to the entry as it was (off the free list, a new backing
 * page, the entry's reference, its pgmap reference and its anon mapping), so that the
 * process's exit frees it the normal way.
 */
static noinline int rwp_free_while_mapped(void)
{
	struct page *page = last_page;
	struct folio *folio;
	struct address_space *mapping;
	struct page *backing;
	bool taken;

	if (!res || !page)
		return -ENODEV;
	folio = page_folio(page);
	if (folio_ref_count(folio) != 1 || folio_mapcount(folio) != 1)
		return -EBUSY;
	backing = alloc_page(GFP_HIGHUSER | __GFP_ZERO);
	if (!backing)
		return -ENOMEM;
	mapping = folio->mapping;
	/* The wrong step: the entry's own reference. */
	folio_put(folio);
	spin_lock(&free_lock);
	taken = free_list_take(page);
	spin_unlock(&free_lock);
	if (!taken) {
		__free_page(backing);
		return -EIO;
	}
	page->zone_device_data = backing;
	percpu_ref_get(&pgmap.ref);
	folio->mapping = mapping;
	set_page_count(page, 1);
	last_page = NULL;
	return 0;
}

/* memunmap_pages waits (pgmap->ref) until every allocated device page is freed. */
static noinline int rwp_teardown(void)
{
	if (!res)
		return -ENODEV;
	memunmap_pages(&pgmap);
	if (!coherent_phys)
		release_mem_region(res->start, resource_size(res));
	res = NULL;
	last_page = NULL;
	spin_lock(&free_lock);
	free_list = NULL;
	stats.free_pages = 0;
	spin_unlock(&free_lock);
	return 0;
}

static long rwp_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct rwp_range range;
	struct rwp_stats now;
	long ret;

	mutex_lock(&rwp_lock);
	switch (cmd) {
	case RWP_SETUP:
		ret = rwp_setup();
		break;
	case RWP_MIGRATE:
		ret = copy_from_user(&range, (void __user *)arg, sizeof(range)) ? -EFAULT :
									       rwp_migrate(range);
		break;
	case RWP_PUT_UNDERFLOW:
		ret = res ? rwp_put_underflow() : -ENODEV;
		break;
	case RWP_FREE_WHILE_MAPPED:
		ret = rwp_free_while_mapped();
		break;
	case RWP_TEARDOWN:
		ret = rwp_teardown();
		break;
	case RWP_STATS:
		spin_lock(&free_lock);
		now = stats;
		spin_unlock(&free_lock);
		ret = copy_to_user((void __user *)arg, &now, sizeof(now)) ? -EFAULT : 0;
		break;
	default:
		ret = -ENOTTY;
	}
	mutex_unlock(&rwp_lock);
	return ret;
}

static const struct file_operations rwp_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = rwp_ioctl,
};

static struct miscdevice rwp_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "refwatch_private",
	.fops = &rwp_fops,
};

static int __init rwp_init(void)
{
	return misc_register(&rwp_misc);
}

static void __exit rwp_exit(void)
{
	misc_deregister(&rwp_misc);
	rwp_teardown();
}

module_init(rwp_init);
module_exit(rwp_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("refwatch lab: device-private pages and injected refcount bugs (test only)");
