//! peel-snap: snapshots of what dashboards do not show during an incident: sysctls, the TCP socket
//! table (with tcp_info and accept queues), kernel TCP counters as rates, and the processes behind
//! the ports. It reads and returns records; it never prints and never touches the database.

pub mod records;
