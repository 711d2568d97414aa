//! peel-playbook: TOML incident playbooks that reproduce an outage, analyze every layer and verify a
//! fix with numbers.
//!
//! [`resolve`] (from peel-playbook-spec, re-exported here) turns a playbook file into a [`Plan`]
//! (every error at once, each with file:line:column); the runner executes a plan into a run folder
//! with a journal, so cleanup (background steps, `undo` commands, sysctls) always happens, even
//! after a crash via [`run::recover`]. This crate never prints: it returns plans, events and
//! results, and the `peel` binary renders them.

pub mod compare;
mod report;
mod report_html;
pub mod run;

// What a playbook means lives in peel-playbook-spec (no runner, no database, fuzzable); its API is
// also this crate's, at the same paths.
use peel_playbook_spec::model;
pub use peel_playbook_spec::model::*;
pub use peel_playbook_spec::{
    env_name, load, parse_override, resolve, spec, threshold, Diagnostic, Diagnostics, LoadError,
    Location, Overrides, BUILTINS,
};
