// SPDX-License-Identifier: GPL-2.0
/*
 * refwatch_inject - TEST-ONLY module that breaks ZONE_DEVICE page
 * refcounting on purpose, so that refwatch can be shown to catch each bug
 * on real Debian 6.1 and 6.12 kernels and the lab's 7.3 build.  Never load
 * this on a machine you care about.
 *
 * It owns real ZONE_DEVICE pages: a struct dev_pagemap over a physical
 * range the guest kernel does not otherwise use (boot the guest with
 * "memmap=128M$0x60000000", i.e. e820 *reserved*, not pmem, so neither
 * System RAM nor nd_e820 claims it), created with memremap_pages() and
 * removed with memunmap_pages().  /dev/refwatch_inject can be mmap()ed
 * MAP_SHARED; the fault handler inserts the device pages the way
 * device-dax/fsdax do on the running kernel: on <= 6.14 vmf_insert_mixed()
 * with a PFN_DEV|PFN_MAP pfn_t -> __vm_insert_mixed -> insert_pfn -> a
 * pte_devmap PTE that holds no page reference and no mapcount; from 6.15
 * vmf_insert_page_mkwrite() -> insert_page, a normal PTE that holds a
 * reference and a mapcount.
 *
 * Every wrong step runs in a noinline function of this module (or in its
 * fault handler) and goes through an out-of-line kernel function that
 * refwatch probes, so the probe's kernel stack shows who did it.
 *
 * Refcount facts relied on, 6.1 and 6.12 alike (docs/refcount-model.md,
 * "Era 2: 5.18-6.14"):
 *  - memmap_init_zone_device leaves FS_DAX and GENERIC pages at 1 (idle);
 *  - a devmap PTE insert/zap never changes _refcount or _mapcount;
 *  - put_page() on FS_DAX goes to __put_devmap_managed_{page,folio}_refs
 *    (static key on while any FS_DAX pgmap exists) which only subtracts;
 *    on GENERIC it is folio_put() -> __folio_put -> free_zone_device_*()
 *    at 0, which (with ops->page_free set) calls page_free and resets the
 *    count to 1 -- no WARN;
 *  - gup_put_folio (unpin_user_page) subtracts 1024 per pin (order-0);
 *  - memunmap_pages waits only for pgmap percpu refs, never for FS_DAX or
 *    GENERIC page refs or mappings.
 *
 * From 6.15 (the "0-based era", checked on 7.3):
 *  - __init_zone_device_page leaves FS_DAX pages at 0 (idle) and GENERIC
 *    at 1; a mapping adds a reference and a mapcount, and insert_page
 *    refuses a page at 0 (validate_page_before_insert: SIGBUS);
 *  - fsdax (dax_fault_iter) holds a temporary reference across the insert
 *    of its idle page; device-dax inserts its GENERIC page as it is;
 *  - put to 0 -> free_zone_device_folio: FS_DAX only wakes waiters,
 *    GENERIC is reset to 1; neither calls ops->folio_free, so no ops;
 *  - memunmap_pages still waits for neither page references nor
 *    mappings, but the zap of a PTE now touches the struct page (rmap,
 *    the mapping's put), so no PTE may outlive the memmap.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/module.h>
#include <linux/miscdevice.h>
#include <linux/fs.h>
#include <linux/mm.h>
#include <linux/memremap.h>
#include <linux/mutex.h>
#include <linux/uaccess.h>
#include <linux/version.h>
#include <linux/vmstat.h>
#include <linux/sizes.h>

/* 6.15: fsdax pages idle at 0, mappings hold a reference and a mapcount */
#define INJ_ZERO_BASED (LINUX_VERSION_CODE >= KERNEL_VERSION(6, 15, 0))
#if INJ_ZERO_BASED
#include <linux/pagemap.h>
#else
#include <linux/pfn_t.h>
#endif

#include "refwatch_inject.h"

static unsigned long inj_base = 0x60000000;
module_param_named(base, inj_base, ulong, 0444);
MODULE_PARM_DESC(base, "physical base of the reserved range (memmap=..$..)");

/* memremap_pages needs subsection (2 MiB) granularity */
static unsigned long inj_size = SZ_2M;
module_param_named(size, inj_size, ulong, 0444);
MODULE_PARM_DESC(size, "bytes to turn into ZONE_DEVICE pages (2 MiB multiple)");

