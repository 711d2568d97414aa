//! Evidence archives over real run folders: create and verify; flip one byte of any member, drop
//! one, add one, and verify names it; import archives of two hosts and query across them;
//! redaction of captures and consistent IP pseudonyms.

mod sample_run;

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use peel_store::archive::Problem;
use peel_store::{Access, Cell, CreateOptions, Store, StoreError};

/// A pcap with one Ethernet/IPv4/TCP packet from 192.0.2.1:40000 to 192.0.2.2:8000 carrying an
/// HTTP request with secrets.
fn pcap_with_secrets() -> Vec<u8> {
    let payload = b"GET /db HTTP/1.1\r\nHost: lab\r\nAuthorization: Bearer hunter2\r\nCookie: sid=s3cr3t\r\n\r\n";
    let mut packet = vec![0u8; 12];
    packet.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + 20 + payload.len()) as u16;
    packet.extend_from_slice(&[0x45, 0]);
    packet.extend_from_slice(&total.to_be_bytes());
    packet.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2]);
    packet.extend_from_slice(&40000u16.to_be_bytes());
    packet.extend_from_slice(&8000u16.to_be_bytes());
    packet.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    packet.extend_from_slice(payload);
    let mut file = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    file.extend_from_slice(&65535u32.to_le_bytes());
    file.extend_from_slice(&1u32.to_le_bytes());
    file.extend_from_slice(&1u32.to_le_bytes());
    file.extend_from_slice(&0u32.to_le_bytes());
    file.extend_from_slice(&(packet.len() as u32).to_le_bytes());
    file.extend_from_slice(&(packet.len() as u32).to_le_bytes());
    file.extend_from_slice(&packet);
    file
}

/// A run folder as a playbook leaves it.
fn run_dir(root: &Path, run_id: &str, host: &str) -> PathBuf {
    let dir = root.join(run_id);
    fs::create_dir_all(dir.join("capture")).unwrap();
    fs::create_dir_all(dir.join("steps")).unwrap();
    let store = Store::open(&dir.join("peel.duckdb"), Access::ReadWrite).unwrap();
    sample_run::ingest_sample(&store, run_id, host);
    store.close().unwrap();
    fs::write(dir.join("capture/lo-0.pcap"), pcap_with_secrets()).unwrap();
    fs::write(dir.join("playbook.toml"), "name = \"lab-db-churn\"\n").unwrap();
    fs::write(dir.join("report.md"), "# Report\n").unwrap();
    fs::write(dir.join("steps/0.stdout"), "restarted\n").unwrap();
    dir
}

fn options() -> CreateOptions {
    CreateOptions { tool_version: "0.1.0 (test)".to_string(), ..CreateOptions::default() }
}

/// Members of an archive with their bytes.
fn members(archive: &Path) -> Vec<(String, Vec<u8>)> {
    let decoder = zstd::Decoder::new(fs::File::open(archive).unwrap()).unwrap();
    let mut tar = tar::Archive::new(decoder);
    tar.entries()
        .unwrap()
        .map(|entry| {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            (name, bytes)
        })
        .collect()
}

/// Rewrites an archive from (name, bytes) members, as an attacker with tar and zstd would.
fn rewrite(archive: &Path, members: &[(String, Vec<u8>)]) {
    let encoder = zstd::Encoder::new(fs::File::create(archive).unwrap(), 3).unwrap();
    let mut builder = tar::Builder::new(encoder);
    for (name, bytes) in members {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o600);
        builder.append_data(&mut header, name, bytes.as_slice()).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap();
}

