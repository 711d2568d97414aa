//! peel-snap: snapshots of what dashboards do not show during an incident: sysctls, the TCP socket
//! table (with tcp_info and accept queues), kernel TCP counters as rates, and the processes behind
//! the ports. It reads (and, for `sysctl set`, writes under a journal) and returns records; it never
//! prints and never touches the database (peel-store ingests [`records`]).
//!
//! Entry points: [`take`] for one snapshot, [`Sampler`] for a series, [`aggregate::summarize`] for
//! the first answers, [`sysctl`] for reading, diffing and journaled changes of kernel parameters.

pub mod aggregate;
mod counters;
pub mod error;
mod netlink_sys;
mod owners;
mod proc_net;
pub mod proc_root;
pub mod records;
pub mod sampler;
mod sock_diag;
pub mod sysctl;
mod system;

pub use counters::is_gauge;
pub use error::{Result, SnapError};
pub use proc_root::ProcRoot;
pub use sampler::{take, Sampler, SamplerHandle, SnapOptions, SocketSource};
pub use system::ProcessMatch;