/*
 * Like device-dax's dax_set_mapping() and fsdax's dax_associate_entry(),
 * give each page a ->mapping/->index at fault time.  It matters on 6.12:
 * GUP-fast (gup_fast_folio_allowed, CONFIG_SECRETMEM=y) refuses order-0
 * folios with mapping == NULL, undoes its grab with gup_put_folio and
 * falls back to the slow path; real DAX pages do not take that detour.
 */
static bool dax_mapping = true;
module_param(dax_mapping, bool, 0644);
MODULE_PARM_DESC(dax_mapping, "set page->mapping/index at fault like device-dax (default Y)");

#if INJ_ZERO_BASED
/*
 * From 6.15 the zap of a dirty PTE calls folio_mark_dirty(), i.e.
 * folio->mapping->a_ops->dirty_folio, and the misc device's own mapping
 * has empty_aops (none).  Like device-dax's dev_dax_aops, the pages name
 * a mapping whose dirty_folio does nothing.
 */
static const struct address_space_operations inj_dax_aops = {
	.dirty_folio = noop_dirty_folio,
};
static struct address_space inj_dax_mapping = {
	.a_ops = &inj_dax_aops,
};
#endif

/*
 * Exported read-only so a tracefs kprobe can fetch @page0+0x34.  With
 * SPARSEMEM_VMEMMAP pfn_to_page() is arithmetic, so it is known at load.
 */
static unsigned long page0_addr;
module_param(page0_addr, ulong, 0444);
MODULE_PARM_DESC(page0_addr, "struct page * of the first device page");

static const char * const inj_names[] = {
	[INJ_HEALTHY] = "healthy",
	[INJ_INSERT_ZERO_REF] = "insert-zero-ref",
	[INJ_FREE_WHILE_MAPPED] = "free-while-mapped",
	[INJ_GET_FROM_ZERO] = "get-from-zero",
	[INJ_PUT_UNDERFLOW] = "put-underflow",
	[INJ_TEARDOWN_BUSY] = "teardown-busy",
};

static struct {
	struct mutex lock;		/* serialises ioctls, not faults */
	unsigned long opened;		/* bit 0: single opener */
	struct dev_pagemap pgmap;
	bool live;			/* pgmap (and its memmap) exists */
	int scenario;
	int type;			/* enum inj_type actually used */
	unsigned long base_pfn;
	unsigned long nr_pages;
	atomic_t frees;			/* page_free callbacks (<= 6.14) */
	long pin_stat_fix;		/* NR_FOLL_PIN_RELEASED correction */
#if INJ_ZERO_BASED
	struct address_space *umapping;	/* where the users' VMAs are */
#endif
} inj = {
	.lock = __MUTEX_INITIALIZER(inj.lock),
};

static inline struct page *inj_page(unsigned long idx)
{
	return pfn_to_page(inj.base_pfn + idx);
}

/* the refcount of an idle page of ours */
static int inj_idle(void)
{
	return INJ_ZERO_BASED && inj.type == INJ_TYPE_FS_DAX ? 0 : 1;
}

/* the refcount a page should have now: idle, plus its mappings' from 6.15 */
static int inj_healthy_count(struct page *page)
{
	int mapped = INJ_ZERO_BASED ? atomic_read(&page->_mapcount) + 1 : 0;

	return inj_idle() + mapped;
}

#if !INJ_ZERO_BASED
/*
 * Reached from free_zone_device_page (6.1) / free_zone_device_folio (6.12)
 * when a page of ours hits 0.  Providing it keeps those functions off their
 * WARN_ON_ONCE(!ops->page_free) path; the core resets the count to 1 after
 * we return (non-PRIVATE/COHERENT types).
 */
static void inj_page_free(struct page *page)
{
	atomic_inc(&inj.frees);
	pr_info("page_free: pfn %#lx refcount %d mapcount %d\n",
		page_to_pfn(page), page_ref_count(page),
		atomic_read(&page->_mapcount));
}

static const struct dev_pagemap_ops inj_pgmap_ops = {
	.page_free = inj_page_free,
};
#endif

