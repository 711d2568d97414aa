//! peel-playbook-spec: what a peel playbook means, without running it.
//!
//! [`resolve`] turns playbook text into a [`Plan`] (every error at once, each with
//! file:line:column): the TOML walk, variable substitution, durations and thresholds, matrix
//! expansion, and the key tables that also generate the JSON Schema ([`spec`]). It reads at most
//! the playbook file ([`load`]); it never starts a process, touches the system or opens a database,
//! so `peel validate`, `peel plan` and the fuzzer use it without the runner (peel-playbook) and
//! without DuckDB.

mod diagnostic;
pub mod model;
mod node;
mod resolve;
pub mod spec;
mod template;
pub mod threshold;

pub use diagnostic::{Diagnostic, Diagnostics, Location};
pub use model::*;
pub use resolve::{env_name, load, parse_override, resolve, LoadError, Overrides, BUILTINS};
