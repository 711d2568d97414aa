//! Evidence archives: a run folder (or one database) sealed into `FILE.tar.zst` with a
//! `manifest.json` that lists every member with its size and SHA-256, the runs, and every command
//! the runs executed with its real exit code and duration (as sosreport does).
//!
//! - [`create_archive`]: written under a temporary name and renamed, mode 0600; returns the
//!   archive's SHA-256 for the caller to print. `--parquet` replaces each database by its tables
//!   as hive-partitioned Parquet; `--redact` cuts captures to protocol headers ([`crate::redact`]),
//!   replaces URL paths in the database and the step logs by consistent pseudonyms and masks
//!   credentials there ([`crate::scrub`]), and can pseudonymize IP addresses consistently across
//!   captures, database and logs; the maps are saved next to the archive, never inside it.
//! - [`verify_archive`]: re-hashes every member and names each one changed, missing or added.
//! - [`import_archives`]: verifies, then merges the archives' runs into one database, refusing to
//!   import a run twice.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Result, StoreError};
use crate::parquet::{sql_path, ExportedTable};
use crate::query::{format_timestamp_ns, Cell};
use crate::redact::{self, capture_kind, CaptureKind, IpMap, RedactStats};
use crate::schema::{SCHEMA_VERSION, TABLES};
use crate::scrub::{self, PathMap, Scrubber};
use crate::store::{restrict_mode, Access, Store};

/// The `format` field of every manifest this peel writes.
pub const MANIFEST_FORMAT: &str = "peel-archive/1";
/// Name of the manifest member.
pub const MANIFEST_NAME: &str = "manifest.json";
/// Folder inside the archive that holds a `--parquet` export.
pub const PARQUET_DIR: &str = "parquet";

/// How to build an archive.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// Store each database's tables as hive-partitioned Parquet instead of the DuckDB file.
    pub parquet: bool,
    /// Cut captures to protocol headers and mask Authorization/Cookie values.
    pub redact: bool,
    /// With `redact`: also replace IP addresses by consistent pseudonyms (captures and database).
    pub pseudonymize_ips: bool,
    /// Where the pseudonym map is kept (loaded if present, then extended); must be outside the
    /// input. Default: `<out>.ipmap.json`.
    pub ip_map: Option<PathBuf>,
    /// peel's version, recorded in the manifest.
    pub tool_version: String,
}

/// The manifest: what is in the archive and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub tool_version: String,
    pub created_ts_ns: i64,
    pub created: String,
    /// Host the evidence was measured on (the runs' host, else the archiving machine).
    pub host: String,
    /// Kernel release of that host.
    pub kernel: String,
    /// The RUN_DIR or database the archive was made from.
    pub source: String,
    pub schema_version: i64,
    /// DuckDB members.
    pub databases: Vec<String>,
    /// Parquet export folders (hive-partitioned `run_id=/host=/table=`).
    pub parquet_dirs: Vec<String>,
    pub time_range: Option<TimeRange>,
    pub runs: Vec<ManifestRun>,
    pub commands: Vec<ManifestCommand>,
    pub redaction: Option<Redaction>,
    /// Every member except the manifest itself.
    pub files: Vec<ManifestFile>,
}

/// First and last instant of the evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeRange {
    pub start_ts_ns: i64,
    pub end_ts_ns: i64,
    pub start: String,
    pub end: String,
}

/// One run in the archive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestRun {
    pub run_id: String,
    pub host: String,
    pub playbook: String,
    pub status: String,
    pub started_ts_ns: i64,
    pub ended_ts_ns: Option<i64>,
    pub kernel: Option<String>,
    pub tool_version: String,
}

/// One command a run executed, with its real outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestCommand {
    pub run_id: String,
    pub host: String,
    pub command_id: i64,
    pub step_id: Option<i64>,
    pub purpose: String,
    pub argv: serde_json::Value,
    pub exit_code: Option<i64>,
    pub signal: Option<i64>,
    pub timed_out: bool,
    pub duration_us: Option<f64>,
}

