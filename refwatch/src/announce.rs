//! Findings written to the kernel log the moment they are made, so that they reach dmesg,
//! the serial console, netconsole, pstore and kdump ahead of the crash they predict.

use std::{fs::File, io::Write};

use crate::{
    aggregate::{Aggregator, Finding},
    escape::printable,
    summary::group_by,
};

/// Where the lines go.
pub const KMSG: &str = "/dev/kmsg";
/// `KERN_ERR`: a console at the default loglevel shows it, as it shows the oops after it.
const LEVEL: &str = "<3>";
/// The kernel cuts a record at about 1 KiB; the line stays well below.
const MAX_LINE: usize = 900;

/// One line per rule, pgmap and task among `findings`, in the order they were first raised:
/// `refwatch: RULE pfn PFN page PAGE pgmap PGMAP (TYPE) task COMM/TGID: DETAIL`, with the
/// count and pfn range when one line stands for several pages.
pub fn lines(findings: &[Finding]) -> Vec<String> {
    group_by(findings, |f| (f.rule, f.pgmap.address, f.tgid))
        .into_iter()
        .map(|group| {
            let f = group[0];
            let more = match group.len() {
                1 => String::new(),
                n => {
                    let lo = group.iter().map(|g| g.pfn).min().unwrap_or(f.pfn);
                    let hi = group.iter().map(|g| g.pfn).max().unwrap_or(f.pfn);
                    format!(" (+{} more pages in pfn {lo:#x}-{hi:#x})", n - 1)
                }
            };
            let mut line = format!(
                "refwatch: {} pfn {:#x} page {:#x}{more} pgmap {:#x} ({}) task {}/{}: {}",
                f.rule,
                f.pfn,
                f.page,
                f.pgmap.address,
                printable(&f.pgmap.type_name),
                printable(&f.comm),
                f.tgid,
                printable(&f.detail)
            );
            if let Some(held) = f.held_by.first() {
                line.push_str(&format!("; {}", printable(held)));
            }
            truncate(line)
        })
        .collect()
}

fn truncate(mut line: String) -> String {
    if line.len() > MAX_LINE {
        let mut end = MAX_LINE;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
        line.push('…');
    }
    line
}

/// Writes the lines for each finding the aggregator raised since the last call.
pub struct Announcer {
    kmsg: Result<File, String>,
    /// Findings announced so far (kept ones by index, the rest by count).
    kept: usize,
    total: u64,
    warned: bool,
}

impl Announcer {
    pub fn new() -> Self {
        let kmsg = std::fs::OpenOptions::new()
            .write(true)
            .open(KMSG)
            .map_err(|e| format!("{KMSG}: {e}"));
        Self {
            kmsg,
            kept: 0,
            total: 0,
            warned: false,
        }
    }

    /// Announces what `agg` found since the last call; returns how many findings that was.
    pub fn announce(&mut self, agg: &Aggregator) -> u64 {
        let total = agg.total_findings();
        let new = total - self.total;
        if new == 0 {
            return 0;
        }
        let kept = agg.findings();
        let mut out = lines(&kept[self.kept.min(kept.len())..]);
        let unkept = new - (kept.len() - self.kept.min(kept.len())) as u64;
        if unkept > 0 {
            out.push(format!(
                "refwatch: {unkept} more finding(s), beyond those refwatch keeps"
            ));
        }
        (self.kept, self.total) = (kept.len(), total);
        for line in out {
            self.write(&line);
        }
        new
    }

    fn write(&mut self, line: &str) {
        // One write() is one record.
        let result = match &mut self.kmsg {
            Ok(file) => file
                .write_all(format!("{LEVEL}{line}\n").as_bytes())
                .map_err(|e| format!("{KMSG}: {e}")),
            Err(e) => Err(e.clone()),
        };
        if let Err(e) = result
            && !std::mem::replace(&mut self.warned, true)
        {
            eprintln!(
                "refwatch: warning: findings cannot go to the kernel log ({e}); \
                 they are only in refwatch's output"
            );
        }
    }
}

impl Default for Announcer {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{PgmapRef, Rule};

    fn finding(pfn: u64, tgid: u32, comm: &str) -> Finding {
        Finding {
            rule: Rule::TeardownBusy,
            detail: "memunmap_pages with the page busy: refcount 2 above idle 1".into(),
            pfn,
            page: 0xffffea0000000000 + pfn * 64,
            held_by: vec!["reference taken by try_grab_folio in daxload/77".into()],
            pgmap: PgmapRef {
                address: 0xffff888100002000,
                type_name: "generic".into(),
                start: None,
                end: None,
            },
            pid: tgid,
            tgid,
            comm: comm.into(),
            ts_ns: 1,
            stack_id: 0,
            recent: Vec::new(),
        }
    }

    #[test]
    fn one_line_per_rule_pgmap_and_task() {
        let f = [
            finding(0x40002, 7, "daxload"),
            finding(0x40000, 7, "daxload"),
            finding(0x40001, 8, "evil\n<0>x"),
        ];
        let l = lines(&f);
        assert_eq!(l.len(), 2);
        assert!(
            l[0].starts_with(
                "refwatch: teardown-busy pfn 0x40002 page 0xffffea0001000080 \
                 (+1 more pages in pfn 0x40000-0x40002)"
            ),
            "{}",
            l[0]
        );
        assert!(
            l[0].contains("pgmap 0xffff888100002000 (generic) task daxload/7: memunmap_pages"),
            "{}",
            l[0]
        );
        assert!(
            l[0].ends_with("; reference taken by try_grab_folio in daxload/77"),
            "{}",
            l[0]
        );
        assert!(
            l[1].contains("task evil\\x0a<0>x/8") && !l[1].contains('\n'),
            "{}",
            l[1]
        );
    }

    #[test]
    fn long_details_are_cut() {
        let mut f = finding(1, 1, "x");
        f.detail = "é".repeat(2000);
        assert!(lines(&[f])[0].len() <= MAX_LINE + '…'.len_utf8());
    }
}
