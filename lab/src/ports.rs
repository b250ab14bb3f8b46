//! When a fixed port of the local cluster is taken, which process holds it,
//! so `lab up` can say what to stop.

use std::collections::BTreeSet;

/// A process listening on a TCP port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Process id.
    pub pid: u32,
    /// Command name from `/proc/PID/comm`.
    pub name: String,
}

/// Which process listens on TCP `port` (Linux `/proc`; `None` when it cannot
/// be told, e.g. another user's process).
pub fn holder(port: u16) -> Option<Holder> {
    let inodes: BTreeSet<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .flat_map(|table| listening_inodes(&table, port))
        .collect();
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let target = target.to_string_lossy();
            let inode = target.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']'));
            if inode.is_some_and(|i| inodes.contains(i)) {
                let name = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
                return Some(Holder {
                    pid,
                    name: name.trim().to_string(),
                });
            }
        }
    }
    None
}

/// Socket inodes in a `/proc/net/tcp*` table that listen on `port`.
fn listening_inodes(table: &str, port: u16) -> Vec<String> {
    const LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let local_port = cols.get(1)?.rsplit(':').next()?;
            let matches = u16::from_str_radix(local_port, 16).ok()? == port && *cols.get(3)? == LISTEN;
            matches.then(|| cols.get(9).map(|s| s.to_string()))?
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bound_port_is_not_free_and_its_holder_is_this_process() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(!wsmesh_testkit::ports::is_free(addr));
        let holder = holder(addr.port()).expect("own listener found in /proc");
        assert_eq!(holder.pid, std::process::id());
    }

    #[test]
    fn listening_inodes_reads_the_proc_table() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:2329 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1\n   1: 0100007F:2329 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 4343 1\n";
        assert_eq!(listening_inodes(table, 9001), vec!["4242".to_string()]);
        assert!(listening_inodes(table, 9002).is_empty());
    }
}