/// What redaction did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Redaction {
    pub payloads_cut_to_headers: bool,
    pub masked_headers: Vec<String>,
    pub ips_pseudonymized: bool,
    pub captures: usize,
    pub packets: u64,
    pub packets_cut: u64,
    pub bytes_removed: u64,
    pub headers_masked: u64,
    pub blocks_dropped: u64,
    /// URL paths replaced by pseudonyms (database and step logs); query strings dropped.
    #[serde(default)]
    pub paths_pseudonymized: bool,
    /// Step logs redacted (paths, credentials, and addresses with `ips_pseudonymized`).
    #[serde(default)]
    pub step_logs: usize,
    /// Database values replaced (paths, URLs, messages, command lines, addresses).
    #[serde(default)]
    pub database_values: u64,
}

/// One member with its size and SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    pub path: String,
    pub size_bytes: u64,
    pub sha256: String,
}

/// The archive that was written.
#[derive(Debug, Clone)]
pub struct Created {
    pub path: PathBuf,
    pub sha256: String,
    pub size_bytes: u64,
    pub manifest: Manifest,
    /// Where the IP pseudonym map was saved (outside the archive), if IPs were pseudonymized.
    pub ip_map: Option<PathBuf>,
    /// Where the path pseudonym map was saved (outside the archive), if the archive is redacted.
    pub path_map: Option<PathBuf>,
}

/// A member to add: its name in the archive and the file that holds its bytes.
#[derive(Debug)]
struct Member {
    name: String,
    source: PathBuf,
}

