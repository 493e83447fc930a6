// SPDX-License-Identifier: GPL-2.0
/*
 * refwatch_p2pdma: a test-only P2PDMA refcount bug for the refwatch lab. Writing a user
 * address of the writer's p2pmem/allocate mapping to /sys/kernel/debug/refwatch_p2pdma/double_put
 * pins that page (as a driver doing DMA would), releases the pin, and then drops one reference
 * more, which the page does not hold: it reaches refcount 0 while the writer still maps it, and
 * free_zone_device_folio gives it back to the device's pool under that mapping.
 *
 * Load it only in a throw-away VM. Kept apart from refwatch_inject, which has no P2PDMA pgmap.
 */
#include <linux/debugfs.h>
#include <linux/memremap.h>
#include <linux/mm.h>
#include <linux/module.h>

static struct dentry *dir;

static ssize_t double_put_write(struct file *file, const char __user *buf, size_t len,
				loff_t *pos)
{
	unsigned long address;
	struct page *page;
	int ret;

	ret = kstrtoul_from_user(buf, len, 0, &address);
	if (ret)
		return ret;
	ret = pin_user_pages_fast(address, 1, FOLL_WRITE | FOLL_PCI_P2PDMA, &page);
	if (ret != 1)
		return ret < 0 ? ret : -EFAULT;
	if (!is_pci_p2pdma_page(page)) {
		unpin_user_page(page);
		return -EINVAL;
	}
	pr_info("refwatch_p2pdma: pfn %#lx refcount %d mapcount %d: unpin and one put too many\n",
		page_to_pfn(page), page_ref_count(page), folio_mapcount(page_folio(page)));
	unpin_user_page(page);
	/* The wrong step: refwatch's finding must name this function on its stack. */
	put_page(page);
	return len;
}

static const struct file_operations double_put_fops = {
	.owner = THIS_MODULE,
	.write = double_put_write,
};

static int __init refwatch_p2pdma_init(void)
{
	dir = debugfs_create_dir("refwatch_p2pdma", NULL);
	debugfs_create_file("double_put", 0200, dir, NULL, &double_put_fops);
	return 0;
}

static void __exit refwatch_p2pdma_exit(void)
{
	debugfs_remove(dir);
}

module_init(refwatch_p2pdma_init);
module_exit(refwatch_p2pdma_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("refwatch lab: a P2PDMA page released once too often (test only)");
