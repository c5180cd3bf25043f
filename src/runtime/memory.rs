//! The memory check before a program's arena is allocated: a step that needs more memory than
//! the process can get is refused with an error that names its largest buffers, instead of
//! aborting (or being killed) halfway through allocating or running.
//!
//! The memory a process can get is the least of: the cgroup's memory limit (v2
//! `/sys/fs/cgroup/memory.max`, v1 `/sys/fs/cgroup/memory/memory.limit_in_bytes`),
//! `MemAvailable` of `/proc/meminfo`, and what the address-space limit (`RLIMIT_AS`, read from
//! `/proc/self/limits`) leaves beside the address space already in use (`VmSize` of
//! `/proc/self/status`). A source that cannot be read (another OS, no cgroup) does not limit.

use super::plan::Plan;
use crate::kernels::{BufKind, Program};
use std::fmt;

/// How many bytes a step may use, and which limit says so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryBudget {
    pub bytes: u64,
    /// The limit that decided it (`MemAvailable in /proc/meminfo`).
    pub source: String,
}

/// Where the memory check gets its budget.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum MemoryLimit {
    /// This host's limits, read when the check runs.
    #[default]
    Host,
    /// A fixed budget (tests, or a caller that knows better).
    Fixed(MemoryBudget),
    /// No check.
    Unlimited,
}

impl MemoryLimit {
    /// A fixed budget of `bytes`, named `source` in the error.
    pub fn fixed(bytes: u64, source: &str) -> MemoryLimit {
        MemoryLimit::Fixed(MemoryBudget {
            bytes,
            source: source.to_string(),
        })
    }

    /// The budget, or `None` when nothing limits.
    pub fn budget(&self) -> Option<MemoryBudget> {
        match self {
            MemoryLimit::Host => host_budget(),
            MemoryLimit::Fixed(b) => Some(b.clone()),
            MemoryLimit::Unlimited => None,
        }
    }
}

/// A buffer of the plan, for the error: its label, the scope of the kernel that first
/// touches it, and its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BigBuffer {
    pub label: String,
    pub scope: String,
    pub bytes: u64,
}

/// A step that needs more memory than its budget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutOfMemory {
    /// Bytes the step needs: the arena, plus the parameters read back to the host.
    pub needed: u64,
    pub budget: MemoryBudget,
    /// The largest buffers of the arena, largest first (at most three).
    pub largest: Vec<BigBuffer>,
}

impl fmt::Display for OutOfMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "this step needs {}, {} are available ({}); the largest buffers are ",
            human(self.needed),
            human(self.budget.bytes),
            self.budget.source
        )?;
        for (i, b) in self.largest.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{}", b.label)?;
            if !b.scope.is_empty() {
                write!(f, " in {}", b.scope)?;
            }
            write!(f, " ({})", human(b.bytes))?;
        }
        write!(
            f,
            "; reduce the model with --set (batch, length, d, layers)"
        )
    }
}

impl std::error::Error for OutOfMemory {}

/// Bytes in words (`110.3 GiB`).
fn human(bytes: u64) -> String {
    crate::tensor::human_bytes(bytes as u128)
}

/// Bytes the program needs once planned: its arena, plus the host's f64 copy of the
/// parameters (what `CompiledGraph::params` reads back for outputs and checkpoints).
pub fn needed_bytes(program: &Program, plan: &Plan) -> u64 {
    let params: u64 = program
        .buffers
        .iter()
        .filter(|b| matches!(b.kind, BufKind::Param(_)))
        .map(|b| b.len as u64)
        .sum();
    plan.peak_bytes() as u64 + 8 * params
}

/// Refuse a planned program that needs more than `limit` allows.
pub fn check(program: &Program, plan: &Plan, limit: &MemoryLimit) -> Result<(), OutOfMemory> {
    let needed = needed_bytes(program, plan);
    let Some(budget) = limit.budget() else {
        return Ok(());
    };
    if needed <= budget.bytes {
        return Ok(());
    }
    Err(OutOfMemory {
        needed,
        budget,
        largest: largest_buffers(program, plan, 3),
    })
}