/// Builds `out` from a run folder or a database file.
pub fn create_archive(input: &Path, out: &Path, options: &CreateOptions) -> Result<Created> {
    let input_err = |reason: &str| StoreError::ArchiveInput {
        path: input.to_path_buf(),
        reason: reason.to_string(),
    };
    let metadata = fs::metadata(input).map_err(StoreError::io(input))?;
    let out_dir = out.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let scratch = tempfile::Builder::new()
        .prefix(".peel-archive-")
        .tempdir_in(out_dir)
        .map_err(StoreError::io(out_dir))?;

    let ip_map_path = options.ip_map.clone().unwrap_or_else(|| redact::default_ip_map_path(out));
    let pseudonymize = options.redact && options.pseudonymize_ips;
    if pseudonymize && metadata.is_dir() && is_inside(&ip_map_path, input) {
        return Err(StoreError::ArchiveInput {
            path: ip_map_path,
            reason: "the IP map must be kept outside the folder being archived".to_string(),
        });
    }
    // Next to the archive like the IP map. (CreateOptions has no field for another place: adding
    // one would break the struct literals of its users.)
    let path_map_path = scrub::default_path_map_path(out);
    if options.redact && metadata.is_dir() && is_inside(&path_map_path, input) {
        return Err(StoreError::ArchiveInput {
            path: path_map_path,
            reason: "the path map must be kept outside the folder being archived".to_string(),
        });
    }
    let mut ip_map = if pseudonymize { Some(IpMap::load(&ip_map_path)?) } else { None };
    let mut path_map =
        if options.redact { PathMap::load(&path_map_path)? } else { PathMap::default() };

    let files: Vec<(String, PathBuf)> = if metadata.is_dir() {
        let mut files = Vec::new();
        walk(input, input, &mut files)?;
        let skip = [
            fs::canonicalize(out).ok(),
            fs::canonicalize(&ip_map_path).ok(),
            fs::canonicalize(&path_map_path).ok(),
        ];
        files.retain(|(_, path)| !skip.contains(&fs::canonicalize(path).ok()));
        files
    } else {
        let name = input.file_name().ok_or_else(|| input_err("has no file name"))?;
        vec![(name.to_string_lossy().into_owned(), input.to_path_buf())]
    };
    if files.is_empty() {
        return Err(input_err("holds no files to archive"));
    }

    let mut members = Vec::new();
    let mut databases = Vec::new();
    let mut parquet_dirs = Vec::new();
    let mut facts = Facts::default();
    let mut stats = RedactStats::default();
    let mut captures = 0;
    let mut step_logs = 0;
    let mut database_values = 0;
    for (name, path) in files {
        if is_duckdb(&path)? {
            if path.with_extension(wal_extension(&path)).exists() {
                return Err(StoreError::ArchiveInput {
                    path,
                    reason: "has a write-ahead log (.wal): its writer is still running or \
                             crashed; finish or recover the run first"
                        .to_string(),
                });
            }
            let mut db = path.clone();
            if options.redact {
                db = scratch
                    .path()
                    .join(format!("db-{}.duckdb", databases.len() + parquet_dirs.len()));
                fs::copy(&path, &db).map_err(StoreError::io(&path))?;
                let mut scrubber = Scrubber { paths: &mut path_map, ips: ip_map.as_mut() };
                database_values += scrub::redact_database(&db, &mut scrubber)?;
            }
            let store = Store::open(&db, Access::ReadOnly)?;
            facts.collect(&store)?;
            if options.parquet {
                let export = scratch.path().join(PARQUET_DIR);
                store.export_parquet(&export)?;
                if !parquet_dirs.contains(&PARQUET_DIR.to_string()) {
                    parquet_dirs.push(PARQUET_DIR.to_string());
                }
            } else {
                databases.push(name.clone());
                members.push(Member { name, source: db });
            }
            store.close()?;
            continue;
        }
        if options.redact {
            if let Some(kind) = capture_kind_of(&path)? {
                let redacted_name = if kind == CaptureKind::Gzip {
                    redact::redacted_name(&name)
                } else {
                    name.clone()
                };
                let target = scratch.path().join(format!("capture-{captures}"));
                stats += redact::redact_file(&path, &target, ip_map.as_mut())?;
                captures += 1;
                members.push(Member { name: redacted_name, source: target });
                continue;
            }
            if scrub::is_step_log(&name) {
                let target = scratch.path().join(format!("log-{step_logs}"));
                let mut scrubber = Scrubber { paths: &mut path_map, ips: ip_map.as_mut() };
                scrub::redact_log(&path, &target, &mut scrubber)?;
                step_logs += 1;
                members.push(Member { name, source: target });
                continue;
            }
        }
        members.push(Member { name, source: path });
    }
    if !parquet_dirs.is_empty() {
        let export = scratch.path().join(PARQUET_DIR);
        let mut exported = Vec::new();
        walk(&export, &export, &mut exported)?;
        for (name, source) in exported {
            members.push(Member { name: format!("{PARQUET_DIR}/{name}"), source });
        }
    }

    let (host, kernel) = facts.host_and_kernel();
    let created_ts_ns = now_ns();
    let mut manifest = Manifest {
        format: MANIFEST_FORMAT.to_string(),
        tool_version: options.tool_version.clone(),
        created_ts_ns,
        created: format_timestamp_ns(created_ts_ns),
        host,
        kernel,
        source: input.display().to_string(),
        schema_version: SCHEMA_VERSION,
        databases,
        parquet_dirs,
        time_range: facts.time_range(),
        runs: facts.runs,
        commands: facts.commands,
        redaction: options.redact.then(|| Redaction {
            payloads_cut_to_headers: true,
            masked_headers: vec![
                "Authorization".to_string(),
                "Proxy-Authorization".to_string(),
                "Cookie".to_string(),
                "Set-Cookie".to_string(),
            ],
            ips_pseudonymized: pseudonymize,
            captures,
            packets: stats.packets,
            packets_cut: stats.packets_cut,
            bytes_removed: stats.bytes_removed,
            headers_masked: stats.headers_masked,
            blocks_dropped: stats.blocks_dropped,
            paths_pseudonymized: true,
            step_logs,
            database_values,
        }),
        files: Vec::new(),
    };

    let (sha256, size_bytes) = write_archive(out, &members, &mut manifest)?;
    let ip_map_saved = match &ip_map {
        Some(map) => {
            map.save(&ip_map_path)?;
            Some(ip_map_path)
        }
        None => None,
    };
    let path_map_saved = if options.redact {
        path_map.save(&path_map_path)?;
        Some(path_map_path)
    } else {
        None
    };
    Ok(Created {
        path: out.to_path_buf(),
        sha256,
        size_bytes,
        manifest,
        ip_map: ip_map_saved,
        path_map: path_map_saved,
    })
}

