//! One module per `peel` subcommand: each owns its clap `Args` and a `run` that calls the library
//! crates and renders what they return. Adding a command is one module here plus one variant in
//! `main.rs`'s `Command`.

pub mod analyze;
pub mod archive;
pub mod capture;
pub mod compare;
pub mod completions;
pub mod findings;
pub mod lab;
pub mod load;
pub mod plan;
pub mod recover;
pub mod run;
pub mod snap;
pub mod sql;
pub mod sysctl;
pub mod validate;
