/* insncount: a QEMU TCG plugin that counts the guest's executed instructions per vCPU and
 * logs the counts at every marker. Under TCG wall-clock time follows the host's
 * load; instruction counts do not, so `cargo xtask bench` measures the hot path with both.
 *
 * The marker is `xchg %bx,%bx` (66 87 db), a no-op that benchload executes around each
 * round. Every execution appends "mark VCPU TOTAL OWN" to the file given as out=FILE: all
 * vCPUs' instructions, and those of the vCPU that executed the marker (the workload's, which
 * is pinned: its own cost, apart from the tracer's reader and the rest of the system).
 * Built by xtask against qemu-plugin.h of Debian's qemu source (the host's QEMU version). */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define MAX_CPUS 64

/* One counter per vCPU: each is only written by its own vCPU. */
static uint64_t counts[MAX_CPUS];
static FILE *out;

static void tb_exec(unsigned int cpu, void *insns)
{
	counts[cpu % MAX_CPUS] += (uintptr_t)insns;
}

static void mark(unsigned int cpu, void *unused)
{
	(void)unused;
	uint64_t total = 0;
	for (int i = 0; i < MAX_CPUS; i++)
		total += counts[i];
	fprintf(out, "mark %u %" PRIu64 " %" PRIu64 "\n", cpu, total, counts[cpu % MAX_CPUS]);
	fflush(out);
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
	static const unsigned char marker[] = { 0x66, 0x87, 0xdb };
	size_t n = qemu_plugin_tb_n_insns(tb);

	(void)id;
	qemu_plugin_register_vcpu_tb_exec_cb(tb, tb_exec, QEMU_PLUGIN_CB_NO_REGS, (void *)(uintptr_t)n);
	for (size_t i = 0; i < n; i++) {
		struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
		if (qemu_plugin_insn_size(insn) == sizeof(marker) &&
		    !memcmp(qemu_plugin_insn_data(insn), marker, sizeof(marker)))
			qemu_plugin_register_vcpu_insn_exec_cb(insn, mark, QEMU_PLUGIN_CB_NO_REGS, NULL);
	}
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
	const char *path = NULL;

	(void)info;
	for (int i = 0; i < argc; i++)
		if (!strncmp(argv[i], "out=", 4))
			path = argv[i] + 4;
	if (!path || !(out = fopen(path, "w")))
		return -1;
	qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
	return 0;
}
