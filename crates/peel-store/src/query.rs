//! Query results as plain data: column names and DuckDB type names, and rows of typed [`Cell`]s,
//! for `peel sql`, reports and the findings rules. Nothing here renders; the binary does.
//!
//! Also [`split_statements`], which cuts a script into statements at top-level semicolons (quotes,
//! quoted identifiers, dollar quotes and comments respected) so each statement's result can be
//! shown and each error can name its statement.

use std::fmt;

use duckdb::core::LogicalTypeId;
use duckdb::types::{TimeUnit, Value, ValueRef};
use serde::Serialize;

use crate::error::{Result, StoreError};

/// One result column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Column {
    pub name: String,
    /// DuckDB's type name (`BIGINT`, `DOUBLE`, `VARCHAR`, `TIMESTAMP_NS`, ...).
    pub type_name: String,
}

/// One value of a result.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Cell {
    Null,
    Bool(bool),
    /// Every signed or unsigned integer that fits in `i64` (HUGEINT sums included).
    Int(i64),
    /// Unsigned integers above `i64::MAX`.
    UInt(u64),
    /// FLOAT, DOUBLE, and DECIMAL (converted).
    Float(f64),
    /// VARCHAR, and anything without a numeric meaning, rendered as DuckDB prints it (dates, times,
    /// intervals, lists, structs, blobs as hex, integers beyond 64 bits).
    Text(String),
    /// TIMESTAMP of any precision, as epoch nanoseconds.
    TimestampNs(i64),
}

impl Cell {
    /// The number in this cell, if it holds one.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Cell::Int(value) => Some(value as f64),
            Cell::UInt(value) => Some(value as f64),
            Cell::Float(value) => Some(value),
            Cell::TimestampNs(value) => Some(value as f64),
            Cell::Bool(_) | Cell::Null | Cell::Text(_) => None,
        }
    }

    /// The integer in this cell, if it holds one.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Cell::Int(value) | Cell::TimestampNs(value) => Some(value),
            Cell::UInt(value) => i64::try_from(value).ok(),
            _ => None,
        }
    }

    /// The text in this cell, if it holds text.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Cell::Text(text) => Some(text),
            _ => None,
        }
    }

    /// Whether the cell is SQL NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Cell::Null)
    }

    /// Whether the value is a number (tables right-align numbers).
    pub fn is_numeric(&self) -> bool {
        matches!(self, Cell::Int(_) | Cell::UInt(_) | Cell::Float(_))
    }
}

impl fmt::Display for Cell {
    /// The text a table or CSV shows: NULL as an empty string, timestamps in UTC RFC 3339 with
    /// nanoseconds, floats with Rust's shortest round-trip form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cell::Null => Ok(()),
            Cell::Bool(value) => write!(f, "{value}"),
            Cell::Int(value) => write!(f, "{value}"),
            Cell::UInt(value) => write!(f, "{value}"),
            Cell::Float(value) => write!(f, "{value}"),
            Cell::Text(text) => f.write_str(text),
            Cell::TimestampNs(ns) => f.write_str(&format_timestamp_ns(*ns)),
        }
    }
}

/// The result of one statement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueryResult {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Cell>>,
}

impl QueryResult {
    /// Index of a column by name.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|column| column.name == name)
    }

    /// The cell of `row` in the column called `name`.
    pub fn get(&self, row: usize, name: &str) -> Option<&Cell> {
        let index = self.column_index(name)?;
        self.rows.get(row)?.get(index)
    }
}

/// Runs one statement and collects its result.
pub(crate) fn run_statement(
    connection: &duckdb::Connection,
    sql: &str,
    statement: usize,
) -> Result<QueryResult> {
    let query_err = |source: duckdb::Error| StoreError::Query {
        statement,
        sql: sql.to_string(),
        message: duckdb_message(&source),
    };
    let mut prepared = connection.prepare(sql).map_err(query_err)?;
    let mut rows = prepared.query([]).map_err(query_err)?;
    let Some(executed) = rows.as_ref() else {
        return Ok(QueryResult { columns: Vec::new(), rows: Vec::new() });
    };
    let columns: Vec<Column> = executed
        .column_names()
        .into_iter()
        .enumerate()
        .map(|(index, name)| Column {
            name,
            type_name: type_name(executed.column_logical_type(index).id()),
        })
        .collect();
    let mut result_rows = Vec::new();
    while let Some(row) = rows.next().map_err(query_err)? {
        let mut cells = Vec::with_capacity(columns.len());
        for index in 0..columns.len() {
            cells.push(cell(row.get_ref(index).map_err(query_err)?));
        }
        result_rows.push(cells);
    }
    Ok(QueryResult { columns, rows: result_rows })
}

