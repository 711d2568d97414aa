//! The ingest benchmark's worker (`cargo xtask bench store` runs it as separate processes):
//!
//! - `ingest_bench appender ROWS DB`: generates ROWS connection records and ingests them through
//!   peel-store's Appender sink (typed values written straight into DuckDB data chunks) into a new
//!   database (closed, so checkpointed).
//! - `ingest_bench write-csv ROWS CSV`: writes the same rows, same columns, as CSV (not timed).
//! - `ingest_bench read-csv CSV DB`: loads that CSV into a new database with DuckDB's `read_csv`.
//!
//! Both timed modes end with the same table in a closed database file, so the comparison is
//! "records in memory -> Appender" against "the same rows on disk -> DuckDB's CSV reader".

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::ExitCode;

use peel_store::{Access, Record, Scope, Store};
use peel_wire::records::{ConnState, ConnectionRecord, Protocol, Side};

const T0_NS: i64 = 1_795_575_600_000_000_000;

/// Connection `index` of the synthetic run: many short HTTP connections to one server.
fn connection(index: u64) -> ConnectionRecord {
    let syn = T0_NS + index as i64 * 2_000;
    let client = Ipv4Addr::new(10, (index >> 16) as u8, (index >> 8) as u8, index as u8);
    ConnectionRecord {
        conn_id: index,
        client_ip: IpAddr::V4(client),
        client_port: 1024 + (index % 60_000) as u16,
        server_ip: IpAddr::V4(Ipv4Addr::new(10, 255, 0, 1)),
        server_port: 8000,
        vlan: None,
        interface_id: 0,
        syn_ts_ns: Some(syn),
        handshake_us: Some(13.711 + (index % 7) as f64),
        synack_to_ack_us: Some(4.5),
        syn_retransmits: u32::from(index.is_multiple_of(97)),
        first_request_ts_ns: Some(syn + 20_000),
        request_wait_us: Some(6.25),
        server_us: Some(1_000.0 + (index % 1_000) as f64),
        response_us: Some(35.5),
        exchanges: 1,
        db_setup_us: None,
        idle_us: None,
        close_start_ts_ns: Some(syn + 2_000_000),
        close_us: Some(120.0 + (index % 13) as f64),
        closed_by: Some(if index.is_multiple_of(3) { Side::Client } else { Side::Server }),
        reset_by: None,
        reset_phase: None,
        half_closed: false,
        retransmits: u32::from(index.is_multiple_of(50)),
        out_of_order: 0,
        dup_acks: 0,
        zero_windows: 0,
        window_full: 0,
        bytes_c2s: 180,
        bytes_s2c: 2_048 + index % 512,
        first_ts_ns: syn,
        last_ts_ns: syn + 2_200_000,
        lifetime_us: 2_200.0,
        packets: 10,
        state: ConnState::Complete,
        protocol: Protocol::Http,
        http_requests: 1,
        http_responses: 1,
        expired: false,
    }
}

fn scope() -> Scope {
    Scope {
        run_id: "bench".to_string(),
        host: "bench-host".to_string(),
        stage: "reproduce".to_string(),
    }
}

fn appender(rows: u64, db: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let store = Store::open(db, Access::ReadWrite)?;
    let mut sink = store.sink::<ConnectionRecord>(&scope())?;
    for index in 0..rows {
        sink.push(&connection(index))?;
    }
    sink.finish()?;
    store.close()?;
    Ok(())
}

fn opt<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map(|value| value.to_string()).unwrap_or_default()
}

fn write_csv(rows: u64, csv: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let mut out = BufWriter::new(File::create(csv)?);
    let mut header = vec!["run_id", "host", "stage"];
    header.extend_from_slice(<ConnectionRecord as Record>::COLUMNS);
    writeln!(out, "{}", header.join(","))?;
    let scope = scope();
    for index in 0..rows {
        let c = connection(index);
        let fields = [
            scope.run_id.clone(),
            scope.host.clone(),
            scope.stage.clone(),
            c.conn_id.to_string(),
            c.client_ip.to_string(),
            c.client_port.to_string(),
            c.server_ip.to_string(),
            c.server_port.to_string(),
            opt(c.vlan),
            c.interface_id.to_string(),
            opt(c.syn_ts_ns),
            opt(c.handshake_us),
            opt(c.synack_to_ack_us),
            c.syn_retransmits.to_string(),
            opt(c.first_request_ts_ns),
            opt(c.request_wait_us),
            opt(c.server_us),
            opt(c.response_us),
            c.exchanges.to_string(),
            opt(c.db_setup_us),
            opt(c.idle_us),
            opt(c.close_start_ts_ns),
            opt(c.close_us),
            opt(c.closed_by.map(Side::as_str)),
            opt(c.reset_by.map(Side::as_str)),
            opt(c.reset_phase.map(|phase| phase.as_str())),
            c.half_closed.to_string(),
            c.retransmits.to_string(),
            c.out_of_order.to_string(),
            c.dup_acks.to_string(),
            c.zero_windows.to_string(),
            c.window_full.to_string(),
            c.bytes_c2s.to_string(),
            c.bytes_s2c.to_string(),
            c.first_ts_ns.to_string(),
            c.last_ts_ns.to_string(),
            c.lifetime_us.to_string(),
            c.packets.to_string(),
            c.state.as_str().to_string(),
            c.protocol.as_str().to_string(),
            c.http_requests.to_string(),
            c.http_responses.to_string(),
            c.expired.to_string(),
        ];
        writeln!(out, "{}", fields.join(","))?;
    }
    out.flush()?;
    Ok(())
}

fn read_csv(csv: &Path, db: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let store = Store::open(db, Access::ReadWrite)?;
    let path = csv.to_string_lossy().replace('\'', "''");
    store.query(&format!(
        "INSERT INTO connections BY NAME SELECT * FROM read_csv('{path}', header = true)"
    ))?;
    store.close()?;
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["appender", rows, db] => {
            rows.parse::<u64>().map_err(Into::into).and_then(|rows| appender(rows, Path::new(db)))
        }
        ["write-csv", rows, csv] => {
            rows.parse::<u64>().map_err(Into::into).and_then(|rows| write_csv(rows, Path::new(csv)))
        }
        ["read-csv", csv, db] => read_csv(Path::new(csv), Path::new(db)),
        _ => {
            eprintln!(
                "usage: ingest_bench appender ROWS DB | write-csv ROWS CSV | read-csv CSV DB"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ingest_bench: {err}");
            ExitCode::from(3)
        }
    }
}
