//! `peel sql`: any question about a run, in SQL, over its DuckDB file. Opens the database
//! read-only unless `--write` is given; prints each statement's result as an aligned table, CSV or
//! JSON. A bad query exits 2 with DuckDB's own message, including the line and caret it points at.

use std::io::{self, IsTerminal, Read, Write};
use std::path::PathBuf;

use anyhow::Context;
use peel_store::{Access, Cell, QueryResult, Store, StoreError};

use crate::exit::{Fail, Outcome};

/// Run SQL over a run database (read-only unless --write).
///
/// The query comes from the argument, or from standard input when the argument is absent or `-`;
/// several statements separated by `;` each print their result. Tables, views (v_endpoint_phases,
/// v_slowest_connections, v_socket_states, v_counter_rates, v_churn, v_run_metrics, v_run_compare)
/// and columns are documented in docs/schema.md.
///
/// Examples:
///   peel sql run/peel.duckdb "SELECT * FROM v_endpoint_phases WHERE phase = 'close'"
///   echo "SELECT count(*) FROM connections; SELECT * FROM v_churn" | peel sql run/peel.duckdb
///   peel sql run/peel.duckdb --format csv "SELECT * FROM connections" > connections.csv
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The DuckDB file of a run (or of merged archives).
    db: PathBuf,
    /// SQL to run; read from standard input when absent or `-`.
    query: Option<String>,
    /// Output format. JSON: an array with one object per statement,
    /// `{"sql", "columns": [{"name", "type"}], "rows": [[...]]}`; timestamps as RFC 3339 strings.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Allow statements that change the database (it is opened read-only otherwise).
    #[arg(long)]
    write: bool,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Table,
    Csv,
    Json,
}

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let script = match args.query.as_deref() {
        Some(query) if query != "-" => query.to_string(),
        _ => read_stdin()?,
    };
    let statements = peel_store::split_statements(&script)
        .map_err(|err| Fail::usage(err).hint("close the quote or comment"))?;
    if statements.is_empty() {
        return Err(Fail::usage("no SQL statement given")
            .hint("pass a query as the second argument or on standard input")
            .into());
    }
    let access = if args.write { Access::ReadWrite } else { Access::ReadOnly };
    let store = Store::open(&args.db, access).map_err(|err| open_failure(err, &args.db))?;

    let mut stdout = io::stdout().lock();
    let mut json_results = Vec::new();
    for (index, statement) in statements.iter().enumerate() {
        let result = store
            .query(statement.sql)
            .map_err(|err| query_failure(err, index, statements.len(), args.write))?;
        match args.format {
            Format::Table => {
                if index > 0 {
                    writeln!(stdout)?;
                }
                write_table(&mut stdout, &result)?;
            }
            Format::Csv => {
                if index > 0 {
                    writeln!(stdout)?;
                }
                write_csv(&mut stdout, &result)?;
            }
            Format::Json => json_results.push(json_result(statement.sql, &result)),
        }
    }
    if args.format == Format::Json {
        serde_json::to_writer_pretty(&mut stdout, &json_results)?;
        writeln!(stdout)?;
    }
    stdout.flush()?;
    drop(stdout);
    if args.write {
        store.close().context("closing the database")?;
    }
    Ok(Outcome::Success)
}

fn read_stdin() -> anyhow::Result<String> {
    let mut stdin = io::stdin();
    if stdin.is_terminal() {
        return Err(Fail::usage("no query given and standard input is a terminal")
            .hint("peel sql DB \"SELECT ...\", or pipe the SQL in")
            .into());
    }
    let mut script = String::new();
    stdin.read_to_string(&mut script).context("reading SQL from standard input")?;
    Ok(script)
}

fn open_failure(err: StoreError, db: &std::path::Path) -> anyhow::Error {
    match err {
        StoreError::NotFound { .. } => Fail::usage(err)
            .hint("check the path (peel sql never creates a database without --write)")
            .into(),
        StoreError::NeedsMigration { .. } => Fail::usage(err)
            .hint(format!("peel sql {} --write \"SELECT 1\" migrates it", db.display()))
            .into(),
        StoreError::NotPeel { .. }
        | StoreError::SchemaTooNew { .. }
        | StoreError::SchemaTooOld { .. } => Fail::usage(err).into(),
        other => anyhow::Error::new(other),
    }
}

fn query_failure(err: StoreError, index: usize, statements: usize, write: bool) -> anyhow::Error {
    let StoreError::Query { message, .. } = &err else {
        return anyhow::Error::new(err);
    };
    let message = if statements > 1 {
        format!("statement {} of {statements}: {message}", index + 1)
    } else {
        message.clone()
    };
    let mut fail = Fail::usage(message);
    if !write && message_mentions_read_only(&err) {
        fail = fail.hint("the database is opened read-only; add --write to change it");
    }
    fail.into()
}

fn message_mentions_read_only(err: &StoreError) -> bool {
    err.to_string().to_lowercase().contains("read-only")
}

/// Text of a cell in a table: NULL spelled out, everything else as [`Cell`] displays it.
fn table_text(cell: &Cell) -> String {
    match cell {
        Cell::Null => "NULL".to_string(),
        other => other.to_string(),
    }
}

