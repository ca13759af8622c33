//! How much memory this process's container uses, against its limit.
//!
//! The working set is what the kernel cannot reclaim without swapping, the figure the kubelet
//! and `docker stats` use to decide on OOM kills: under cgroup v2 `memory.current` minus
//! `inactive_file` from `memory.stat`, over `memory.max`; under cgroup v1
//! `memory.usage_in_bytes` minus `total_inactive_file`, over `memory.limit_in_bytes`. Without
//! a limit the host's memory is the limit. Written by hand because the crates that read cgroups
//! either report `memory.current` (which counts reclaimable page cache) or pull in a full
//! system inventory for three small files.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Where the limit came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitSource {
    /// A cgroup v2 `memory.max`.
    CgroupV2,
    /// A cgroup v1 `memory.limit_in_bytes`.
    CgroupV1,
    /// The host's total memory: no container limit is set.
    Host,
}

impl LimitSource {
    /// Name for logs and `/health`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CgroupV2 => "cgroup v2",
            Self::CgroupV1 => "cgroup v1",
            Self::Host => "host",
        }
    }
}

/// One reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryReading {
    /// Working set in bytes.
    pub used_bytes: u64,
    /// Limit in bytes.
    pub limit_bytes: u64,
    /// Where the limit came from.
    pub source: LimitSource,
}

impl MemoryReading {
    /// Use in percent of the limit.
    pub fn percent(&self) -> f64 {
        if self.limit_bytes == 0 {
            return 0.0;
        }
        self.used_bytes as f64 * 100.0 / self.limit_bytes as f64
    }
}

/// Reads memory use for this process, with `/proc` and `/sys` under `root` (`/` in
/// production; a prepared directory in tests).
pub fn read(root: &Path) -> io::Result<MemoryReading> {
    let host = host_memory(root)?;
    let cgroups = fs::read_to_string(root.join("proc/self/cgroup")).unwrap_or_default();
    if let Some(reading) = cgroup_v2(root, &cgroups, host.total)? {
        return Ok(reading);
    }
    if let Some(reading) = cgroup_v1(root, &cgroups, host.total)? {
        return Ok(reading);
    }
    Ok(MemoryReading {
        used_bytes: host.total.saturating_sub(host.available),
        limit_bytes: host.total,
        source: LimitSource::Host,
    })
}

struct HostMemory {
    total: u64,
    available: u64,
}