/// DuckDB's own message (with its `LINE n:` and caret lines when it gives a position).
pub(crate) fn duckdb_message(error: &duckdb::Error) -> String {
    match error {
        duckdb::Error::DuckDBFailure(_, Some(message)) => message.clone(),
        other => other.to_string(),
    }
}

fn cell(value: ValueRef<'_>) -> Cell {
    match value {
        ValueRef::Null => Cell::Null,
        ValueRef::Boolean(value) => Cell::Bool(value),
        ValueRef::TinyInt(value) => Cell::Int(value.into()),
        ValueRef::SmallInt(value) => Cell::Int(value.into()),
        ValueRef::Int(value) => Cell::Int(value.into()),
        ValueRef::BigInt(value) => Cell::Int(value),
        ValueRef::UTinyInt(value) => Cell::Int(value.into()),
        ValueRef::USmallInt(value) => Cell::Int(value.into()),
        ValueRef::UInt(value) => Cell::Int(value.into()),
        ValueRef::UBigInt(value) => match i64::try_from(value) {
            Ok(value) => Cell::Int(value),
            Err(_) => Cell::UInt(value),
        },
        ValueRef::HugeInt(value) => match i64::try_from(value) {
            Ok(value) => Cell::Int(value),
            Err(_) => Cell::Text(value.to_string()),
        },
        ValueRef::UHugeInt(value) => match i64::try_from(value) {
            Ok(value) => Cell::Int(value),
            Err(_) => Cell::Text(value.to_string()),
        },
        ValueRef::Float(value) => Cell::Float(value.into()),
        ValueRef::Double(value) => Cell::Float(value),
        ValueRef::Decimal(decimal) => {
            let text = decimal.to_string();
            text.parse::<f64>().map(Cell::Float).unwrap_or(Cell::Text(text))
        }
        ValueRef::Timestamp(unit, value) => Cell::TimestampNs(to_ns(unit, value)),
        ValueRef::Text(bytes) => Cell::Text(String::from_utf8_lossy(bytes).into_owned()),
        other => Cell::Text(render_value(&other.to_owned())),
    }
}

fn to_ns(unit: TimeUnit, value: i64) -> i64 {
    match unit {
        TimeUnit::Second => value.saturating_mul(1_000_000_000),
        TimeUnit::Millisecond => value.saturating_mul(1_000_000),
        TimeUnit::Microsecond => value.saturating_mul(1_000),
        TimeUnit::Nanosecond => value,
    }
}