/// Writes the tar.zst under a temporary name, then renames it; fills `manifest.files`.
fn write_archive(out: &Path, members: &[Member], manifest: &mut Manifest) -> Result<(String, u64)> {
    let partial = temp_sibling(out);
    let result = (|| {
        let file = fs::File::create(&partial).map_err(StoreError::io(&partial))?;
        restrict_mode(&partial)?;
        let mut encoder =
            zstd::Encoder::new(HashingWriter::new(file), 3).map_err(StoreError::io(&partial))?;
        encoder.include_checksum(true).map_err(StoreError::io(&partial))?;
        let mut builder = tar::Builder::new(encoder);
        for member in members {
            let (size_bytes, sha256) = append_member(&mut builder, member)?;
            manifest.files.push(ManifestFile { path: member.name.clone(), size_bytes, sha256 });
        }
        let manifest_json = serde_json::to_vec_pretty(manifest).map_err(|err| {
            StoreError::Manifest { path: out.to_path_buf(), reason: err.to_string() }
        })?;
        let mut header = member_header(manifest_json.len() as u64);
        builder
            .append_data(&mut header, MANIFEST_NAME, manifest_json.as_slice())
            .map_err(StoreError::io(&partial))?;
        let encoder = builder.into_inner().map_err(StoreError::io(&partial))?;
        let mut hashing = encoder.finish().map_err(StoreError::io(&partial))?;
        hashing.flush().map_err(StoreError::io(&partial))?;
        hashing.inner.sync_all().map_err(StoreError::io(&partial))?;
        Ok((hex::encode(hashing.hasher.finalize()), hashing.bytes))
    })();
    match result {
        Ok(done) => {
            fs::rename(&partial, out).map_err(StoreError::io(out))?;
            Ok(done)
        }
        Err(err) => {
            let _ = fs::remove_file(&partial);
            Err(err)
        }
    }
}

fn member_header(size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o600);
    header.set_mtime(now_ns().div_euclid(1_000_000_000).max(0) as u64);
    header.set_entry_type(tar::EntryType::Regular);
    header
}

/// Appends one file, hashing exactly the bytes written; fails if the file changes size meanwhile.
fn append_member<W: Write>(
    builder: &mut tar::Builder<W>,
    member: &Member,
) -> Result<(u64, String)> {
    let file = fs::File::open(&member.source).map_err(StoreError::io(&member.source))?;
    let size = file.metadata().map_err(StoreError::io(&member.source))?.len();
    let mut reader = HashingReader { inner: file.take(size), hasher: Sha256::new(), bytes: 0 };
    let mut header = member_header(size);
    builder.append_data(&mut header, &member.name, &mut reader).map_err(|source| {
        StoreError::ArchiveMember {
            path: member.source.clone(),
            member: member.name.clone(),
            source,
        }
    })?;
    if reader.bytes != size {
        return Err(StoreError::ArchiveMember {
            path: member.source.clone(),
            member: member.name.clone(),
            source: io::Error::other("the file changed size while it was archived"),
        });
    }
    Ok((size, hex::encode(reader.hasher.finalize())))
}

/// One thing wrong with an archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum Problem {
    /// The member's bytes differ from the manifest.
    Changed {
        member: String,
        expected_sha256: String,
        actual_sha256: String,
        expected_size_bytes: u64,
        actual_size_bytes: u64,
    },
    /// Listed in the manifest, absent from the archive.
    Missing { member: String },
    /// In the archive, not in the manifest (or present twice).
    Added { member: String },
    /// The archive stops being readable inside this member (or before the first one).
    Unreadable { member: Option<String>, reason: String },
    /// No manifest.json, or one that does not parse.
    BadManifest { reason: String },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Changed { member, expected_size_bytes, actual_size_bytes, .. }
                if expected_size_bytes != actual_size_bytes =>
            {
                write!(f, "changed: {member} ({expected_size_bytes} bytes listed, {actual_size_bytes} found)")
            }
            Problem::Changed { member, .. } => write!(f, "changed: {member} (SHA-256 differs)"),
            Problem::Missing { member } => write!(f, "missing: {member}"),
            Problem::Added { member } => write!(f, "added: {member}"),
            Problem::Unreadable { member: Some(member), reason } => {
                write!(f, "unreadable: {member} ({reason})")
            }
            Problem::Unreadable { member: None, reason } => write!(f, "unreadable: {reason}"),
            Problem::BadManifest { reason } => write!(f, "manifest.json {reason}"),
        }
    }
}

