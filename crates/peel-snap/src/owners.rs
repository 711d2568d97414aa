//! Which process owns a socket: every `<proc-root>/<pid>/fd/*` that links to `socket:[inode]`.
//!
//! This is the walk `ss -p` does. Processes we may not look into (another user's, without root)
//! are skipped: their sockets keep `pid: None`.
//!
//! A series keeps what it learned in an [`OwnerCache`], so that a sample costs one directory
//! listing per process instead of one `readlink` per descriptor (108,000 of them with 54,000
//! loopback connections). A descriptor is read again only when what the cache knows about it could
//! be stale, which keeps the mapping exact:
//! - its number is new since the last listing (opened, accepted, received), or its process is new
//!   or was replaced (another start time under the same pid);
//! - its cached target is not a TCP socket of the current dump (a file, a pipe, a Unix or UDP
//!   socket, or a TCP socket that has closed since: the number may have been reused);
//! - its socket was shared by several descriptors at the last sample (a pre-fork listener), or
//!   another descriptor took that socket during this sample (fork, dup, SCM_RIGHTS), since the old
//!   holder may have let go of it;
//! - a socket of the dump has no known holder and was not already unowned at the last full walk:
//!   then every descriptor is read again (a full walk), as on the first sample.
//!
//! What this cannot see between two samples is two processes swapping live sockets under reused
//! descriptor numbers through SCM_RIGHTS without any other change; a plain `take` (one full walk)
//! is exact at its instant in every case.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::proc_dir_sys::{fd_name, Dir};
use crate::proc_root::ProcRoot;
use crate::records::SocketRecord;

/// A multiplicative hash for inode and pid keys and short names (SipHash costs more than the walk
/// and the tallies it serves; none of these keys come from an adversary who could pick collisions).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IntHasher(u64);

impl Hasher for IntHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
        let mut last = [0u8; 8];
        last[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        self.write_u64(u64::from_le_bytes(last));
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u128(&mut self, n: u128) {
        self.write_u64(n as u64);
        self.write_u64((n >> 64) as u64);
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn finish(&self) -> u64 {
        // The low bits of a product depend only on the low bits of the key, and hash tables index
        // by the low bits: rotate the well-mixed high bits down (as rustc's FxHasher does).
        self.0.rotate_left(26)
    }
}

pub(crate) type IntMap<K, V> = HashMap<K, V, BuildHasherDefault<IntHasher>>;
pub(crate) type IntSet<K> = HashSet<K, BuildHasherDefault<IntHasher>>;

/// How many socket descriptors each process has open (any socket: TCP, UDP, Unix).
#[derive(Debug, Default)]
pub(crate) struct SocketOwners {
    sockets_by_pid: IntMap<u32, u32>,
}

impl SocketOwners {
    /// How many socket descriptors `pid` has open.
    pub(crate) fn socket_count(&self, pid: u32) -> Option<u32> {
        self.sockets_by_pid.get(&pid).copied()
    }
}

/// One descriptor: its number, the socket inode it links to (0: not a socket), the refresh that
/// last read its link, and where its socket is in the current dump ([`NOT_IN_DUMP`] if nowhere).
#[derive(Debug, Clone, Copy)]
struct Fd {
    number: u32,
    inode: u64,
    read_in: u64,
    dump_index: u32,
}

const NOT_IN_DUMP: u32 = u32::MAX;

#[derive(Debug, Default)]
struct ProcessFds {
    /// Field 22 of `<pid>/stat`: tells a new process under a reused pid from the old one.
    start_time: Option<u64>,
    comm: String,
    /// Sorted by number.
    fds: Vec<Fd>,
}

/// Buffers reused by every refresh.
#[derive(Debug, Default)]
struct Scratch {
    dirents: Vec<u8>,
    numbers: Vec<u32>,
    merged: Vec<Fd>,
    link: Vec<u8>,
}

/// What the descriptor walk learned, kept between the snapshots of a series.
#[derive(Debug, Default)]
pub(crate) struct OwnerCache {
    processes: IntMap<u32, ProcessFds>,
    /// TCP inodes of the last dump held by two or more descriptors.
    shared: IntSet<u64>,
    /// TCP inodes of the last dump that no readable descriptor held.
    unowned: IntSet<u64>,
    refreshes: u64,
    scratch: Scratch,
    /// Inode -> index in the dump; kept only to reuse its allocation.
    live: IntMap<u64, u32>,
}

/// Which descriptors of a process to read again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Walk {
    /// Only those the cache may be wrong about.
    Changed,
    /// Every one.
    Full,
}