/// Renders the values that have no [`Cell`] variant of their own, close to how DuckDB prints them.
fn render_value(value: &Value) -> String {
    match value {
        Value::Null => "NULL".to_string(),
        Value::Boolean(value) => value.to_string(),
        Value::TinyInt(value) => value.to_string(),
        Value::SmallInt(value) => value.to_string(),
        Value::Int(value) => value.to_string(),
        Value::BigInt(value) => value.to_string(),
        Value::HugeInt(value) => value.to_string(),
        Value::UHugeInt(value) => value.to_string(),
        Value::UTinyInt(value) => value.to_string(),
        Value::USmallInt(value) => value.to_string(),
        Value::UInt(value) => value.to_string(),
        Value::UBigInt(value) => value.to_string(),
        Value::Float(value) => value.to_string(),
        Value::Double(value) => value.to_string(),
        Value::Decimal(value) => value.to_string(),
        Value::Timestamp(unit, value) => format_timestamp_ns(to_ns(*unit, *value)),
        Value::Text(text) => text.clone(),
        Value::Blob(bytes) | Value::Geometry(bytes) => format!("\\x{}", hex::encode(bytes)),
        Value::Date32(days) => format_date(i64::from(*days)),
        Value::Time64(unit, value) => format_time_of_day_ns(to_ns(*unit, *value)),
        Value::Interval { months, days, nanos } => {
            format!("{months} months {days} days {} us", nanos / 1_000)
        }
        Value::List(items) | Value::Array(items) => {
            let items: Vec<String> = items.iter().map(render_value).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Struct(fields) => {
            let fields: Vec<String> = fields
                .iter()
                .map(|(name, value)| format!("'{name}': {}", render_value(value)))
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
        Value::Map(entries) => {
            let entries: Vec<String> = entries
                .iter()
                .map(|(key, value)| format!("{}={}", render_value(key), render_value(value)))
                .collect();
            format!("{{{}}}", entries.join(", "))
        }
        Value::Enum(text) => text.clone(),
        Value::Union(value) => render_value(value),
        other => format!("{other:?}"),
    }
}

/// `2026-11-25T03:00:00.123456789Z` for epoch nanoseconds (proleptic Gregorian, UTC).
pub fn format_timestamp_ns(ns: i64) -> String {
    let seconds = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400);
    format!(
        "{}T{:02}:{:02}:{:02}.{nanos:09}Z",
        format_date(days),
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    )
}

fn format_time_of_day_ns(ns: i64) -> String {
    let seconds = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    format!("{:02}:{:02}:{:02}.{nanos:09}", seconds / 3600, seconds % 3600 / 60, seconds % 60)
}

/// `YYYY-MM-DD` of a day count since 1970-01-01 (Howard Hinnant's civil-from-days).
fn format_date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

fn type_name(id: LogicalTypeId) -> String {
    let name = match id {
        LogicalTypeId::Boolean => "BOOLEAN",
        LogicalTypeId::Tinyint => "TINYINT",
        LogicalTypeId::Smallint => "SMALLINT",
        LogicalTypeId::Integer => "INTEGER",
        LogicalTypeId::Bigint => "BIGINT",
        LogicalTypeId::UTinyint => "UTINYINT",
        LogicalTypeId::USmallint => "USMALLINT",
        LogicalTypeId::UInteger => "UINTEGER",
        LogicalTypeId::UBigint => "UBIGINT",
        LogicalTypeId::Float => "FLOAT",
        LogicalTypeId::Double => "DOUBLE",
        LogicalTypeId::Timestamp => "TIMESTAMP",
        LogicalTypeId::TimestampS => "TIMESTAMP_S",
        LogicalTypeId::TimestampMs => "TIMESTAMP_MS",
        LogicalTypeId::TimestampNs => "TIMESTAMP_NS",
        LogicalTypeId::TimestampTZ => "TIMESTAMP WITH TIME ZONE",
        LogicalTypeId::Date => "DATE",
        LogicalTypeId::Time => "TIME",
        LogicalTypeId::Interval => "INTERVAL",
        LogicalTypeId::Hugeint => "HUGEINT",
        LogicalTypeId::Varchar => "VARCHAR",
        LogicalTypeId::Blob => "BLOB",
        LogicalTypeId::Decimal => "DECIMAL",
        LogicalTypeId::Enum => "ENUM",
        LogicalTypeId::List => "LIST",
        LogicalTypeId::Struct => "STRUCT",
        LogicalTypeId::Map => "MAP",
        LogicalTypeId::Uuid => "UUID",
        other => return format!("{other:?}").to_uppercase(),
    };
    name.to_string()
}

/// One statement of a script: its text and its byte offset in the script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatementText<'a> {
    pub sql: &'a str,
    pub offset: usize,
}

/// Splits a SQL script at top-level `;` into trimmed, non-empty statements.
///
/// Single-quoted strings, double-quoted identifiers, `$tag$` dollar quotes, `--` line comments and
/// `/* */` block comments are skipped over, so a `;` inside them does not split. A statement that
/// is only comments is dropped.
pub fn split_statements(script: &str) -> Result<Vec<StatementText<'_>>> {
    let bytes = script.as_bytes();
    let mut statements = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\'' | b'"' => {
                let quote = bytes[i];
                let opened = i;
                i += 1;
                loop {
                    match bytes.get(i) {
                        None => {
                            let what = if quote == b'\'' { "a string" } else { "a quoted name" };
                            return Err(StoreError::UnterminatedSql { what, offset: opened });
                        }
                        // A doubled quote is an escaped quote inside the string.
                        Some(&b) if b == quote && bytes.get(i + 1) == Some(&quote) => i += 2,
                        Some(&b) if b == quote => break,
                        Some(_) => i += 1,
                    }
                }
                i += 1;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let opened = i;
                let Some(end) = script[i + 2..].find("*/") else {
                    return Err(StoreError::UnterminatedSql { what: "a comment", offset: opened });
                };
                i += 2 + end + 2;
            }
            b'$' => {
                let tag_end = script[i + 1..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .map(|len| i + 1 + len);
                match tag_end {
                    Some(tag_end) if bytes[tag_end] == b'$' => {
                        let tag = &script[i..=tag_end];
                        let opened = i;
                        let Some(close) = script[tag_end + 1..].find(tag) else {
                            return Err(StoreError::UnterminatedSql {
                                what: "a dollar-quoted string",
                                offset: opened,
                            });
                        };
                        i = tag_end + 1 + close + tag.len();
                    }
                    _ => i += 1,
                }
            }
            b';' => {
                push_statement(script, start, i, &mut statements);
                i += 1;
                start = i;
            }
            _ => i += 1,
        }
    }
    push_statement(script, start, script.len(), &mut statements);
    Ok(statements)
}

