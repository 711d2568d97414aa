//! Issue 6's acceptance round trip through the binary: analyze a capture into a database
//! (`peel analyze FILE --db`), query it with `peel sql`, export it to Parquet (hive-partitioned,
//! through `peel archive create --parquet`, and one table with DuckDB's COPY), read the Parquet
//! back with DuckDB (`peel archive import`, and `read_parquet` through `peel sql`), and get the
//! same rows.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use peel_wire::records::Side;
use peel_wire::synth::{PcapWriter, TcpFlow};

const T0: i64 = 1_700_000_000_000_000_000;
const MS: i64 = 1_000_000;

fn peel(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_peel")).args(args).output().expect("peel runs")
}

fn ok(args: &[&str]) -> String {
    let output = peel(args);
    assert!(
        output.status.success(),
        "peel {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// Four HTTP connections (two paths, one with a non-ASCII query, one keep-alive with two
/// exchanges), one reset mid-request, and one database connection without HTTP.
fn write_capture(dir: &Path) -> PathBuf {
    let mut w = PcapWriter::new(Vec::new()).unwrap();
    let requests: [&[&[u8]]; 4] = [
        &[b"GET /orders/42 HTTP/1.1\r\nHost: app\r\n\r\n"],
        &[b"GET /search?q=z%C3%BCrich HTTP/1.1\r\nHost: app\r\n\r\n"],
        &[b"POST /orders HTTP/1.1\r\nHost: app\r\nContent-Length: 0\r\n\r\n"],
        &[b"GET /a HTTP/1.1\r\nHost: app\r\n\r\n", b"GET /b HTTP/1.1\r\nHost: app\r\n\r\n"],
    ];
    for (i, exchanges) in requests.iter().enumerate() {
        let start = T0 + i as i64 * 100 * MS;
        let mut f = TcpFlow::new(([10, 0, 0, 1], 40_000 + i as u16), ([10, 0, 0, 2], 8000), 100, 0);
        f.syn(&mut w, start).unwrap();
        f.syn_ack(&mut w, start + 10_000, 5000).unwrap();
        f.ack(&mut w, start + 20_000, Side::Client).unwrap();
        let mut at = start + MS;
        for request in exchanges.iter() {
            f.data(&mut w, at, Side::Client, request).unwrap();
            let response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
            f.data(&mut w, at + (2 + i as i64) * MS, Side::Server, response).unwrap();
            at += 10 * MS;
        }
        f.fin(&mut w, at, Side::Client).unwrap();
        f.ack(&mut w, at + MS, Side::Server).unwrap();
        f.fin(&mut w, at + 5 * MS, Side::Server).unwrap();
        f.ack(&mut w, at + 6 * MS, Side::Client).unwrap();
    }
    let mut db = TcpFlow::new(([10, 0, 0, 1], 50_000), ([10, 0, 0, 3], 5432), 1, 0);
    db.syn(&mut w, T0 + 900 * MS).unwrap();
    db.syn_ack(&mut w, T0 + 901 * MS, 7).unwrap();
    db.ack(&mut w, T0 + 902 * MS, Side::Client).unwrap();
    let path = dir.join("app.pcap");
    std::fs::write(&path, w.into_inner().unwrap()).unwrap();
    path
}

const CONNECTIONS: &str = "SELECT * EXCLUDE (run_id, host) FROM connections ORDER BY conn_id";
const EXCHANGES: &str = "SELECT * EXCLUDE (run_id, host) FROM exchanges ORDER BY conn_id, seq";

#[test]
fn analyze_to_db_sql_parquet_and_back_gives_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    let capture = write_capture(dir.path());
    let db = dir.path().join("run.duckdb");
    let db_arg = db.to_str().unwrap();
    ok(&["analyze", capture.to_str().unwrap(), "--db", db_arg, "--run-id", "rt"]);

    // The rows as `peel sql` shows them.
    let connections = ok(&["sql", db_arg, "--format", "csv", CONNECTIONS]);
    let exchanges = ok(&["sql", db_arg, "--format", "csv", EXCHANGES]);
    assert_eq!(connections.lines().count(), 1 + 5, "{connections}");
    assert_eq!(exchanges.lines().count(), 1 + 5, "{exchanges}");
    assert!(exchanges.contains("/search?q=z%C3%BCrich"), "{exchanges}");
    let counts = ok(&[
        "sql",
        db_arg,
        "--format",
        "csv",
        "SELECT count(*), count(DISTINCT host), min(run_id) FROM connections",
    ]);
    assert!(counts.ends_with(",1,rt\n"), "{counts}");

    // Hive-partitioned Parquet through the archive, read back by DuckDB into a new database.
    let archive = dir.path().join("run.tar.zst");
    ok(&["archive", "create", db_arg, "--out", archive.to_str().unwrap(), "--parquet"]);
    let merged = dir.path().join("merged.duckdb");
    let merged_arg = merged.to_str().unwrap();
    ok(&["archive", "import", archive.to_str().unwrap(), "--db", merged_arg]);
    assert_eq!(ok(&["sql", merged_arg, "--format", "csv", CONNECTIONS]), connections);
    assert_eq!(ok(&["sql", merged_arg, "--format", "csv", EXCHANGES]), exchanges);
    let keys = "SELECT DISTINCT run_id, host FROM connections ORDER BY ALL";
    assert_eq!(
        ok(&["sql", merged_arg, "--format", "csv", keys]),
        ok(&["sql", db_arg, "--format", "csv", keys])
    );

    // One table to a plain Parquet file with DuckDB's COPY (read-only database), and read back
    // with read_parquet.
    let parquet = dir.path().join("connections.parquet");
    let parquet_sql = parquet.to_str().unwrap().replace('\'', "''");
    ok(&["sql", db_arg, &format!("COPY ({CONNECTIONS}) TO '{parquet_sql}' (FORMAT parquet)")]);
    let back = ok(&[
        "sql",
        db_arg,
        "--format",
        "csv",
        &format!("SELECT * FROM read_parquet('{parquet_sql}') ORDER BY conn_id"),
    ]);
    assert_eq!(back, connections);
}
