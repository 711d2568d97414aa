//! Prints every connection of the given captures as one JSON line, then the warnings:
//! `cargo run -p peel-wire --example dump -- FILE...` (a debugging aid; `peel analyze` is the tool).

#![allow(clippy::print_stdout)]

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let paths: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let mut sink = |conn: peel_wire::records::FinishedConnection| {
        println!("{}", serde_json::to_string(&conn).unwrap_or_default());
    };
    let end = peel_wire::analyze_paths(&paths, peel_wire::Config::default(), &mut sink)?;
    println!("{}", serde_json::to_string(&end)?);
    Ok(())
}