fn host_memory(root: &Path) -> io::Result<HostMemory> {
    let meminfo = fs::read_to_string(root.join("proc/meminfo"))?;
    let field = |name: &str| {
        meminfo
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kib| kib * 1024)
    };
    let total =
        field("MemTotal").ok_or_else(|| io::Error::other("no MemTotal in /proc/meminfo"))?;
    let available = field("MemAvailable")
        .or_else(|| field("MemFree"))
        .unwrap_or(0);
    Ok(HostMemory { total, available })
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn stat_field(dir: &Path, name: &str) -> u64 {
    fs::read_to_string(dir.join("memory.stat"))
        .ok()
        .and_then(|stat| {
            stat.lines().find_map(|line| {
                line.strip_prefix(name)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0)
}

/// The cgroup directory of this process: the path from `/proc/self/cgroup` when it exists
/// under the mount, else the mount itself (as seen inside a container's cgroup namespace).
fn cgroup_dir(mount: PathBuf, relative: Option<&str>) -> PathBuf {
    if let Some(rel) = relative
        .map(|r| r.trim_start_matches('/'))
        .filter(|r| !r.is_empty())
    {
        let dir = mount.join(rel);
        if dir.is_dir() {
            return dir;
        }
    }
    mount
}

fn cgroup_v2(root: &Path, cgroups: &str, host_total: u64) -> io::Result<Option<MemoryReading>> {
    let relative = cgroups.lines().find_map(|line| line.strip_prefix("0::"));
    let mount = root.join("sys/fs/cgroup");
    if !mount.join("cgroup.controllers").exists() {
        return Ok(None);
    }
    let leaf = cgroup_dir(mount.clone(), relative);
    let Some(current) = read_u64(&leaf.join("memory.current")) else {
        return Ok(None);
    };
    let used = current.saturating_sub(stat_field(&leaf, "inactive_file"));
    // A limit may be set on any ancestor; the tightest one applies.
    let mut limit = None::<u64>;
    let mut dir = leaf.as_path();
    loop {
        if let Some(max) = read_u64(&dir.join("memory.max")) {
            limit = Some(limit.map_or(max, |l| l.min(max)));
        }
        if dir == mount {
            break;
        }
        match dir.parent() {
            Some(parent) if parent.starts_with(&mount) => dir = parent,
            _ => break,
        }
    }
    Ok(Some(match limit.filter(|l| *l < host_total) {
        Some(limit) => MemoryReading {
            used_bytes: used,
            limit_bytes: limit,
            source: LimitSource::CgroupV2,
        },
        None => MemoryReading {
            used_bytes: used,
            limit_bytes: host_total,
            source: LimitSource::Host,
        },
    }))
}

fn cgroup_v1(root: &Path, cgroups: &str, host_total: u64) -> io::Result<Option<MemoryReading>> {
    let relative = cgroups.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then_some(path)
    });
    let mount = root.join("sys/fs/cgroup/memory");
    if !mount.is_dir() {
        return Ok(None);
    }
    let dir = cgroup_dir(mount, relative);
    let Some(usage) = read_u64(&dir.join("memory.usage_in_bytes")) else {
        return Ok(None);
    };
    let used = usage.saturating_sub(stat_field(&dir, "total_inactive_file"));
    // "No limit" reads as a huge page-aligned number; anything above the host's memory is none.
    Ok(Some(
        match read_u64(&dir.join("memory.limit_in_bytes")).filter(|l| *l < host_total) {
            Some(limit) => MemoryReading {
                used_bytes: used,
                limit_bytes: limit,
                source: LimitSource::CgroupV1,
            },
            None => MemoryReading {
                used_bytes: used,
                limit_bytes: host_total,
                source: LimitSource::Host,
            },
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn write(root: &Path, path: &str, text: &str) {
        let full = root.join(path);
        fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
        fs::write(full, text).expect("write");
    }

    fn host(root: &Path) {
        write(
            root,
            "proc/meminfo",
            "MemTotal:       16777216 kB\nMemFree:  1000 kB\nMemAvailable:    8388608 kB\n",
        );
    }

    #[test]
    fn cgroup_v2_working_set_over_memory_max() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        host(root);
        write(root, "proc/self/cgroup", "0::/\n");
        write(root, "sys/fs/cgroup/cgroup.controllers", "cpu memory\n");
        write(root, "sys/fs/cgroup/memory.max", &format!("{}\n", GIB));
        write(
            root,
            "sys/fs/cgroup/memory.current",
            &format!("{}\n", 900 * 1024 * 1024),
        );
        write(
            root,
            "sys/fs/cgroup/memory.stat",
            &format!(
                "anon 1\nfile 2\ninactive_file {}\nactive_file 3\n",
                100 * 1024 * 1024
            ),
        );
        let reading = read(root).expect("reads");
        assert_eq!(reading.source, LimitSource::CgroupV2);
        assert_eq!(reading.used_bytes, 800 * 1024 * 1024);
        assert_eq!(reading.limit_bytes, GIB);
        assert!((reading.percent() - 78.125).abs() < 1e-9);
    }

    #[test]
    fn cgroup_v2_nested_limit_on_an_ancestor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        host(root);
        write(root, "proc/self/cgroup", "0::/kubepods/pod1/app\n");
        write(root, "sys/fs/cgroup/cgroup.controllers", "memory\n");
        write(
            root,
            "sys/fs/cgroup/kubepods/pod1/memory.max",
            &format!("{}\n", 2 * GIB),
        );
        write(root, "sys/fs/cgroup/kubepods/pod1/app/memory.max", "max\n");
        write(
            root,
            "sys/fs/cgroup/kubepods/pod1/app/memory.current",
            &format!("{}\n", GIB),
        );
        let reading = read(root).expect("reads");
        assert_eq!(reading.source, LimitSource::CgroupV2);
        assert_eq!(reading.limit_bytes, 2 * GIB);
        assert_eq!(reading.used_bytes, GIB);
    }

    #[test]
    fn cgroup_v2_without_limit_uses_host_memory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        host(root);
        write(root, "proc/self/cgroup", "0::/\n");
        write(root, "sys/fs/cgroup/cgroup.controllers", "memory\n");
        write(root, "sys/fs/cgroup/memory.max", "max\n");
        write(root, "sys/fs/cgroup/memory.current", &format!("{}\n", GIB));
        let reading = read(root).expect("reads");
        assert_eq!(reading.source, LimitSource::Host);
        assert_eq!(reading.limit_bytes, 16 * GIB);
        assert_eq!(reading.used_bytes, GIB);
    }

    #[test]
    fn cgroup_v1_usage_minus_inactive_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        host(root);
        write(
            root,
            "proc/self/cgroup",
            "12:cpu,cpuacct:/docker/abc\n11:memory:/docker/abc\n",
        );
        write(
            root,
            "sys/fs/cgroup/memory/memory.limit_in_bytes",
            &format!("{}\n", 512 * 1024 * 1024),
        );
        write(
            root,
            "sys/fs/cgroup/memory/memory.usage_in_bytes",
            &format!("{}\n", 500 * 1024 * 1024),
        );
        write(
            root,
            "sys/fs/cgroup/memory/memory.stat",
            &format!("cache 5\ntotal_inactive_file {}\n", 40 * 1024 * 1024),
        );
        let reading = read(root).expect("reads");
        assert_eq!(reading.source, LimitSource::CgroupV1);
        assert_eq!(reading.used_bytes, 460 * 1024 * 1024);
        assert_eq!(reading.limit_bytes, 512 * 1024 * 1024);
    }

    #[test]
    fn cgroup_v1_unlimited_reads_as_host() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        host(root);
        write(root, "proc/self/cgroup", "4:memory:/\n");
        write(
            root,
            "sys/fs/cgroup/memory/memory.limit_in_bytes",
            "9223372036854771712\n",
        );
        write(
            root,
            "sys/fs/cgroup/memory/memory.usage_in_bytes",
            &format!("{}\n", GIB),
        );
        let reading = read(root).expect("reads");
        assert_eq!(reading.source, LimitSource::Host);
        assert_eq!(reading.limit_bytes, 16 * GIB);
    }

    #[test]
    fn no_cgroup_uses_the_host() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        host(root);
        let reading = read(root).expect("reads");
        assert_eq!(reading.source, LimitSource::Host);
        assert_eq!(reading.used_bytes, 8 * GIB);
    }

    #[test]
    fn reads_this_machine() {
        let reading = read(Path::new("/")).expect("reads /proc");
        assert!(reading.limit_bytes > 0);
        assert!(reading.used_bytes <= reading.limit_bytes);
    }
}