/// The outcome of [`verify_archive`].
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    pub archive: PathBuf,
    /// SHA-256 of the archive file as it is now.
    pub sha256: String,
    /// Members re-hashed (manifest excluded).
    pub members_checked: usize,
    pub problems: Vec<Problem>,
    #[serde(skip)]
    pub manifest: Option<Manifest>,
}

impl Verification {
    /// Whether the archive matches its manifest exactly.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Re-hashes every member and compares with the manifest.
pub fn verify_archive(path: &Path) -> Result<Verification> {
    let sha256 = hash_file(path)?;
    let file = fs::File::open(path).map_err(StoreError::io(path))?;
    let mut problems = Vec::new();
    let mut found: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let mut manifest_bytes: Option<Vec<u8>> = None;
    let decoder = zstd::Decoder::new(file).map_err(|err| StoreError::ArchiveFormat {
        path: path.to_path_buf(),
        reason: format!("not a zstd stream: {err}"),
    })?;
    let mut archive = tar::Archive::new(decoder);
    let mut current: Option<String> = None;
    let walk_result = (|| -> io::Result<()> {
        for entry in archive.entries()? {
            current = None;
            let mut entry = entry?;
            if entry.header().entry_type().is_dir() {
                continue;
            }
            let name = entry.path()?.to_string_lossy().into_owned();
            current = Some(name.clone());
            if name == MANIFEST_NAME {
                let mut bytes = Vec::new();
                entry.read_to_end(&mut bytes)?;
                if manifest_bytes.is_some() {
                    problems.push(Problem::Added { member: name });
                }
                manifest_bytes = Some(bytes);
                continue;
            }
            let mut hasher = Sha256::new();
            let size = io::copy(&mut entry, &mut HashSink(&mut hasher))?;
            if found.insert(name.clone(), (size, hex::encode(hasher.finalize()))).is_some() {
                problems.push(Problem::Added { member: name });
            }
        }
        Ok(())
    })();
    if let Err(err) = walk_result {
        problems.push(Problem::Unreadable { member: current, reason: err.to_string() });
    }
    let manifest = match manifest_bytes {
        None => {
            problems.push(Problem::BadManifest { reason: "is missing".to_string() });
            None
        }
        Some(bytes) => match serde_json::from_slice::<Manifest>(&bytes) {
            Ok(manifest) => Some(manifest),
            Err(err) => {
                problems.push(Problem::BadManifest { reason: format!("does not parse: {err}") });
                None
            }
        },
    };
    let members_checked = found.len();
    if let Some(manifest) = &manifest {
        let mut listed = BTreeSet::new();
        for file in &manifest.files {
            listed.insert(file.path.clone());
            match found.get(&file.path) {
                None => problems.push(Problem::Missing { member: file.path.clone() }),
                Some((size, sha)) if *size != file.size_bytes || *sha != file.sha256 => {
                    problems.push(Problem::Changed {
                        member: file.path.clone(),
                        expected_sha256: file.sha256.clone(),
                        actual_sha256: sha.clone(),
                        expected_size_bytes: file.size_bytes,
                        actual_size_bytes: *size,
                    });
                }
                Some(_) => {}
            }
        }
        for name in found.keys().filter(|name| !listed.contains(*name)) {
            problems.push(Problem::Added { member: name.clone() });
        }
    }
    Ok(Verification { archive: path.to_path_buf(), sha256, members_checked, problems, manifest })
}

/// What one archive contributed to the database.
#[derive(Debug, Clone)]
pub struct Imported {
    pub archive: PathBuf,
    /// (run_id, host) pairs imported.
    pub runs: Vec<(String, String)>,
    pub tables: Vec<ExportedTable>,
}

/// Verifies each archive and merges its runs into `db` (created if missing).
pub fn import_archives(archives: &[PathBuf], db: &Path) -> Result<Vec<Imported>> {
    let store = Store::open(db, Access::ReadWrite)?;
    let mut imported = Vec::new();
    for archive in archives {
        imported.push(import_one(&store, archive, db)?);
    }
    store.close()?;
    Ok(imported)
}

fn import_one(store: &Store, archive: &Path, db: &Path) -> Result<Imported> {
    let verification = verify_archive(archive)?;
    if !verification.ok() {
        let problems: Vec<String> = verification.problems.iter().map(ToString::to_string).collect();
        return Err(StoreError::ArchiveTampered {
            path: archive.to_path_buf(),
            problems: problems.join("; "),
        });
    }
    let Some(manifest) = verification.manifest else {
        return Err(StoreError::Manifest {
            path: archive.to_path_buf(),
            reason: "is missing".to_string(),
        });
    };
    let db_dir = db.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let scratch = tempfile::Builder::new()
        .prefix(".peel-import-")
        .tempdir_in(db_dir)
        .map_err(StoreError::io(db_dir))?;
    extract(archive, scratch.path())?;
    let existing: BTreeSet<(String, String)> = store.runs_and_hosts()?.into_iter().collect();
    let mut result =
        Imported { archive: archive.to_path_buf(), runs: Vec::new(), tables: Vec::new() };
    for database in &manifest.databases {
        let source = scratch.path().join(database);
        // Migrates an older schema in the scratch copy (the archive itself stays as it was).
        Store::open(&source, Access::ReadWrite)?.close()?;
        let attach_err =
            |source_err| StoreError::Parquet { path: source.clone(), source: source_err };
        store
            .connection()
            .execute_batch(&format!("ATTACH {} AS peel_import (READ_ONLY)", sql_path(&source)))
            .map_err(attach_err)?;
        let outcome = (|| {
            let pairs = distinct_pairs(store, &pairs_sql("peel_import."))?;
            refuse_duplicates(&existing, &pairs, db, archive)?;
            let mut tables = Vec::new();
            for &table in TABLES {
                let rows = store
                    .connection()
                    .execute(
                        &format!(
                            "INSERT INTO main.{table} BY NAME SELECT * FROM peel_import.{table}"
                        ),
                        [],
                    )
                    .map_err(attach_err)?;
                if rows > 0 {
                    tables.push(ExportedTable { table, rows: rows as u64 });
                }
            }
            Ok((pairs, tables))
        })();
        store.connection().execute_batch("DETACH peel_import").map_err(attach_err)?;
        let (pairs, tables) = outcome?;
        result.runs.extend(pairs);
        result.tables.extend(tables);
    }
    for dir in &manifest.parquet_dirs {
        let export = scratch.path().join(dir);
        let glob = export.join("*").join("*").join("*").join("*.parquet");
        let pairs = distinct_pairs(
            store,
            &format!(
                "SELECT DISTINCT run_id, host FROM read_parquet({}, hive_partitioning = true, \
                 hive_types_autocast = false, union_by_name = true)",
                sql_path(&glob)
            ),
        )?;
        refuse_duplicates(&existing, &pairs, db, archive)?;
        result.tables.extend(store.import_parquet(&export)?);
        result.runs.extend(pairs);
    }
    result.runs.sort();
    result.runs.dedup();
    Ok(result)
}

fn pairs_sql(prefix: &str) -> String {
    let union: Vec<String> = TABLES
        .iter()
        .map(|table| format!("SELECT DISTINCT run_id, host FROM {prefix}{table}"))
        .collect();
    format!("SELECT DISTINCT * FROM ({}) ORDER BY ALL", union.join(" UNION "))
}

fn distinct_pairs(store: &Store, sql: &str) -> Result<Vec<(String, String)>> {
    let result = store.query(sql)?;
    Ok(result
        .rows
        .iter()
        .filter_map(|row| {
            Some((row.first()?.as_str()?.to_string(), row.get(1)?.as_str()?.to_string()))
        })
        .collect())
}

fn refuse_duplicates(
    existing: &BTreeSet<(String, String)>,
    incoming: &[(String, String)],
    db: &Path,
    archive: &Path,
) -> Result<()> {
    match incoming.iter().find(|pair| existing.contains(*pair)) {
        Some((run_id, host)) => Err(StoreError::AlreadyImported {
            target: db.to_path_buf(),
            source_path: archive.to_path_buf(),
            run_id: run_id.clone(),
            host: host.clone(),
        }),
        None => Ok(()),
    }
}

/// Unpacks every member under `dir` (tar refuses paths that would escape it).
fn extract(archive: &Path, dir: &Path) -> Result<()> {
    let file = fs::File::open(archive).map_err(StoreError::io(archive))?;
    let format_err = |err: io::Error| StoreError::ArchiveFormat {
        path: archive.to_path_buf(),
        reason: err.to_string(),
    };
    let decoder = zstd::Decoder::new(file).map_err(format_err)?;
    let mut tar = tar::Archive::new(decoder);
    for entry in tar.entries().map_err(format_err)? {
        let mut entry = entry.map_err(format_err)?;
        entry.unpack_in(dir).map_err(format_err)?;
    }
    Ok(())
}

/// Runs, commands and time range gathered from the databases being archived.
#[derive(Debug, Default)]
struct Facts {
    runs: Vec<ManifestRun>,
    commands: Vec<ManifestCommand>,
    start_ts_ns: Option<i64>,
    end_ts_ns: Option<i64>,
}

impl Facts {
    fn collect(&mut self, store: &Store) -> Result<()> {
        let runs = store.query(
            "SELECT run_id, host, playbook, status, started_ts_ns, ended_ts_ns, kernel, \
             tool_version FROM runs ORDER BY started_ts_ns, run_id, host",
        )?;
        for row in &runs.rows {
            self.runs.push(ManifestRun {
                run_id: text(&row[0]),
                host: text(&row[1]),
                playbook: text(&row[2]),
                status: text(&row[3]),
                started_ts_ns: row[4].as_i64().unwrap_or(0),
                ended_ts_ns: row[5].as_i64(),
                kernel: row[6].as_str().map(str::to_string),
                tool_version: text(&row[7]),
            });
        }
        let commands = store.query(
            "SELECT run_id, host, command_id, step_id, purpose, argv_json, exit_code, signal, \
             timed_out, duration_us FROM commands ORDER BY run_id, host, command_id",
        )?;
        for row in &commands.rows {
            let argv_json = text(&row[5]);
            self.commands.push(ManifestCommand {
                run_id: text(&row[0]),
                host: text(&row[1]),
                command_id: row[2].as_i64().unwrap_or(0),
                step_id: row[3].as_i64(),
                purpose: text(&row[4]),
                argv: serde_json::from_str(&argv_json)
                    .unwrap_or(serde_json::Value::String(argv_json)),
                exit_code: row[6].as_i64(),
                signal: row[7].as_i64(),
                timed_out: row[8] == Cell::Bool(true),
                duration_us: row[9].as_f64(),
            });
        }
        let range = store.query(
            "SELECT min(lo), max(hi) FROM (\
               SELECT min(started_ts_ns) AS lo, max(coalesce(ended_ts_ns, started_ts_ns)) AS hi FROM runs \
               UNION ALL SELECT min(first_ts_ns), max(last_ts_ns) FROM connections \
               UNION ALL SELECT min(ts_ns), max(ts_ns) FROM snapshots \
               UNION ALL SELECT min(scheduled_ts_ns), max(end_ts_ns) FROM load_requests)",
        )?;
        if let Some(row) = range.rows.first() {
            if let Some(lo) = row[0].as_i64() {
                self.start_ts_ns = Some(self.start_ts_ns.map_or(lo, |old| old.min(lo)));
            }
            if let Some(hi) = row[1].as_i64() {
                self.end_ts_ns = Some(self.end_ts_ns.map_or(hi, |old| old.max(hi)));
            }
        }
        Ok(())
    }