/// The `n` largest buffers of a program, largest first (the first one on ties).
fn largest_buffers(program: &Program, plan: &Plan, n: usize) -> Vec<BigBuffer> {
    let mut order: Vec<usize> = (0..program.buffers.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(program.buffers[i].len), i));
    order
        .into_iter()
        .take(n)
        .map(|i| {
            let b = &program.buffers[i];
            let scope = plan.live[i]
                .and_then(|(first, _)| program.kernels.get(first))
                .map(|k| k.scope.clone())
                .unwrap_or_default();
            BigBuffer {
                label: b.label.clone(),
                scope,
                bytes: 4 * b.len as u64,
            }
        })
        .collect()
}

/// The least of this host's limits (see the module documentation), if any can be read.
pub fn host_budget() -> Option<MemoryBudget> {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let mut best: Option<MemoryBudget> = None;
    let mut offer = |bytes: Option<u64>, source: &str| {
        if let Some(bytes) = bytes {
            if best.as_ref().is_none_or(|b| bytes < b.bytes) {
                best = Some(MemoryBudget {
                    bytes,
                    source: source.to_string(),
                });
            }
        }
    };
    offer(
        read("/sys/fs/cgroup/memory.max").and_then(|s| parse_cgroup_limit(&s)),
        "the cgroup limit /sys/fs/cgroup/memory.max",
    );
    offer(
        read("/sys/fs/cgroup/memory/memory.limit_in_bytes").and_then(|s| parse_cgroup_limit(&s)),
        "the cgroup limit memory.limit_in_bytes",
    );
    offer(
        read("/proc/meminfo").and_then(|s| parse_meminfo_available(&s)),
        "MemAvailable in /proc/meminfo",
    );
    let address_space = read("/proc/self/limits")
        .and_then(|s| parse_address_space_limit(&s))
        .map(|limit| {
            let used = read("/proc/self/status")
                .and_then(|s| parse_vm_size(&s))
                .unwrap_or(0);
            limit.saturating_sub(used)
        });
    offer(
        address_space,
        "the address-space limit RLIMIT_AS, less the address space in use",
    );
    best
}

/// A cgroup memory limit file: bytes, or `None` for `max`.
fn parse_cgroup_limit(s: &str) -> Option<u64> {
    s.trim().parse().ok()
}

/// `MemAvailable` of `/proc/meminfo`, in bytes.
fn parse_meminfo_available(s: &str) -> Option<u64> {
    kib_field(s, "MemAvailable:")
}

/// `VmSize` of `/proc/self/status`, in bytes.
fn parse_vm_size(s: &str) -> Option<u64> {
    kib_field(s, "VmSize:")
}

/// A `Name:   123 kB` line, in bytes.
fn kib_field(s: &str, name: &str) -> Option<u64> {
    let line = s.lines().find(|l| l.starts_with(name))?;
    let mut words = line[name.len()..].split_whitespace();
    let n: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => n.checked_mul(1024),
        None => Some(n),
        Some(_) => None,
    }
}

/// The soft `Max address space` of `/proc/self/limits`, or `None` when unlimited.
fn parse_address_space_limit(s: &str) -> Option<u64> {
    let line = s.lines().find(|l| l.starts_with("Max address space"))?;
    line["Max address space".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_files_parse() {
        assert_eq!(parse_cgroup_limit("max\n"), None);
        assert_eq!(parse_cgroup_limit("1073741824\n"), Some(1 << 30));
        let meminfo = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   2048 kB\n";
        assert_eq!(parse_meminfo_available(meminfo), Some(2048 * 1024));
        assert_eq!(
            parse_vm_size("Name:\tx\nVmSize:\t    3892 kB\n"),
            Some(3892 * 1024)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max address space         unlimited            unlimited            bytes     \n";
        assert_eq!(parse_address_space_limit(limits), None);
        let limits =
            "Max address space         8589934592           unlimited            bytes     \n";
        assert_eq!(parse_address_space_limit(limits), Some(8 << 30));
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human(110 << 30), "110.0 GiB");
        assert_eq!(human(3 << 29), "1.5 GiB");
        assert_eq!(human(4096), "4.0 KiB");
        assert_eq!(human(100), "100 bytes");
    }
}
