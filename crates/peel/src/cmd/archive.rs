//! `peel archive`: seal a run's evidence for the postmortem (`create`), prove it was not changed
//! (`verify`), and merge archives from several hosts into one database (`import`).

use std::io::{self, Write};
use std::path::PathBuf;

use peel_store::archive::{Created, Imported};
use peel_store::{CreateOptions, StoreError, Verification};

use crate::exit::{Fail, Outcome};

/// Create, verify and import evidence archives (FILE.tar.zst with manifest.json).
///
/// Examples:
///   peel archive create runs/2026-11-25T0300-lab-db-churn --out evidence.tar.zst
///   peel archive create runs/... --out shareable.tar.zst --parquet --redact --pseudonymize-ips
///   peel archive verify evidence.tar.zst
///   peel archive import host-a.tar.zst host-b.tar.zst --db merged.duckdb
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    #[command(subcommand)]
    command: ArchiveCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ArchiveCommand {
    Create(CreateArgs),
    Verify(VerifyArgs),
    Import(ImportArgs),
}

/// Bundle a run folder (or one database) into FILE.tar.zst with a manifest of SHA-256 sums.
///
/// The archive holds every file of the run folder (database, captures, playbook as run, step logs,
/// report) and manifest.json: tool version, host, kernel, time range, runs, every command the run
/// executed with its exit code and duration, and every member with size and SHA-256. It is written
/// under a temporary name, renamed when complete, mode 0600; its SHA-256 is printed.
///
/// Example: peel archive create runs/2026-11-25T0300-lab-db-churn --out evidence.tar.zst --redact
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
struct CreateArgs {
    /// A run folder or a peel DuckDB file.
    input: PathBuf,
    /// The archive to write (FILE.tar.zst).
    #[arg(long)]
    out: PathBuf,
    /// Store databases as Parquet, hive-partitioned run_id=/host=/table= (docs/scaling.md).
    #[arg(long)]
    parquet: bool,
    /// Cut captures to protocol headers; mask Authorization, Proxy-Authorization, Cookie and
    /// Set-Cookie values in captures and step logs; replace URL paths in the database (exchanges,
    /// load requests, steps, commands, findings) and in step logs by consistent pseudonyms, query
    /// strings dropped; the path map is saved as OUT.pathmap.json, outside the archive.
    #[arg(long)]
    redact: bool,
    /// With --redact: replace IP addresses by consistent pseudonyms in captures, database and step
    /// logs.
    #[arg(long, requires = "redact")]
    pseudonymize_ips: bool,
    /// Pseudonym map to use and extend (kept outside the archive). Default: OUT.ipmap.json.
    #[arg(long, requires = "pseudonymize_ips")]
    ip_map: Option<PathBuf>,
}

/// Re-hash every member against manifest.json; exit 1 naming each member changed, missing or added.
///
/// Example: peel archive verify evidence.tar.zst
#[derive(Debug, clap::Args)]
struct VerifyArgs {
    /// The archive to check.
    file: PathBuf,
    /// Output format; JSON: {"archive", "sha256", "members_checked", "ok", "problems": [...]}.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

/// Verify archives and merge their runs into one database for cross-host queries.
///
/// Example: peel archive import host-a.tar.zst host-b.tar.zst --db merged.duckdb
#[derive(Debug, clap::Args)]
struct ImportArgs {
    /// Archives made by `peel archive create` (database or --parquet).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// The database to merge into (created if missing).
    #[arg(long)]
    db: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Table,
    Json,
}

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    match args.command {
        ArchiveCommand::Create(args) => create(args),
        ArchiveCommand::Verify(args) => verify(args),
        ArchiveCommand::Import(args) => import(args),
    }
}

fn create(args: CreateArgs) -> anyhow::Result<Outcome> {
    let options = CreateOptions {
        parquet: args.parquet,
        redact: args.redact,
        pseudonymize_ips: args.pseudonymize_ips,
        ip_map: args.ip_map,
        tool_version: crate::VERSION.to_string(),
    };
    let created = peel_store::create_archive(&args.input, &args.out, &options)
        .map_err(|err| store_failure(err, "creating the archive"))?;
    print_created(&mut io::stdout().lock(), &created)?;
    Ok(Outcome::Success)
}