impl OwnerCache {
    /// Fills in `pid` and `process` of `sockets` (one dump), reading as little as the cache allows
    /// (the first refresh is a full walk). The lowest pid wins when several processes hold a socket
    /// (a pre-fork master and its workers).
    pub(crate) fn refresh(
        &mut self,
        root: &ProcRoot,
        sockets: &mut [SocketRecord],
    ) -> SocketOwners {
        let first = self.refreshes == 0;
        self.refreshes += 1;
        let mut live = std::mem::take(&mut self.live);
        live.clear();
        live.reserve(sockets.len());
        for (index, socket) in sockets.iter().enumerate() {
            if socket.inode != 0 {
                live.insert(socket.inode, u32::try_from(index).unwrap_or(u32::MAX));
            }
        }
        let pids = list_pids(root, &mut self.scratch.dirents);
        self.processes.retain(|pid, _| pids.binary_search(pid).is_ok());
        let walk = if first { Walk::Full } else { Walk::Changed };
        let mut gained = IntSet::default();
        for &pid in &pids {
            self.refresh_process(root, pid, walk, &live, &mut gained);
        }
        if walk == Walk::Changed && !gained.is_empty() {
            self.reread_holders_of(root, &live, &gained);
        }
        let mut holders = self.holders(sockets.len());
        if walk == Walk::Changed && self.has_unknown(sockets, &holders) {
            for &pid in &pids {
                self.refresh_process(root, pid, Walk::Full, &live, &mut gained);
            }
            holders = self.holders(sockets.len());
        }
        self.unowned.clear();
        self.shared.clear();
        for (socket, &(pid, count)) in sockets.iter_mut().zip(&holders.by_socket) {
            match count {
                0 if socket.inode != 0 => {
                    self.unowned.insert(socket.inode);
                }
                0 => {}
                _ => {
                    if count > 1 {
                        self.shared.insert(socket.inode);
                    }
                    socket.pid = Some(pid);
                    socket.process =
                        Some(self.processes.get(&pid).map_or_else(String::new, |p| p.comm.clone()));
                }
            }
        }
        self.live = live;
        SocketOwners { sockets_by_pid: holders.sockets_by_pid }
    }

    fn refresh_process(
        &mut self,
        root: &ProcRoot,
        pid: u32,
        walk: Walk,
        live: &IntMap<u64, u32>,
        gained: &mut IntSet<u64>,
    ) {
        let refresh = self.refreshes;
        let dir = root.dir().join(pid.to_string());
        let start_time = read_start_time(&dir);
        let Ok(fd_dir) = Dir::open(&dir.join("fd")) else {
            self.processes.remove(&pid);
            return;
        };
        let scratch = &mut self.scratch;
        scratch.numbers.clear();
        let listed = fd_dir.for_each_name(&mut scratch.dirents, |name| {
            if let Some(number) = std::str::from_utf8(name).ok().and_then(|n| n.parse().ok()) {
                scratch.numbers.push(number);
            }
        });
        if listed.is_err() {
            self.processes.remove(&pid);
            return;
        }
        scratch.numbers.sort_unstable();
        let process = self.processes.entry(pid).or_default();
        if process.start_time != start_time {
            *process = ProcessFds { start_time, ..ProcessFds::default() };
        }
        if scratch.link.len() < 256 {
            scratch.link.resize(256, 0);
        }
        scratch.merged.clear();
        let mut old = process.fds.iter().peekable();
        for &number in &scratch.numbers {
            while old.next_if(|fd| fd.number < number).is_some() {}
            let cached = old.next_if(|fd| fd.number == number).copied();
            if let Some(fd) = cached {
                let dump_index = live.get(&fd.inode).copied();
                if let Some(dump_index) = dump_index {
                    if walk == Walk::Changed && !self.shared.contains(&fd.inode) {
                        scratch.merged.push(Fd { dump_index, ..fd });
                        continue;
                    }
                }
            }
            let mut name = [0u8; 12];
            let Ok(target) = fd_dir.read_link(fd_name(number, &mut name), &mut scratch.link) else {
                continue; // closed since the listing
            };
            let inode = socket_inode(target).unwrap_or(0);
            if inode != 0 && cached.is_none_or(|fd| fd.inode != inode) {
                gained.insert(inode);
            }
            let dump_index = live.get(&inode).copied().unwrap_or(NOT_IN_DUMP);
            scratch.merged.push(Fd { number, inode, read_in: refresh, dump_index });
        }
        std::mem::swap(&mut process.fds, &mut scratch.merged);
        if process.fds.iter().any(|fd| fd.inode != 0) {
            // Read every time: exec and prctl(PR_SET_NAME) change it.
            process.comm = std::fs::read_to_string(dir.join("comm"))
                .map(|comm| comm.trim_end().to_owned())
                .unwrap_or_default();
        }
    }