static void inj_log(const char *what, struct page *page)
{
	pr_info("%s: %s pfn %#lx refcount %d mapcount %d\n",
		inj_names[inj.scenario], what, page_to_pfn(page),
		page_ref_count(page), atomic_read(&page->_mapcount));
}

/* ---------------------------------------------------------------- pgmap */

static noinline int inj_pgmap_create(int scenario, int type)
{
	void *addr;

	memset(&inj.pgmap, 0, sizeof(inj.pgmap));
	inj.pgmap.type = type == INJ_TYPE_FS_DAX ? MEMORY_DEVICE_FS_DAX :
						   MEMORY_DEVICE_GENERIC;
	inj.pgmap.range.start = inj_base;
	inj.pgmap.range.end = inj_base + inj_size - 1;
	inj.pgmap.nr_range = 1;
#if !INJ_ZERO_BASED
	inj.pgmap.ops = &inj_pgmap_ops;
#endif

	addr = memremap_pages(&inj.pgmap, NUMA_NO_NODE);
	if (IS_ERR(addr)) {
		pr_err("memremap_pages(%#lx+%#lx): %ld\n", inj_base,
		       inj_size, PTR_ERR(addr));
		return PTR_ERR(addr);
	}
	inj.base_pfn = PHYS_PFN(inj_base);
	inj.nr_pages = inj_size >> PAGE_SHIFT;
	inj.scenario = scenario;
	inj.type = type;
	inj.pin_stat_fix = 0;
	WRITE_ONCE(inj.live, true);
	pr_info("%s: pgmap %s pfn %#lx-%#lx page0 %px refcount %d\n",
		inj_names[scenario], type == INJ_TYPE_FS_DAX ? "FS_DAX" : "GENERIC",
		inj.base_pfn, inj.base_pfn + inj.nr_pages - 1, inj_page(0),
		page_ref_count(inj_page(0)));
	return 0;
}

/* put every page back to its healthy count (and undo stat skew) */
static void inj_restore(void)
{
	unsigned long i;

	if (!inj.live)
		return;
	for (i = 0; i < inj.nr_pages; i++) {
		struct page *page = inj_page(i);
		struct folio *folio = page_folio(page);
		int healthy = inj_healthy_count(page);

		if (page_ref_count(page) != healthy) {
			inj_log("restore", page);
			/* inline atomic: invisible to refwatch, on purpose */
			set_page_count(page, healthy);
		}
		/* the next memremap_pages re-inits the memmap anyway */
		folio->mapping = NULL;
		folio->index = 0;
	}
	if (inj.pin_stat_fix) {
		mod_node_page_state(page_pgdat(inj_page(0)),
				    NR_FOLL_PIN_RELEASED, inj.pin_stat_fix);
		inj.pin_stat_fix = 0;
	}
}

static noinline void inj_pgmap_destroy(void)
{
	if (!inj.live)
		return;
	WRITE_ONCE(inj.live, false);
	memunmap_pages(&inj.pgmap);
	pr_info("%s: pgmap removed\n", inj_names[inj.scenario]);
}

/* ------------------------------------------------------------ scenarios */

/*
 * insert-zero-ref, step 1 (at SETUP): the seed RFC ("mm: remove extra
 * ZONE_DEVICE struct page refcount", 2020) made memremap_pages hand out
 * pages at refcount 0 while the fsdax fault path kept inserting them
 * without taking a reference.  Emulate that allocator: page 0 starts at 0.
 * Step 2 is the user's first touch: inj_vm_fault() ->
 * vmf_insert_mixed -> __vm_insert_mixed/insert_pfn with _refcount == 0.
 * Neither 6.1 nor 6.12 checks the count there, so the PTE is installed.
 * From 6.15 an idle FS_DAX page is at 0 anyway, and the bug is the fault
 * path inserting it without fsdax's temporary reference (inj_vm_fault),
 * the way <= 6.14 inserted fsdax pfns.  vmf_insert_page_mkwrite sees 0,
 * insert_page refuses it (validate_page_before_insert) and the toucher
 * gets SIGBUS: the kernel's own guard, as try_grab_folio's WARN is for
 * get-from-zero.
 */
static noinline void inj_insert_zero_ref_arm(struct page *page)
{
	set_page_count(page, 0);
	inj_log("armed page at refcount 0", page);
}