#[test]
fn create_then_verify_passes_and_the_manifest_tells_the_story() {
    let root = tempfile::tempdir().unwrap();
    let dir = run_dir(root.path(), "r1", "host-a");
    let out = root.path().join("evidence.tar.zst");
    let created = peel_store::create_archive(&dir, &out, &options()).unwrap();
    assert_eq!(created.sha256, peel_store::archive::hash_file(&out).unwrap());
    assert_eq!(fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);
    let names: Vec<&str> = created.manifest.files.iter().map(|file| file.path.as_str()).collect();
    assert_eq!(
        names,
        ["capture/lo-0.pcap", "peel.duckdb", "playbook.toml", "report.md", "steps/0.stdout"]
    );
    let manifest = &created.manifest;
    assert_eq!(manifest.host, "host-a");
    assert_eq!(manifest.kernel, "6.1.0-test");
    assert_eq!(manifest.databases, ["peel.duckdb"]);
    assert_eq!(manifest.runs.len(), 1);
    let exit_codes: Vec<Option<i64>> = manifest.commands.iter().map(|c| c.exit_code).collect();
    assert_eq!(exit_codes, [Some(0), Some(3)]);
    assert_eq!(manifest.commands[0].argv, serde_json::json!(["systemctl", "restart", "app"]));
    assert_eq!(manifest.commands[0].duration_us, Some(2_500.0));
    let range = manifest.time_range.as_ref().unwrap();
    assert_eq!(range.start_ts_ns, sample_run::T0_NS);
    let verification = peel_store::verify_archive(&out).unwrap();
    assert!(verification.ok(), "{:?}", verification.problems);
    assert_eq!(verification.members_checked, 5);
    assert_eq!(verification.sha256, created.sha256);
    // No temporary file is left next to the archive.
    let leftovers: Vec<_> = fs::read_dir(root.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn flipping_one_byte_in_any_member_names_that_member() {
    let root = tempfile::tempdir().unwrap();
    let dir = run_dir(root.path(), "r1", "host-a");
    let out = root.path().join("evidence.tar.zst");
    peel_store::create_archive(&dir, &out, &options()).unwrap();
    let original = members(&out);
    for (index, (name, _)) in original.iter().enumerate() {
        if name == "manifest.json" {
            continue;
        }
        let mut tampered = original.clone();
        let bytes = &mut tampered[index].1;
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        let copy = root.path().join("tampered.tar.zst");
        rewrite(&copy, &tampered);
        let verification = peel_store::verify_archive(&copy).unwrap();
        assert_eq!(verification.problems.len(), 1, "{name}: {:?}", verification.problems);
        match &verification.problems[0] {
            Problem::Changed { member, expected_size_bytes, actual_size_bytes, .. } => {
                assert_eq!(member, name);
                assert_eq!(expected_size_bytes, actual_size_bytes);
            }
            other => panic!("{name}: expected Changed, got {other:?}"),
        }
        assert_eq!(
            verification.problems[0].to_string(),
            format!("changed: {name} (SHA-256 differs)")
        );
    }
}

#[test]
fn missing_and_added_members_are_named() {
    let root = tempfile::tempdir().unwrap();
    let dir = run_dir(root.path(), "r1", "host-a");
    let out = root.path().join("evidence.tar.zst");
    peel_store::create_archive(&dir, &out, &options()).unwrap();
    let mut changed = members(&out);
    changed.retain(|(name, _)| name != "report.md");
    changed.push(("extra.txt".to_string(), b"planted".to_vec()));
    rewrite(&out, &changed);
    let verification = peel_store::verify_archive(&out).unwrap();
    assert_eq!(
        verification.problems,
        vec![
            Problem::Missing { member: "report.md".to_string() },
            Problem::Added { member: "extra.txt".to_string() }
        ]
    );
}

#[test]
fn a_cut_archive_is_reported_unreadable_not_a_panic() {
    let root = tempfile::tempdir().unwrap();
    let dir = run_dir(root.path(), "r1", "host-a");
    let out = root.path().join("evidence.tar.zst");
    peel_store::create_archive(&dir, &out, &options()).unwrap();
    let bytes = fs::read(&out).unwrap();
    fs::write(&out, &bytes[..bytes.len() / 2]).unwrap();
    let verification = peel_store::verify_archive(&out).unwrap();
    assert!(!verification.ok());
    assert!(
        verification.problems.iter().any(|p| matches!(p, Problem::Unreadable { .. })),
        "{:?}",
        verification.problems
    );
}

#[test]
fn archives_of_two_hosts_import_into_one_database_for_cross_host_queries() {
    let root = tempfile::tempdir().unwrap();
    let host_a = run_dir(root.path(), "run-a", "host-a");
    let host_b = run_dir(root.path(), "run-b", "host-b");
    let archive_a = root.path().join("a.tar.zst");
    let archive_b = root.path().join("b.tar.zst");
    peel_store::create_archive(&host_a, &archive_a, &options()).unwrap();
    let parquet = CreateOptions { parquet: true, ..options() };
    let created_b = peel_store::create_archive(&host_b, &archive_b, &parquet).unwrap();
    assert!(created_b.manifest.databases.is_empty());
    assert_eq!(created_b.manifest.parquet_dirs, ["parquet"]);
    assert!(created_b.manifest.files.iter().any(
        |file| file.path == "parquet/run_id=run-b/host=host-b/table=connections/data_0.parquet"
    ));

    let merged = root.path().join("merged.duckdb");
    let imported = peel_store::import_archives(&[archive_a.clone(), archive_b], &merged).unwrap();
    assert_eq!(imported[0].runs, [("run-a".to_string(), "host-a".to_string())]);
    assert_eq!(imported[1].runs, [("run-b".to_string(), "host-b".to_string())]);
    let store = Store::open(&merged, Access::ReadOnly).unwrap();
    let per_host = store
        .query(
            "SELECT host, count(*) AS connections, max(close_us) AS slowest_close_us \
             FROM connections GROUP BY host ORDER BY host",
        )
        .unwrap();
    assert_eq!(
        per_host.rows,
        vec![
            vec![Cell::Text("host-a".into()), Cell::Int(4), Cell::Float(826_461.507)],
            vec![Cell::Text("host-b".into()), Cell::Int(4), Cell::Float(826_461.507)],
        ]
    );
    let phases = store
        .query("SELECT count(DISTINCT host) FROM v_endpoint_phases WHERE phase = 'close'")
        .unwrap();
    assert_eq!(phases.rows, vec![vec![Cell::Int(2)]]);
    drop(store);

    let again = peel_store::import_archives(&[archive_a], &merged).unwrap_err();
    assert!(
        matches!(&again, StoreError::AlreadyImported { run_id, host, .. } if run_id == "run-a" && host == "host-a"),
        "{again}"
    );
}

#[test]
fn a_tampered_archive_is_not_imported() {
    let root = tempfile::tempdir().unwrap();
    let dir = run_dir(root.path(), "r1", "host-a");
    let out = root.path().join("evidence.tar.zst");
    peel_store::create_archive(&dir, &out, &options()).unwrap();
    let mut tampered = members(&out);
    tampered.retain(|(name, _)| name != "playbook.toml");
    rewrite(&out, &tampered);
    let err = peel_store::import_archives(&[out], &root.path().join("merged.duckdb")).unwrap_err();
    assert!(matches!(err, StoreError::ArchiveTampered { .. }), "{err}");
    assert!(err.to_string().contains("missing: playbook.toml"), "{err}");
}

#[test]
fn redaction_cuts_payloads_masks_secrets_and_pseudonymizes_everywhere_consistently() {
    let root = tempfile::tempdir().unwrap();
    let dir = run_dir(root.path(), "r1", "host-a");
    let out = root.path().join("shareable.tar.zst");
    fs::write(
        dir.join("steps/1.stderr"),
        "> GET /db?token=s3cr3t HTTP/1.1\n> Cookie: sid=abc1\ncurl http://127.0.0.1:8000/db from 10.0.0.1\n",
    )
    .unwrap();
    let redact = CreateOptions { redact: true, pseudonymize_ips: true, ..options() };
    let created = peel_store::create_archive(&dir, &out, &redact).unwrap();
    let map_path = created.ip_map.clone().unwrap();
    assert_eq!(map_path, root.path().join("shareable.tar.zst.ipmap.json"));
    assert_eq!(fs::metadata(&map_path).unwrap().permissions().mode() & 0o777, 0o600);
    let redaction = created.manifest.redaction.as_ref().unwrap();
    assert_eq!((redaction.captures, redaction.packets, redaction.headers_masked), (1, 1, 2));
    assert!(peel_store::verify_archive(&out).unwrap().ok());

    let members = members(&out);
    assert!(!members.iter().any(|(name, _)| name.ends_with("ipmap.json")));
    let pcap = &members.iter().find(|(name, _)| name == "capture/lo-0.pcap").unwrap().1;
    let text = String::from_utf8_lossy(pcap);
    assert!(!text.contains("hunter2") && !text.contains("s3cr3t"), "{text}");
    assert!(text.contains("Authorization: **************"), "{text}");
    // Source and destination 192.0.2.1 / 192.0.2.2 are pseudonymized in the IP header.
    assert!(!pcap.windows(4).any(|w| w == [192, 0, 2, 1]));

    let map: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&map_path).unwrap()).unwrap();
    let pseudo_client = map["10.0.0.1"].as_str().unwrap().to_string();
    let db = root.path().join("extracted.duckdb");
    fs::write(&db, &members.iter().find(|(name, _)| name == "peel.duckdb").unwrap().1).unwrap();
    let store = Store::open(&db, Access::ReadOnly).unwrap();
    let clients =
        store.query("SELECT DISTINCT client_ip FROM connections WHERE conn_id = 1").unwrap();
    assert_eq!(clients.rows, vec![vec![Cell::Text(pseudo_client.clone())]]);
    let leaked = store
        .query("SELECT count(*) FROM connections WHERE client_ip = '10.0.0.1' OR server_ip LIKE '2001:db8%'")
        .unwrap();
    assert_eq!(leaked.rows, vec![vec![Cell::Int(0)]]);

    // URL paths: one pseudonym for /db in exchanges, load request URLs and classes, and the step
    // log; the query string is gone; the path map is kept next to the archive, not in it.
    let path_map = created.path_map.clone().unwrap();
    assert_eq!(path_map, root.path().join("shareable.tar.zst.pathmap.json"));
    assert!(!members.iter().any(|(name, _)| name.ends_with("pathmap.json")));
    let paths: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path_map).unwrap()).unwrap();
    let db_path = paths["/db"].as_str().unwrap().to_string();
    assert!(db_path.starts_with("/redacted-"), "{db_path}");
    let exchange_paths = store.query("SELECT DISTINCT path FROM exchanges").unwrap();
    assert_eq!(exchange_paths.rows, vec![vec![Cell::Text(db_path.clone())]]);
    let pseudo_loopback = map["127.0.0.1"].as_str().unwrap();
    let urls = store.query("SELECT DISTINCT url FROM load_requests").unwrap();
    assert_eq!(
        urls.rows,
        vec![vec![Cell::Text(format!("http://{pseudo_loopback}:8000{db_path}"))]]
    );
    let classes =
        store.query("SELECT count(*) FROM load_requests WHERE url_class = '/db'").unwrap();
    assert_eq!(classes.rows, vec![vec![Cell::Int(0)]]);
    let log = &members.iter().find(|(name, _)| name == "steps/1.stderr").unwrap().1;
    assert_eq!(
        String::from_utf8_lossy(log),
        format!(
            "> GET {db_path} HTTP/1.1\n> Cookie: ********\ncurl http://{pseudo_loopback}:8000{db_path} \
             from {pseudo_client}\n"
        )
    );
    let redaction = created.manifest.redaction.as_ref().unwrap();
    assert!(redaction.paths_pseudonymized);
    assert_eq!(redaction.step_logs, 2);
    assert!(redaction.database_values > 0);

    // The original evidence is untouched.
    let original = Store::open(&dir.join("peel.duckdb"), Access::ReadOnly).unwrap();
    let kept =
        original.query("SELECT count(*) FROM connections WHERE client_ip = '10.0.0.1'").unwrap();
    assert_eq!(kept.rows, vec![vec![Cell::Int(2)]]);
}

#[test]
fn the_ip_map_must_stay_outside_the_archived_folder() {
    let root = tempfile::tempdir().unwrap();
    let dir = run_dir(root.path(), "r1", "host-a");
    let redact = CreateOptions {
        redact: true,
        pseudonymize_ips: true,
        ip_map: Some(dir.join("map.json")),
        ..options()
    };
    let err =
        peel_store::create_archive(&dir, &root.path().join("x.tar.zst"), &redact).unwrap_err();
    assert!(err.to_string().contains("outside the folder"), "{err}");
}
