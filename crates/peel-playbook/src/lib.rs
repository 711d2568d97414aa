//! peel-playbook: TOML incident playbooks that reproduce an outage, analyze every layer and verify a
//! fix with numbers.
//!
//! [`resolve`] turns a playbook file into a [`Plan`] (every error at once, each with file:line:column);
//! the runner executes a plan into a run folder with a journal, so cleanup (background steps,
//! `undo` commands, sysctls) always happens, even after a crash via [`recover`]. This crate never
//! prints: it returns plans, events and results, and the `peel` binary renders them.

pub mod compare;
mod diagnostic;
mod model;
mod node;
mod report;
mod report_html;
mod resolve;
pub mod run;
pub mod spec;
mod template;
pub mod threshold;

pub use diagnostic::{Diagnostic, Diagnostics, Location};
pub use model::*;
pub use resolve::{env_name, load, parse_override, resolve, LoadError, Overrides, BUILTINS};