/*
 * healthy: a driver pins the user buffer for DMA and unpins it.
 * try_grab_page (6.1) / try_grab_folio (6.12) at 1 -> 1025, then
 * gup_put_folio (+ __put_devmap_managed_*_refs for FS_DAX) back to 1.
 * From 6.15 the mapping's reference comes on top: GENERIC 2 -> 1026 -> 2.
 */
static noinline int inj_healthy(struct inj_fire *f)
{
	struct page *pages[16];
	int n = min_t(u64, f->nr_pages ? f->nr_pages : 1, ARRAY_SIZE(pages));
	int ret;

	ret = pin_user_pages_fast(f->uaddr, n, FOLL_WRITE, pages);
	if (ret <= 0)
		return ret ? ret : -EFAULT;
	f->refcount_at = page_ref_count(pages[0]);
	inj_log("pinned", pages[0]);
	unpin_user_pages(pages, ret);
	f->refcount = page_ref_count(pages[0]);
	inj_log("unpinned", pages[0]);
	return ret;
}

/*
 * free-while-mapped: the page is mapped (devmap PTE, which holds no ref
 * on <= 6.12) and the driver drops "its" reference with put_page(), i.e.
 * the last one.  GENERIC: folio_put() 1 -> 0 -> __folio_put ->
 * free_zone_device_page(6.1)/_folio(6.12) at refcount 0 while the PTE is
 * still there; page_free runs, the core resets the count to 1 (so no
 * cleanup is needed for the count).  With FS_DAX, put_page() is caught by
 * __put_devmap_managed_*_refs (1 -> 0, no free): that is put-underflow.
 * From 6.15 the last reference is the mapping's own, and FS_DAX (idle at
 * 0) is the type whose put reaches the free: 1 -> 0 ->
 * free_zone_device_folio with mapcount 1 and the PTE still there.  It
 * only wakes waiters, so the page stays mapped at 0 until INJ_RESTORE
 * gives the mapping its reference back.  GENERIC goes 2 -> 1, no free.
 */
static noinline int inj_free_while_mapped(struct page *page, struct inj_fire *f)
{
#if !INJ_ZERO_BASED
	int frees = atomic_read(&inj.frees);
#endif

	f->refcount_at = page_ref_count(page);
	inj_log("put_page (last ref) while mapped", page);
	put_page(page);
	f->refcount = page_ref_count(page);
	inj_log("after put_page", page);
#if INJ_ZERO_BASED
	/* no callback for FS_DAX/GENERIC: a put to 0 is the free */
	return f->refcount == 0;
#else
	return atomic_read(&inj.frees) - frees;	/* 1 if it was freed */
#endif
}

/*
 * get-from-zero: the driver dropped its reference with a raw atomic
 * (page_ref_dec: inline, no probe sees it), leaving a *mapped* page at 0,
 * then pins the user buffer.  GUP-fast: try_grab_folio (6.1, speculative,
 * folio_ref_try_add_rcu fails on 0) / try_grab_folio_fast (6.12) fail and
 * fall back; the slow path follow_page_pte -> try_grab_page (6.1) /
 * try_grab_folio (6.12) sees 0: WARN_ON_ONCE(refcount <= 0) and -ENOMEM.
 * That WARN is the kernel's own guard against exactly this bug and cannot
 * be avoided by any non-speculative grab at 0; it fires once per boot.
 * The page stays at 0 until INJ_RESTORE so the user program may try its
 * own GUP (process_vm_readv) too.  From 6.15 the reference dropped is the
 * mapping's (FS_DAX 1 -> 0), and the slow path's grab is try_grab_folio.
 */
static noinline int inj_get_from_zero(struct page *page, struct inj_fire *f)
{
	struct page *pinned;
	int ret;

	page_ref_dec(page);
	f->refcount_at = page_ref_count(page);
	inj_log("pin_user_pages_fast on a mapped page at refcount 0", page);
	ret = pin_user_pages_fast(f->uaddr, 1, FOLL_WRITE, &pinned);
	if (ret == 1) {
		/* should not happen: undo the pin we got */
		pr_warn("get-from-zero: pin succeeded from 0?\n");
		unpin_user_page(pinned);
	}
	f->refcount = page_ref_count(page);
	inj_log("after pin attempt", page);
	return ret;
}

