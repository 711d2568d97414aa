//! Reading peel-store's query results by column name, with getters that turn a wrong type or a
//! missing column into an error naming the column (a rule's SQL and its Rust must agree).
//!
//! The rules only ever read small aggregates (one row per endpoint, class or snapshot).

use peel_store::{Cell, QueryResult};

use crate::error::FindingsError;

/// One row of a query result, read by column name.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Row<'a> {
    result: &'a QueryResult,
    cells: &'a [Cell],
}

/// A query result as the rules read it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Table(pub QueryResult);

impl Table {
    /// The rows, each readable by column name.
    pub fn iter(&self) -> impl Iterator<Item = Row<'_>> {
        let result = &self.0;
        result.rows.iter().map(move |cells| Row { result, cells })
    }

    pub fn len(&self) -> usize {
        self.0.rows.len()
    }
}

impl<'a> Row<'a> {
    fn cell(&self, column: &str) -> Result<&'a Cell, FindingsError> {
        let index = self.result.column_index(column).ok_or_else(|| FindingsError::Column {
            column: column.to_string(),
            problem: "missing",
        })?;
        self.cells
            .get(index)
            .ok_or_else(|| FindingsError::Column { column: column.to_string(), problem: "missing" })
    }

    /// A number (integer or float); `None` for NULL.
    pub fn f64_opt(&self, column: &str) -> Result<Option<f64>, FindingsError> {
        match self.cell(column)? {
            Cell::Null => Ok(None),
            cell => cell.as_f64().map(Some).ok_or_else(|| FindingsError::Column {
                column: column.to_string(),
                problem: "is not a number",
            }),
        }
    }

    /// A number; NULL reads as 0 (sums over no rows, counts of nothing).
    pub fn f64_or_zero(&self, column: &str) -> Result<f64, FindingsError> {
        Ok(self.f64_opt(column)?.unwrap_or(0.0))
    }

    /// A non-negative integer that fits in `u64` (counts, ports); NULL reads as 0.
    pub fn u64(&self, column: &str) -> Result<u64, FindingsError> {
        match self.cell(column)? {
            Cell::Null => Ok(0),
            Cell::Int(v) => u64::try_from(*v).map_err(|_| FindingsError::Column {
                column: column.to_string(),
                problem: "is negative",
            }),
            Cell::UInt(v) => Ok(*v),
            Cell::Float(v) if *v >= 0.0 && v.fract() == 0.0 => Ok(*v as u64),
            _ => {
                Err(FindingsError::Column { column: column.to_string(), problem: "is not a count" })
            }
        }
    }

    /// A TCP port.
    pub fn port(&self, column: &str) -> Result<u16, FindingsError> {
        u16::try_from(self.u64(column)?).map_err(|_| FindingsError::Column {
            column: column.to_string(),
            problem: "is not a port",
        })
    }

    /// Text; NULL reads as the empty string. Numbers are printed.
    pub fn text(&self, column: &str) -> Result<String, FindingsError> {
        Ok(match self.cell(column)? {
            Cell::Text(v) => v.clone(),
            other => other.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result() -> QueryResult {
        let column = |name: &str, type_name: &str| peel_store::Column {
            name: name.to_string(),
            type_name: type_name.to_string(),
        };
        QueryResult {
            columns: vec![
                column("ip", "VARCHAR"),
                column("port", "INTEGER"),
                column("p50_us", "DOUBLE"),
                column("n", "BIGINT"),
            ],
            rows: vec![vec![
                Cell::Text("127.0.0.1".into()),
                Cell::Int(8000),
                Cell::Float(1.5),
                Cell::Null,
            ]],
        }
    }

    #[test]
    fn reads_cells_by_name_with_their_types() {
        let table = Table(result());
        let row = table.iter().next().unwrap();
        assert_eq!(row.text("ip").unwrap(), "127.0.0.1");
        assert_eq!(row.port("port").unwrap(), 8000);
        assert_eq!(row.f64_opt("p50_us").unwrap(), Some(1.5));
        assert_eq!(row.f64_opt("n").unwrap(), None);
        assert_eq!(row.u64("n").unwrap(), 0);
    }

    #[test]
    fn wrong_types_and_missing_columns_are_errors_naming_the_column() {
        let table = Table(result());
        let row = table.iter().next().unwrap();
        let err = row.f64_opt("ip").unwrap_err().to_string();
        assert!(err.contains("ip"), "{err}");
        let err = row.u64("nope").unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
        let err = row.port("p50_us").unwrap_err().to_string();
        assert!(err.contains("p50_us"), "{err}");
    }
}