    fn time_range(&self) -> Option<TimeRange> {
        let (start_ts_ns, end_ts_ns) = (self.start_ts_ns?, self.end_ts_ns?);
        Some(TimeRange {
            start_ts_ns,
            end_ts_ns,
            start: format_timestamp_ns(start_ts_ns),
            end: format_timestamp_ns(end_ts_ns),
        })
    }

    /// The runs' host and kernel if recorded, else this machine's.
    fn host_and_kernel(&self) -> (String, String) {
        let local = |file: &str| {
            fs::read_to_string(format!("/proc/sys/kernel/{file}"))
                .map(|text| text.trim().to_string())
                .unwrap_or_else(|_| "unknown".to_string())
        };
        let host =
            self.runs.first().map(|run| run.host.clone()).unwrap_or_else(|| local("hostname"));
        let kernel = self
            .runs
            .iter()
            .find_map(|run| run.kernel.clone())
            .unwrap_or_else(|| local("osrelease"));
        (host, kernel)
    }
}

fn text(cell: &Cell) -> String {
    cell.as_str().unwrap_or_default().to_string()
}

/// Regular files under `dir`, as (path relative to `root` with `/`, path), sorted; symlinks are
/// not followed.
fn walk(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(StoreError::io(dir))?
        .collect::<io::Result<_>>()
        .map_err(StoreError::io(dir))?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let path = entry.path();
        let file_type = entry.file_type().map_err(StoreError::io(&path))?;
        if file_type.is_dir() {
            walk(root, &path, files)?;
        } else if file_type.is_file() {
            let relative = path.strip_prefix(root).unwrap_or(&path);
            let name: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            files.push((name.join("/"), path));
        }
    }
    Ok(())
}