/*
 * put-underflow: pin once, unpin twice (the classic double unpin), first
 * with unpin_user_page, then with unpin_user_pages (a driver's release of
 * its page array).  The second unpin -> gup_put_folio(refs=1, FOLL_PIN) subtracts
 * GUP_PIN_COUNTING_BIAS from a page at 1: FS_DAX goes through
 * __put_devmap_managed_*_refs(refs=1024) -> -1023 (no free, no wake);
 * GENERIC through folio_put_refs -> -1023 (not 0, so no free either).
 * No WARN on either kernel (no DEBUG_VM).  INJ_RESTORE puts it back to 1
 * and undoes the NR_FOLL_PIN_RELEASED skew.  From 6.15 the FS_DAX page is
 * at 1 because it is mapped (idle 0 + the mapping), the same numbers; the
 * first unpin is unpin_user_page with gup_put_folio inlined, the second the
 * out-of-line gup_put_folio, whose flags say FOLL_PIN.
 */
static noinline int inj_put_underflow(struct inj_fire *f)
{
	struct page *page;
	int ret;

	ret = pin_user_pages_fast(f->uaddr, 1, FOLL_WRITE, &page);
	if (ret != 1)
		return ret < 0 ? ret : -EFAULT;
	inj_log("pinned", page);
	unpin_user_page(page);
	f->refcount_at = page_ref_count(page);
	inj_log("unpinned once (balanced); unpinning again", page);
	unpin_user_pages(&page, 1);
	inj.pin_stat_fix -= 1;
	f->refcount = page_ref_count(page);
	inj_log("after double unpin", page);
	return 0;
}

/*
 * teardown-busy: the device goes away while a page is still mapped in a
 * process and pinned by the driver (R=1025).  On 6.1/6.12 memunmap_pages
 * waits only for pgmap percpu refs (dropped in bulk for FS_DAX/GENERIC),
 * so it proceeds and frees the memmap under the pin and the PTE.
 * Survivable because: the pin is deliberately leaked (unpinning would
 * write to the freed memmap), and the later zap of the devmap PTE does not
 * touch struct page (vm_normal_page returns NULL for pte_devmap; GUP on it
 * fails in get_dev_pagemap).  The physical range is reserved, so stray
 * user accesses hit nothing else.
 * From 6.15 a zap reads and puts the struct page (rmap, the mapping's
 * reference), so a PTE left over the freed memmap would oops at munmap.
 * The driver zaps its users' mappings first, as device-dax's unbind does
 * (kill_dev_dax -> unmap_mapping_range), and what memunmap_pages still
 * does not wait for is the pin: GENERIC R = 1 idle + 1024, one busy page.
 */
static noinline int inj_teardown_busy(struct inj_fire *f)
{
	struct page *page;
	unsigned long pfn;
	int ret;

	ret = pin_user_pages_fast(f->uaddr, 1, FOLL_WRITE, &page);
	if (ret != 1)
		return ret < 0 ? ret : -EFAULT;
	pfn = page_to_pfn(page);
#if INJ_ZERO_BASED
	unmap_mapping_range(inj.umapping, 0, 0, 1);
#endif
	f->refcount_at = page_ref_count(page);
	inj_log(INJ_ZERO_BASED ? "memunmap_pages with the page pinned" :
		"memunmap_pages with the page mapped and pinned", page);
	WRITE_ONCE(inj.live, false);
	memunmap_pages(&inj.pgmap);
	f->refcount = 0;	/* memmap is gone: do not read it */
	pr_info("teardown-busy: pgmap removed; leaked pin on pfn %#lx\n", pfn);
	return 0;
}

/* ------------------------------------------------------------------ fops */