/// An aligned table: header, rule, rows (numbers right-aligned), and a row count.
fn write_table(out: &mut impl Write, result: &QueryResult) -> io::Result<()> {
    if result.columns.is_empty() {
        return writeln!(out, "(no result columns)");
    }
    let texts: Vec<Vec<String>> =
        result.rows.iter().map(|row| row.iter().map(table_text).collect()).collect();
    let mut widths: Vec<usize> =
        result.columns.iter().map(|column| column.name.chars().count()).collect();
    for row in &texts {
        for (width, text) in widths.iter_mut().zip(row) {
            *width = (*width).max(text.chars().count());
        }
    }
    let numeric: Vec<bool> = (0..result.columns.len())
        .map(|index| {
            result.rows.iter().all(|row| row[index].is_numeric() || row[index].is_null())
                && result.rows.iter().any(|row| row[index].is_numeric())
        })
        .collect();
    let header: Vec<String> = result
        .columns
        .iter()
        .zip(&widths)
        .zip(&numeric)
        .map(|((column, &width), &right)| pad(&column.name, width, right))
        .collect();
    writeln!(out, "{}", header.join("  ").trim_end())?;
    let rule: Vec<String> = widths.iter().map(|&width| "-".repeat(width)).collect();
    writeln!(out, "{}", rule.join("  "))?;
    for row in &texts {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .zip(&numeric)
            .map(|((text, &width), &right)| pad(text, width, right))
            .collect();
        writeln!(out, "{}", cells.join("  ").trim_end())?;
    }
    let rows = result.rows.len();
    writeln!(out, "({rows} row{})", if rows == 1 { "" } else { "s" })
}

fn pad(text: &str, width: usize, right: bool) -> String {
    let fill = " ".repeat(width.saturating_sub(text.chars().count()));
    if right {
        format!("{fill}{text}")
    } else {
        format!("{text}{fill}")
    }
}

/// RFC 4180 CSV with a header row; NULL is an empty field.
fn write_csv(out: &mut impl Write, result: &QueryResult) -> io::Result<()> {
    let header: Vec<String> = result.columns.iter().map(|column| csv_field(&column.name)).collect();
    writeln!(out, "{}", header.join(","))?;
    for row in &result.rows {
        let fields: Vec<String> = row.iter().map(|cell| csv_field(&cell.to_string())).collect();
        writeln!(out, "{}", fields.join(","))?;
    }
    Ok(())
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

fn json_result(sql: &str, result: &QueryResult) -> serde_json::Value {
    let columns: Vec<serde_json::Value> = result
        .columns
        .iter()
        .map(|column| serde_json::json!({ "name": column.name, "type": column.type_name }))
        .collect();
    let rows: Vec<serde_json::Value> = result
        .rows
        .iter()
        .map(|row| serde_json::Value::Array(row.iter().map(json_cell).collect()))
        .collect();
    serde_json::json!({ "sql": sql, "columns": columns, "rows": rows })
}

fn json_cell(cell: &Cell) -> serde_json::Value {
    match cell {
        Cell::Null => serde_json::Value::Null,
        Cell::Bool(value) => (*value).into(),
        Cell::Int(value) => (*value).into(),
        Cell::UInt(value) => (*value).into(),
        Cell::Float(value) => {
            serde_json::Number::from_f64(*value).map_or(serde_json::Value::Null, Into::into)
        }
        Cell::Text(text) => text.clone().into(),
        Cell::TimestampNs(_) => cell.to_string().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peel_store::Column;

    fn result() -> QueryResult {
        QueryResult {
            columns: vec![
                Column { name: "endpoint".into(), type_name: "VARCHAR".into() },
                Column { name: "p99_us".into(), type_name: "DOUBLE".into() },
            ],
            rows: vec![
                vec![Cell::Text("10.0.0.2:8000".into()), Cell::Float(826461.507)],
                vec![Cell::Text("a,\"b\"".into()), Cell::Null],
            ],
        }
    }

    #[test]
    fn tables_align_columns_and_right_align_numbers() {
        let mut out = Vec::new();
        write_table(&mut out, &result()).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "endpoint           p99_us\n\
             -------------  ----------\n\
             10.0.0.2:8000  826461.507\n\
             a,\"b\"                NULL\n\
             (2 rows)\n"
        );
    }

    #[test]
    fn csv_quotes_what_needs_quoting_and_leaves_null_empty() {
        let mut out = Vec::new();
        write_csv(&mut out, &result()).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "endpoint,p99_us\n10.0.0.2:8000,826461.507\n\"a,\"\"b\"\"\",\n"
        );
    }

    #[test]
    fn json_keeps_types_and_spells_timestamps_out() {
        let mut value = result();
        value.rows.push(vec![Cell::TimestampNs(0), Cell::Int(3)]);
        let json = json_result("SELECT 1", &value);
        assert_eq!(json["columns"][1]["type"], "DOUBLE");
        assert_eq!(json["rows"][0][1], 826461.507);
        assert_eq!(json["rows"][1][1], serde_json::Value::Null);
        assert_eq!(json["rows"][2][0], "1970-01-01T00:00:00.000000000Z");
    }
}