    /// Reads again every descriptor not read in this refresh that the cache says holds one of
    /// `gained`: a socket that got a new holder may have lost an old one.
    fn reread_holders_of(
        &mut self,
        root: &ProcRoot,
        live: &IntMap<u64, u32>,
        gained: &IntSet<u64>,
    ) {
        let refresh = self.refreshes;
        let scratch = &mut self.scratch;
        for (pid, process) in &mut self.processes {
            let stale = |fd: &Fd| fd.read_in != refresh && gained.contains(&fd.inode);
            if !process.fds.iter().any(stale) {
                continue;
            }
            let Ok(fd_dir) = Dir::open(&root.dir().join(pid.to_string()).join("fd")) else {
                process.fds.clear();
                continue;
            };
            process.fds.retain_mut(|fd| {
                if !stale(&*fd) {
                    return true;
                }
                let mut name = [0u8; 12];
                match fd_dir.read_link(fd_name(fd.number, &mut name), &mut scratch.link) {
                    Ok(target) => {
                        fd.inode = socket_inode(target).unwrap_or(0);
                        fd.read_in = refresh;
                        fd.dump_index = live.get(&fd.inode).copied().unwrap_or(NOT_IN_DUMP);
                        true
                    }
                    Err(_) => false,
                }
            });
        }
    }

    /// Who holds each socket of the dump, and how many socket descriptors each process has. Every
    /// cached descriptor was placed in the current dump by this refresh.
    fn holders(&self, socket_count: usize) -> Holders {
        let mut holders =
            Holders { by_socket: vec![(0, 0); socket_count], sockets_by_pid: IntMap::default() };
        for (&pid, process) in &self.processes {
            let mut sockets = 0u32;
            for fd in process.fds.iter().filter(|fd| fd.inode != 0) {
                sockets += 1;
                let Some((owner, count)) = holders.by_socket.get_mut(fd.dump_index as usize) else {
                    continue;
                };
                *owner = if *count == 0 { pid } else { (*owner).min(pid) };
                *count += 1;
            }
            if sockets > 0 {
                holders.sockets_by_pid.insert(pid, sockets);
            }
        }
        holders
    }

    /// True if a socket of the dump has no known holder although one of our processes could hold
    /// it (root sees every process; others only their own uid's) and it was not unowned before.
    fn has_unknown(&self, sockets: &[SocketRecord], holders: &Holders) -> bool {
        let euid = std::fs::metadata("/proc/self").map_or(0, |meta| meta.uid());
        sockets.iter().zip(&holders.by_socket).any(|(s, &(_, count))| {
            count == 0
                && s.inode != 0
                && (euid == 0 || s.uid == euid)
                && !self.unowned.contains(&s.inode)
        })
    }
}

/// Holders of the sockets of one dump.
#[derive(Debug)]
struct Holders {
    /// Per socket of the dump (same index): lowest pid holding it, and how many descriptors do.
    by_socket: Vec<(u32, u32)>,
    sockets_by_pid: IntMap<u32, u32>,
}

/// Process ids under `root`, sorted.
fn list_pids(root: &ProcRoot, dirents: &mut Vec<u8>) -> Vec<u32> {
    let mut pids = Vec::new();
    if let Ok(dir) = Dir::open(root.dir()) {
        let _ = dir.for_each_name(dirents, |name| {
            if let Some(pid) = std::str::from_utf8(name).ok().and_then(|n| n.parse().ok()) {
                pids.push(pid);
            }
        });
    }
    pids.sort_unstable();
    pids
}

/// Field 22 (starttime) of `<dir>/stat`; `None` when absent (copied trees may not have it).
fn read_start_time(dir: &Path) -> Option<u64> {
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: count from the last ')'.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(19)?.parse().ok()
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

    #[test]
    fn start_time_counts_fields_after_the_command() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let stat = "42 (a) b (c) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 98765 1000 50";
        std::fs::write(dir.path().join("stat"), stat).expect("write");
        assert_eq!(read_start_time(dir.path()), Some(98765));
    }
}