static vm_fault_t inj_vm_fault(struct vm_fault *vmf)
{
	unsigned long pfn;
	struct folio *folio;
	vm_fault_t ret;
#if INJ_ZERO_BASED
	bool fsdax_ref;
#endif

	/*
	 * No lock: the ioctls may fault (GUP) while holding inj.lock.  The
	 * test program is single-threaded and never races a fault with
	 * teardown.
	 */
	if (!READ_ONCE(inj.live) || vmf->pgoff >= inj.nr_pages)
		return VM_FAULT_SIGBUS;
	pfn = inj.base_pfn + vmf->pgoff;
	folio = page_folio(pfn_to_page(pfn));
	if (dax_mapping && !folio->mapping) {
#if INJ_ZERO_BASED
		folio->mapping = &inj_dax_mapping;
#else
		folio->mapping = vmf->vma->vm_file->f_mapping;
#endif
		folio->index = vmf->pgoff;
	}
#if INJ_ZERO_BASED
	/*
	 * device-dax (__dev_dax_pte_fault) inserts its GENERIC page as it is
	 * (idle at 1); fsdax (dax_fault_iter) holds a temporary reference
	 * across the insert of its idle FS_DAX page (at 0).  The mapping takes
	 * a reference and a mapcount.  insert-zero-ref's page goes in without
	 * the temporary reference.
	 */
	fsdax_ref = inj.type == INJ_TYPE_FS_DAX &&
		    !(inj.scenario == INJ_INSERT_ZERO_REF && vmf->pgoff == 0);
	if (fsdax_ref)
		folio_ref_inc(folio);
	ret = vmf_insert_page_mkwrite(vmf, &folio->page,
				      vmf->flags & FAULT_FLAG_WRITE);
	if (fsdax_ref)
		folio_put(folio);
#else
	/* device-dax/fsdax style: devmap PTE, no ref taken (<= 6.14) */
	ret = vmf_insert_mixed(vmf->vma, vmf->address,
			       __pfn_to_pfn_t(pfn, PFN_DEV | PFN_MAP));
#endif
	if (vmf->pgoff == 0)
		inj_log("fault: inserted", pfn_to_page(pfn));
	return ret;
}

static const struct vm_operations_struct inj_vm_ops = {
	.fault = inj_vm_fault,
};

static int inj_mmap(struct file *file, struct vm_area_struct *vma)
{
	if (!inj.live)
		return -ENXIO;
	if (!(vma->vm_flags & VM_SHARED))
		return -EINVAL;	/* like device-dax: no private COW copies */
	if (vma->vm_pgoff + vma_pages(vma) > inj.nr_pages)
		return -EINVAL;
	vma->vm_ops = &inj_vm_ops;
	/* no fork copies, no mremap growth: keep the shadow simple */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 3, 0)
	vm_flags_set(vma, VM_DONTCOPY | VM_DONTEXPAND | VM_DONTDUMP);
#else
	vma->vm_flags |= VM_DONTCOPY | VM_DONTEXPAND | VM_DONTDUMP;
#endif
#if INJ_ZERO_BASED
	inj.umapping = file->f_mapping;	/* teardown-busy zaps it */
#endif
	return 0;
}

static int inj_default_type(int scenario)
{
	switch (scenario) {
	case INJ_INSERT_ZERO_REF:	/* the seed RFC's case is fsdax */
	case INJ_GET_FROM_ZERO:		/* fsdax PTEs hold no ref: GUP sees 0 */
	case INJ_PUT_UNDERFLOW:		/* reaches __put_devmap_managed_*_refs */
		return INJ_TYPE_FS_DAX;
	case INJ_FREE_WHILE_MAPPED:	/* 6.15+: FS_DAX's last put frees */
		return INJ_ZERO_BASED ? INJ_TYPE_FS_DAX : INJ_TYPE_GENERIC;
	default:			/* healthy, teardown */
		return INJ_TYPE_GENERIC;
	}
}

static long inj_setup(struct inj_setup __user *uarg)
{
	struct inj_setup s;
	int ret;

	if (copy_from_user(&s, uarg, sizeof(s)))
		return -EFAULT;
	if (s.scenario >= INJ_NR_SCENARIOS || s.type > INJ_TYPE_FS_DAX)
		return -EINVAL;
	if (inj.live)
		return -EBUSY;
	if (s.type == INJ_TYPE_DEFAULT)
		s.type = inj_default_type(s.scenario);
	ret = inj_pgmap_create(s.scenario, s.type);
	if (ret)
		return ret;
	if (s.scenario == INJ_INSERT_ZERO_REF)
		inj_insert_zero_ref_arm(inj_page(0));
	s.nr_pages = inj.nr_pages;
	s.phys = inj_base;
	s.page0 = (unsigned long)inj_page(0);
	s.idle = inj_idle();
	s.map_ref = INJ_ZERO_BASED;
	return copy_to_user(uarg, &s, sizeof(s)) ? -EFAULT : 0;
}

