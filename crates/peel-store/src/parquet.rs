//! Parquet export and import, hive-partitioned as `run_id=<id>/host=<host>/table=<table>/*.parquet`.
//!
//! That layout is queryable in place by DuckDB, Trino, Spark or ClickHouse (docs/scaling.md): a
//! folder of several hosts' exports is one dataset, and engines prune partitions by run and host.
//! The partition columns are not repeated inside the files; readers get them back from the path
//! (`hive_partitioning = true`).

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Result, StoreError};
use crate::schema::TABLES;
use crate::store::Store;

/// Rows exported from one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedTable {
    pub table: &'static str,
    pub rows: u64,
}

/// SQL string literal of a path.
pub(crate) fn sql_path(path: &Path) -> String {
    format!("'{}'", path.to_string_lossy().replace('\'', "''"))
}

impl Store {
    /// Exports every non-empty table into `dir` (created if missing) as hive-partitioned Parquet.
    /// Returns the rows per table; empty tables write nothing.
    pub fn export_parquet(&self, dir: &Path) -> Result<Vec<ExportedTable>> {
        fs::create_dir_all(dir).map_err(StoreError::io(dir))?;
        let parquet_err = |source| StoreError::Parquet { path: dir.to_path_buf(), source };
        let mut exported = Vec::new();
        for &table in TABLES {
            let rows: i64 = self
                .connection()
                .query_row(&format!("SELECT count(*) FROM {table}"), [], |row| row.get(0))
                .map_err(parquet_err)?;
            if rows == 0 {
                continue;
            }
            self.connection()
                .execute_batch(&format!(
                    "COPY (SELECT *, '{table}' AS \"table\" FROM {table}) TO {} \
                     (FORMAT parquet, PARTITION_BY (run_id, host, \"table\"), \
                      OVERWRITE_OR_IGNORE true, FILENAME_PATTERN 'data_{{i}}')",
                    sql_path(dir)
                ))
                .map_err(parquet_err)?;
            exported.push(ExportedTable { table, rows: u64::try_from(rows).unwrap_or(0) });
        }
        Ok(exported)
    }

    /// Appends every table found in a hive-partitioned export at `dir` (as written by
    /// [`Store::export_parquet`]). Returns the rows per table.
    pub fn import_parquet(&self, dir: &Path) -> Result<Vec<ExportedTable>> {
        let parquet_err = |source| StoreError::Parquet { path: dir.to_path_buf(), source };
        let mut imported = Vec::new();
        for &table in TABLES {
            if !has_table_files(dir, table)? {
                continue;
            }
            let glob = dir.join("*").join("*").join(format!("table={table}")).join("*.parquet");
            // Partition values stay text: a run id that looks like a number or a date must not
            // turn into one.
            let rows = self
                .connection()
                .execute(
                    &format!(
                        "INSERT INTO {table} BY NAME SELECT * EXCLUDE (\"table\") FROM \
                         read_parquet({}, hive_partitioning = true, hive_types_autocast = false)",
                        sql_path(&glob)
                    ),
                    [],
                )
                .map_err(parquet_err)?;
            imported.push(ExportedTable { table, rows: rows as u64 });
        }
        Ok(imported)
    }
}

/// Whether `dir/run_id=*/host=*/table=<table>/` holds a Parquet file.
fn has_table_files(dir: &Path, table: &str) -> Result<bool> {
    let wanted = format!("table={table}");
    for run in read_dirs(dir)? {
        for host in read_dirs(&run)? {
            let table_dir = host.join(&wanted);
            if !table_dir.is_dir() {
                continue;
            }
            let entries = fs::read_dir(&table_dir).map_err(StoreError::io(&table_dir))?;
            for entry in entries {
                let entry = entry.map_err(StoreError::io(&table_dir))?;
                if entry.path().extension().is_some_and(|ext| ext == "parquet") {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

fn read_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    for entry in fs::read_dir(dir).map_err(StoreError::io(dir))? {
        let entry = entry.map_err(StoreError::io(dir))?;
        if entry.path().is_dir() {
            dirs.push(entry.path());
        }
    }
    Ok(dirs)
}