fn is_inside(path: &Path, dir: &Path) -> bool {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    match (fs::canonicalize(parent), fs::canonicalize(dir)) {
        (Ok(parent), Ok(dir)) => parent.starts_with(dir),
        _ => false,
    }
}

/// DuckDB files carry `DUCK` at byte 8.
fn is_duckdb(path: &Path) -> Result<bool> {
    let mut head = [0u8; 12];
    let mut file = fs::File::open(path).map_err(StoreError::io(path))?;
    match file.read_exact(&mut head) {
        Ok(()) => Ok(&head[8..12] == b"DUCK"),
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(err) => Err(StoreError::Io { path: path.to_path_buf(), source: err }),
    }
}

fn wal_extension(path: &Path) -> String {
    match path.extension() {
        Some(ext) => format!("{}.wal", ext.to_string_lossy()),
        None => "wal".to_string(),
    }
}

/// The capture kind of a file; a gzip file counts only if it decompresses to a capture.
fn capture_kind_of(path: &Path) -> Result<Option<CaptureKind>> {
    let mut head = [0u8; 4];
    let mut file = fs::File::open(path).map_err(StoreError::io(path))?;
    if file.read_exact(&mut head).is_err() {
        return Ok(None);
    }
    match capture_kind(&head) {
        Some(CaptureKind::Gzip) => {
            let file = fs::File::open(path).map_err(StoreError::io(path))?;
            let mut inner = [0u8; 4];
            let readable = flate2::read::MultiGzDecoder::new(file).read_exact(&mut inner).is_ok();
            Ok((readable
                && matches!(capture_kind(&inner), Some(CaptureKind::Pcap | CaptureKind::Pcapng)))
            .then_some(CaptureKind::Gzip))
        }
        other => Ok(other),
    }
}

/// `.<name>.partial-<pid>` next to `path`.
fn temp_sibling(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

/// Writes `bytes` to `path` via a temporary sibling and a rename, mode 0600.
pub(crate) fn write_file_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let partial = temp_sibling(path);
    let mut file = fs::File::create(&partial).map_err(StoreError::io(&partial))?;
    restrict_mode(&partial)?;
    file.write_all(bytes).map_err(StoreError::io(&partial))?;
    file.sync_all().map_err(StoreError::io(&partial))?;
    fs::rename(&partial, path).map_err(StoreError::io(path))
}

/// SHA-256 of a whole file, hex.
pub fn hash_file(path: &Path) -> Result<String> {
    let mut file = fs::File::open(path).map_err(StoreError::io(path))?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut HashSink(&mut hasher)).map_err(StoreError::io(path))?;
    Ok(hex::encode(hasher.finalize()))
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

struct HashSink<'a>(&'a mut Sha256);

impl Write for HashSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.hasher.update(&buf[..read]);
        self.bytes += read as u64;
        Ok(read)
    }
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter { inner, hasher: Sha256::new(), bytes: 0 }
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hasher.update(&buf[..written]);
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
