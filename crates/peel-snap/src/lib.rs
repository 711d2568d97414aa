//! peel-snap: snapshots of what dashboards do not show during an incident: sysctls, the TCP socket
//! table (with tcp_info and accept queues), kernel TCP counters as rates, and the processes behind
//! the ports. It reads (and, for `sysctl set`, writes under a journal) and returns records; it never
//! prints and never touches the database (peel-store ingests [`records`]).
//!
//! Entry points: [`take`] for one snapshot, [`Sampler`] for a series, [`aggregate::summarize`] for
//! the first answers, [`sysctl`] for reading, diffing and journaled changes of kernel parameters.
//!
//! Agreement with `ss`: both read the same netlink dump, so counts by state agree whenever the
//! socket table does not change between the two reads. On a busy host it always changes, so the
//! check (tests/live.rs, `close_wait_pile_up_matches_ss`) compares a population that only the test
//! changes: its own loopback address and port, with `ss -Htan 'src 127.0.0.1 and ( sport = :P or
//! dport = :P )'` counted by the first column, after the states have settled. To compare a whole
//! host by hand, take `ss -Htan | awk '{print $1}' | sort | uniq -c` immediately before and after
//! `peel snap --format json`: when the two `ss` runs agree, peel's counts equal them.
//! State names differ only in spelling (`ESTAB` = `ESTABLISHED`, `TIME-WAIT` = `TIME_WAIT`).

pub mod aggregate;
mod counters;
pub mod error;
mod netlink_sys;
mod owners;
mod proc_dir_sys;
mod proc_net;
pub mod proc_root;
mod proc_system;
pub mod records;
pub mod sampler;
mod sock_diag;
pub mod sysctl;
mod system;

pub use counters::{is_gauge, read_one as read_counter};
pub use error::{Result, SnapError};
pub use proc_root::ProcRoot;
pub use sampler::{take, Sampler, SamplerHandle, SnapOptions, SocketSource};
pub use system::ProcessMatch;