fn print_created(out: &mut impl Write, created: &Created) -> io::Result<()> {
    let manifest = &created.manifest;
    writeln!(
        out,
        "wrote {} ({} + manifest.json, {} bytes)",
        created.path.display(),
        members(manifest.files.len()),
        created.size_bytes
    )?;
    if let Some(redaction) = &manifest.redaction {
        writeln!(
            out,
            "redacted {} capture(s): {} of {} packets cut, {} bytes removed, {} header value(s) masked",
            redaction.captures,
            redaction.packets_cut,
            redaction.packets,
            redaction.bytes_removed,
            redaction.headers_masked
        )?;
    }
    if let Some(map) = &created.path_map {
        writeln!(
            out,
            "URL path pseudonym map (keep it private, it is not in the archive): {}",
            map.display()
        )?;
    }
    if let Some(map) = &created.ip_map {
        writeln!(
            out,
            "IP pseudonym map (keep it private, it is not in the archive): {}",
            map.display()
        )?;
    }
    writeln!(out, "sha256 {}  {}", created.sha256, created.path.display())
}

fn verify(args: VerifyArgs) -> anyhow::Result<Outcome> {
    let verification = peel_store::verify_archive(&args.file)
        .map_err(|err| store_failure(err, "verifying the archive"))?;
    let mut stdout = io::stdout().lock();
    match args.format {
        Format::Table => print_verification(&mut stdout, &verification)?,
        Format::Json => {
            let mut json = serde_json::to_value(&verification)?;
            json["ok"] = verification.ok().into();
            serde_json::to_writer_pretty(&mut stdout, &json)?;
            writeln!(stdout)?;
        }
    }
    Ok(if verification.ok() { Outcome::Success } else { Outcome::VerificationFailed })
}

fn print_verification(out: &mut impl Write, verification: &Verification) -> io::Result<()> {
    let path = verification.archive.display();
    if verification.ok() {
        let checked = members(verification.members_checked);
        writeln!(out, "OK {path}: {checked} match manifest.json")?;
    } else {
        writeln!(out, "FAILED {path}: {} problem(s)", verification.problems.len())?;
        for problem in &verification.problems {
            writeln!(out, "  {problem}")?;
        }
    }
    writeln!(out, "sha256 {}  {path}", verification.sha256)
}

fn import(args: ImportArgs) -> anyhow::Result<Outcome> {
    let imported = peel_store::import_archives(&args.files, &args.db)
        .map_err(|err| store_failure(err, "importing"))?;
    let mut stdout = io::stdout().lock();
    for archive in &imported {
        print_imported(&mut stdout, archive)?;
    }
    writeln!(stdout, "database: {}", args.db.display())?;
    Ok(Outcome::Success)
}

fn print_imported(out: &mut impl Write, imported: &Imported) -> io::Result<()> {
    let runs: Vec<String> =
        imported.runs.iter().map(|(run_id, host)| format!("{run_id} ({host})")).collect();
    let rows: u64 = imported.tables.iter().map(|table| table.rows).sum();
    writeln!(
        out,
        "imported {}: {} row(s) in {} table(s), runs: {}",
        imported.archive.display(),
        rows,
        imported.tables.len(),
        if runs.is_empty() { "none".to_string() } else { runs.join(", ") }
    )
}

/// `1 member`, `3 members`.
fn members(count: usize) -> String {
    format!("{count} member{}", if count == 1 { "" } else { "s" })
}

/// Input problems exit 2 with a hint; everything else is a runtime error.
fn store_failure(err: StoreError, doing: &str) -> anyhow::Error {
    let hint = match &err {
        StoreError::ArchiveTampered { path, .. } => {
            Some(format!("`peel archive verify {}` lists what changed", path.display()))
        }
        StoreError::AlreadyImported { .. } => Some("each run is imported once".to_string()),
        StoreError::ArchiveInput { .. }
        | StoreError::ArchiveFormat { .. }
        | StoreError::Manifest { .. }
        | StoreError::Redact { .. }
        | StoreError::IpMap { .. }
        | StoreError::NotFound { .. }
        | StoreError::NotPeel { .. }
        | StoreError::SchemaTooNew { .. }
        | StoreError::SchemaTooOld { .. } => Some(String::new()),
        StoreError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => {
            Some("check the path".to_string())
        }
        _ => None,
    };
    match hint {
        Some(hint) if hint.is_empty() => Fail::usage(format!("{doing}: {err}")).into(),
        Some(hint) => Fail::usage(format!("{doing}: {err}")).hint(hint).into(),
        None => anyhow::Error::new(err).context(doing.to_string()),
    }
}