fn push_statement<'a>(
    script: &'a str,
    start: usize,
    end: usize,
    statements: &mut Vec<StatementText<'a>>,
) {
    let text = &script[start..end];
    let trimmed = text.trim_start();
    let offset = start + (text.len() - trimmed.len());
    let sql = trimmed.trim_end();
    if sql.is_empty() || only_comments(sql) {
        return;
    }
    statements.push(StatementText { sql, offset });
}

fn only_comments(sql: &str) -> bool {
    let mut rest = sql.trim_start();
    loop {
        if rest.is_empty() {
            return true;
        }
        if let Some(after) = rest.strip_prefix("--") {
            rest = after.find('\n').map_or("", |end| &after[end..]).trim_start();
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.find("*/").map_or("", |end| &after[end + 2..]).trim_start();
        } else {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(script: &str) -> Vec<&str> {
        split_statements(script).unwrap().into_iter().map(|s| s.sql).collect()
    }

    #[test]
    fn splits_at_top_level_semicolons_only() {
        let cases: &[(&str, &[&str])] = &[
            ("SELECT 1", &["SELECT 1"]),
            ("SELECT 1; SELECT 2;", &["SELECT 1", "SELECT 2"]),
            ("SELECT ';'; SELECT 2", &["SELECT ';'", "SELECT 2"]),
            ("SELECT 'it''s;'", &["SELECT 'it''s;'"]),
            ("SELECT 1 AS \"a;b\"", &["SELECT 1 AS \"a;b\""]),
            ("SELECT 1 -- a; comment\n; SELECT 2", &["SELECT 1 -- a; comment", "SELECT 2"]),
            ("SELECT /* ; */ 1", &["SELECT /* ; */ 1"]),
            ("SELECT $$a;b$$; SELECT $x$;$x$", &["SELECT $$a;b$$", "SELECT $x$;$x$"]),
            ("SELECT $1", &["SELECT $1"]),
            (" ;; -- only a comment\n", &[]),
            ("", &[]),
        ];
        for (script, expected) in cases {
            assert_eq!(split(script), *expected, "script {script:?}");
        }
    }

    #[test]
    fn statement_offsets_point_into_the_script() {
        let script = "SELECT 1;\n  SELECT 2";
        let statements = split_statements(script).unwrap();
        assert_eq!(statements[1].offset, 12);
        assert_eq!(&script[statements[1].offset..], "SELECT 2");
    }

    #[test]
    fn unterminated_quotes_and_comments_are_errors_with_their_offset() {
        let cases: &[(&str, &str, usize)] = &[
            ("SELECT 'abc", "a string", 7),
            ("SELECT \"abc", "a quoted name", 7),
            ("SELECT 1 /* x", "a comment", 9),
            ("SELECT $q$ x", "a dollar-quoted string", 7),
        ];
        for (script, expected_what, expected_offset) in cases {
            match split_statements(script) {
                Err(StoreError::UnterminatedSql { what, offset }) => {
                    assert_eq!((what, offset), (*expected_what, *expected_offset), "{script}");
                }
                other => panic!("{script}: expected an unterminated error, got {other:?}"),
            }
        }
    }

    #[test]
    fn timestamps_format_as_utc_with_nanoseconds() {
        assert_eq!(format_timestamp_ns(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            format_timestamp_ns(1_764_039_600_123_456_789),
            "2025-11-25T03:00:00.123456789Z"
        );
        assert_eq!(format_timestamp_ns(-1), "1969-12-31T23:59:59.999999999Z");
        assert_eq!(format_date(19_052), "2022-03-01");
    }
}
