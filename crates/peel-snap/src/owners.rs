//! Which process owns a socket: every `<proc-root>/<pid>/fd/*` that links to `socket:[inode]`.
//!
//! This is the walk `ss -p` does. Processes we may not look into (another user's, without root)
//! are skipped: their sockets keep `pid: None`.

use std::collections::HashMap;

use crate::proc_root::ProcRoot;

/// Socket inode -> owning pid, and pid -> command name for those pids.
#[derive(Debug, Default)]
pub(crate) struct SocketOwners {
    by_inode: HashMap<u64, u32>,
    names: HashMap<u32, String>,
    sockets_by_pid: HashMap<u32, u32>,
}

impl SocketOwners {
    /// Walks every process's fd directory under `root`.
    pub(crate) fn scan(root: &ProcRoot) -> Self {
        let mut owners = SocketOwners::default();
        let Ok(entries) = std::fs::read_dir(root.dir()) else { return owners };
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else { continue };
            let mut sockets = 0u32;
            for fd in fds.flatten() {
                let Ok(target) = std::fs::read_link(fd.path()) else { continue };
                let Some(inode) = socket_inode(target.as_os_str().as_encoded_bytes()) else {
                    continue;
                };
                sockets += 1;
                // The lowest pid wins when a socket is shared (a pre-fork master and its workers).
                owners
                    .by_inode
                    .entry(inode)
                    .and_modify(|owner| *owner = (*owner).min(pid))
                    .or_insert(pid);
            }
            if sockets > 0 {
                owners.sockets_by_pid.insert(pid, sockets);
                let name = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
                owners.names.insert(pid, name.trim_end().to_owned());
            }
        }
        owners
    }

    /// Owner of socket `inode` (0 means no owner: TIME_WAIT, request sockets).
    pub(crate) fn owner(&self, inode: u64) -> Option<(u32, &str)> {
        if inode == 0 {
            return None;
        }
        let pid = *self.by_inode.get(&inode)?;
        Some((pid, self.names.get(&pid).map_or("", String::as_str)))
    }

    /// How many socket descriptors `pid` has open.
    pub(crate) fn socket_count(&self, pid: u32) -> Option<u32> {
        self.sockets_by_pid.get(&pid).copied()
    }
}

/// `socket:[12345]` -> 12345.
fn socket_inode(link: &[u8]) -> Option<u64> {
    let inner = link.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(inner).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_links() {
        assert_eq!(socket_inode(b"socket:[4242]"), Some(4242));
        assert_eq!(socket_inode(b"pipe:[4242]"), None);
        assert_eq!(socket_inode(b"socket:[x]"), None);
        assert_eq!(socket_inode(b"/dev/null"), None);
    }
}