static long inj_fire(struct inj_fire __user *uarg)
{
	struct inj_fire f;
	struct page *page;

	if (copy_from_user(&f, uarg, sizeof(f)))
		return -EFAULT;
	if (!inj.live)
		return -ENXIO;
	page = inj_page(0);	/* every scenario targets device page 0 */
	f.refcount_at = f.refcount = page_ref_count(page);

	switch (inj.scenario) {
	case INJ_HEALTHY:
		f.ret = inj_healthy(&f);
		break;
	case INJ_INSERT_ZERO_REF:
		f.ret = 0;	/* the wrong step was the fault itself */
		break;
	case INJ_FREE_WHILE_MAPPED:
		f.ret = inj_free_while_mapped(page, &f);
		break;
	case INJ_GET_FROM_ZERO:
		f.ret = inj_get_from_zero(page, &f);
		break;
	case INJ_PUT_UNDERFLOW:
		f.ret = inj_put_underflow(&f);
		break;
	case INJ_TEARDOWN_BUSY:
		f.ret = inj_teardown_busy(&f);
		break;
	}
	return copy_to_user(uarg, &f, sizeof(f)) ? -EFAULT : 0;
}

static long inj_state(struct inj_state __user *uarg)
{
	struct inj_state st;

	if (copy_from_user(&st, uarg, sizeof(st)))
		return -EFAULT;
	st.live = inj.live;
	st.frees = atomic_read(&inj.frees);
	st.refcount = st.mapcount = 0;
	st.pfn = 0;
	if (inj.live) {
		struct page *page;

		if (st.index >= inj.nr_pages)
			return -EINVAL;
		page = inj_page(st.index);
		st.pfn = page_to_pfn(page);
		st.refcount = page_ref_count(page);
		st.mapcount = atomic_read(&page->_mapcount);
	}
	return copy_to_user(uarg, &st, sizeof(st)) ? -EFAULT : 0;
}

static long inj_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	void __user *uarg = (void __user *)arg;
	long ret;

	mutex_lock(&inj.lock);
	switch (cmd) {
	case INJ_SETUP:
		ret = inj_setup(uarg);
		break;
	case INJ_FIRE:
		ret = inj_fire(uarg);
		break;
	case INJ_RESTORE:
		inj_restore();
		ret = 0;
		break;
	case INJ_TEARDOWN:
		inj_restore();
		inj_pgmap_destroy();
		ret = 0;
		break;
	case INJ_STATE:
		ret = inj_state(uarg);
		break;
	default:
		ret = -ENOTTY;
	}
	mutex_unlock(&inj.lock);
	return ret;
}

static int inj_open(struct inode *inode, struct file *file)
{
	if (test_and_set_bit(0, &inj.opened))
		return -EBUSY;
	return 0;
}

/* runs after the last munmap (each VMA holds a file reference) */
static int inj_release(struct inode *inode, struct file *file)
{
	mutex_lock(&inj.lock);
	inj_restore();
	inj_pgmap_destroy();
	mutex_unlock(&inj.lock);
	clear_bit(0, &inj.opened);
	return 0;
}

static const struct file_operations inj_fops = {
	.owner = THIS_MODULE,
	.open = inj_open,
	.release = inj_release,
	.mmap = inj_mmap,
	.unlocked_ioctl = inj_ioctl,
	.llseek = noop_llseek,
};

static struct miscdevice inj_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "refwatch_inject",
	.fops = &inj_fops,
	.mode = 0600,
};

static int __init inj_init(void)
{
	if (!inj_size || (inj_base | inj_size) & (SZ_2M - 1)) {
		pr_err("base/size must be 2 MiB aligned\n");
		return -EINVAL;
	}
	page0_addr = (unsigned long)pfn_to_page(PHYS_PFN(inj_base));
	pr_warn("TEST-ONLY module: breaks ZONE_DEVICE refcounts on request (page0 %px)\n",
		(void *)page0_addr);
	return misc_register(&inj_misc);
}

static void __exit inj_exit(void)
{
	misc_deregister(&inj_misc);
}

module_init(inj_init);
module_exit(inj_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("refwatch test-only ZONE_DEVICE refcount bug injector");
