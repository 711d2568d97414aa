//! The one place peel-store calls DuckDB's C API directly: a writable database opened through
//! `duckdb_open_ext` (so its raw handle is ours to connect Appenders to), and a [`ChunkAppender`]
//! that writes typed values straight into a DuckDB data chunk and hands whole chunks
//! (`duckdb_vector_size()` rows, 2048) to `duckdb_append_data_chunk`.
//!
//! Why: duckdb-rs's row Appender goes through `ToSql`, a `Vec` per row and one C call per value,
//! which made ingest 0.54-0.65x as fast as DuckDB's own `read_csv` (docs/benchmarks.md). Writing
//! into the chunk's vectors is a store into a buffer per value.
//!
//! Safety rests on three invariants, each checked where it is used:
//! - every handle (`duckdb_database`, `duckdb_connection`, `duckdb_appender`, `duckdb_data_chunk`)
//!   is created here, never shared, and destroyed once in `Drop`, children before parents (the
//!   borrow of [`RawDatabase`] by [`ChunkAppender`] keeps the database open while it lives);
//! - a value is written to column `c` only if the chunk's vector `c` has the physical type the
//!   write assumes ([`Kind`], read from the appender's column types), and only at a row below the
//!   chunk's capacity;
//! - the data and validity pointers of a vector are re-read after every `duckdb_data_chunk_reset`.

use std::ffi::{CStr, CString};
use std::marker::PhantomData;
use std::os::raw::c_char;
use std::path::Path;
use std::ptr;

use duckdb::ffi;

/// A DuckDB error with a message (the C API gives states, not duckdb-rs errors).
fn failure(message: impl Into<String>) -> duckdb::Error {
    duckdb::Error::DuckDBFailure(ffi::Error::new(ffi::DuckDBError), Some(message.into()))
}

/// A database opened through the C API, so Appenders can get their own raw connection to it. The
/// duckdb-rs [`duckdb::Connection`] for queries is made with [`RawDatabase::connect`].
#[derive(Debug)]
pub(crate) struct RawDatabase {
    db: ffi::duckdb_database,
}

impl RawDatabase {
    /// Opens (or creates) the database at `path` read-write; `:memory:` for a private one.
    pub(crate) fn open(path: &Path) -> duckdb::Result<RawDatabase> {
        use std::os::unix::ffi::OsStrExt;
        let c_path = CString::new(path.as_os_str().as_bytes())?;
        let mut db: ffi::duckdb_database = ptr::null_mut();
        let mut error: *mut c_char = ptr::null_mut();
        // SAFETY: `c_path` is a valid NUL-terminated string for the call; `db` and `error` are
        // out-pointers to locals; a null config asks for the defaults.
        let state =
            unsafe { ffi::duckdb_open_ext(c_path.as_ptr(), &mut db, ptr::null_mut(), &mut error) };
        if state != ffi::DuckDBSuccess {
            let message = if error.is_null() {
                format!("cannot open {}", path.display())
            } else {
                // SAFETY: on failure DuckDB sets `error` to a NUL-terminated string that the
                // caller frees with duckdb_free; it is read once and freed once.
                unsafe {
                    let text = CStr::from_ptr(error).to_string_lossy().into_owned();
                    ffi::duckdb_free(error.cast());
                    text
                }
            };
            if !db.is_null() {
                // SAFETY: a handle DuckDB returned, closed once.
                unsafe { ffi::duckdb_close(&mut db) };
            }
            return Err(failure(message));
        }
        Ok(RawDatabase { db })
    }

    /// A duckdb-rs connection to this database. It must be dropped (or closed) before `self`:
    /// [`crate::Store`] declares its connection field first so it is.
    pub(crate) fn connect(&self) -> duckdb::Result<duckdb::Connection> {
        // SAFETY: `self.db` is an open database (closed only in Drop); duckdb-rs does not close a
        // database it got from `open_from_raw`, and the Store drops the connection first.
        unsafe { duckdb::Connection::open_from_raw(self.db) }
    }
}

impl Drop for RawDatabase {
    fn drop(&mut self) {
        if !self.db.is_null() {
            // SAFETY: the handle came from duckdb_open_ext and is closed exactly once; every
            // connection to it (the Store's and the Appenders', which borrow `self`) is gone.
            unsafe { ffi::duckdb_close(&mut self.db) };
        }
    }
}

/// The physical type of a column as far as writes are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Boolean,
    Integer,
    BigInt,
    Double,
    Varchar,
}

impl Kind {
    fn of(type_id: ffi::duckdb_type) -> Option<Kind> {
        match type_id {
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_BOOLEAN => Some(Kind::Boolean),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_INTEGER => Some(Kind::Integer),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_BIGINT => Some(Kind::BigInt),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_DOUBLE => Some(Kind::Double),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_VARCHAR => Some(Kind::Varchar),
            _ => None,
        }
    }
}

/// One vector of the chunk: its type, its data, and its validity mask once a NULL was written.
#[derive(Debug)]
struct Column {
    kind: Kind,
    vector: ffi::duckdb_vector,
    data: *mut u8,
    validity: *mut u64,
}

/// An Appender on its own raw connection that takes rows value by value into a data chunk and
/// appends the chunk when it is full. Rows become visible to queries after [`ChunkAppender::flush`].
#[derive(Debug)]
pub(crate) struct ChunkAppender<'db> {
    connection: ffi::duckdb_connection,
    appender: ffi::duckdb_appender,
    chunk: ffi::duckdb_data_chunk,
    columns: Vec<Column>,
    /// Rows complete in the chunk.
    rows: usize,
    /// The column the next value goes to.
    column: usize,
    capacity: usize,
    /// A write that did not fit its column's type; reported at the end of the row.
    mismatch: Option<String>,
    _db: PhantomData<&'db RawDatabase>,
}

impl<'db> ChunkAppender<'db> {
    /// An Appender for `columns` of `table` (schema `main`).
    pub(crate) fn new(
        db: &'db RawDatabase,
        table: &str,
        columns: &[&str],
    ) -> duckdb::Result<ChunkAppender<'db>> {
        let c_table = CString::new(table)?;
        let c_schema = CString::new("main")?;
        let c_columns =
            columns.iter().map(|name| CString::new(*name)).collect::<Result<Vec<_>, _>>()?;
        let mut appender = ChunkAppender {
            connection: ptr::null_mut(),
            appender: ptr::null_mut(),
            chunk: ptr::null_mut(),
            columns: Vec::with_capacity(columns.len()),
            rows: 0,
            column: 0,
            capacity: 0,
            mismatch: None,
            _db: PhantomData,
        };
        // SAFETY: `db.db` is open for 'db; the out-pointers are fields of `appender`, whose Drop
        // releases whatever was created even if a later step fails.
        unsafe {
            if ffi::duckdb_connect(db.db, &mut appender.connection) != ffi::DuckDBSuccess {
                return Err(failure("cannot connect an appender"));
            }
            let state = ffi::duckdb_appender_create_ext(
                appender.connection,
                ptr::null(),
                c_schema.as_ptr(),
                c_table.as_ptr(),
                &mut appender.appender,
            );
            if state != ffi::DuckDBSuccess {
                return Err(appender.error(&format!("appender for {table}")));
            }
            for name in &c_columns {
                if ffi::duckdb_appender_add_column(appender.appender, name.as_ptr())
                    != ffi::DuckDBSuccess
                {
                    return Err(appender.error(&format!("column {name:?} of {table}")));
                }
            }
            let count = ffi::duckdb_appender_column_count(appender.appender) as usize;
            let mut types = Vec::with_capacity(count);
            let mut kinds = Vec::with_capacity(count);
            for index in 0..count {
                let logical = ffi::duckdb_appender_column_type(appender.appender, index as u64);
                let type_id = ffi::duckdb_get_type_id(logical);
                types.push(logical);
                kinds.push(Kind::of(type_id));
                if kinds[index].is_none() {
                    types.iter_mut().for_each(|logical| ffi::duckdb_destroy_logical_type(logical));
                    return Err(failure(format!(
                        "{table}.{}: DuckDB type {type_id} has no chunk writer",
                        columns.get(index).copied().unwrap_or("?")
                    )));
                }
            }
            appender.chunk = ffi::duckdb_create_data_chunk(types.as_mut_ptr(), count as u64);
            types.iter_mut().for_each(|logical| ffi::duckdb_destroy_logical_type(logical));
            if appender.chunk.is_null() {
                return Err(failure(format!("cannot create a data chunk for {table}")));
            }
            appender.capacity = ffi::duckdb_vector_size() as usize;
            for (index, kind) in kinds.into_iter().enumerate() {
                let vector = ffi::duckdb_data_chunk_get_vector(appender.chunk, index as u64);
                appender.columns.push(Column {
                    kind: kind.unwrap_or(Kind::Varchar),
                    vector,
                    data: ffi::duckdb_vector_get_data(vector).cast(),
                    validity: ptr::null_mut(),
                });
            }
        }
        Ok(appender)
    }

    /// The appender's error message (and the DuckDB error data is released).
    fn error(&self, doing: &str) -> duckdb::Error {
        if self.appender.is_null() {
            return failure(doing.to_string());
        }
        // SAFETY: `self.appender` is a live appender; the error data it returns is read and
        // destroyed here, once.
        let message = unsafe {
            let mut data = ffi::duckdb_appender_error_data(self.appender);
            let text = ffi::duckdb_error_data_message(data);
            let message = if text.is_null() {
                String::new()
            } else {
                CStr::from_ptr(text).to_string_lossy().into_owned()
            };
            ffi::duckdb_destroy_error_data(&mut data);
            message
        };
        failure(format!("{doing}: {message}"))
    }

    /// The next column of the current row, if it has kind `kind` (else the mismatch is noted and
    /// the value dropped; [`ChunkAppender::end_row`] reports it).
    #[inline]
    fn next(&mut self, kind: Kind) -> Option<usize> {
        let index = self.column;
        self.column += 1;
        match self.columns.get(index) {
            Some(column) if column.kind == kind => Some(index),
            Some(column) => {
                self.mismatch.get_or_insert_with(|| {
                    format!("column {index} is {:?}, the record wrote {kind:?}", column.kind)
                });
                None
            }
            None => {
                self.mismatch.get_or_insert_with(|| {
                    format!("the record wrote more than {} values", self.columns.len())
                });
                None
            }
        }
    }

    /// The kind of the column the next value goes to (`None` past the last column).
    #[inline]
    pub(crate) fn next_kind(&self) -> Option<Kind> {
        self.columns.get(self.column).map(|column| column.kind)
    }

    /// Skips the next column because `value` does not fit it; the row fails at its end.
    pub(crate) fn overflow(&mut self, value: i64) {
        let index = self.column;
        self.column += 1;
        self.mismatch
            .get_or_insert_with(|| format!("column {index}: {value} does not fit an INTEGER"));
    }

    #[inline]
    fn put<T: Copy>(&mut self, kind: Kind, value: T) {
        if let Some(index) = self.next(kind) {
            let column = &self.columns[index];
            debug_assert_eq!(std::mem::size_of::<T>(), kind_size(kind));
            // SAFETY: `column.data` points at the vector's `capacity` values of the physical type
            // of `kind` (checked by `next`), which is `T` (each caller pairs them); `self.rows` is
            // below `capacity` because `end_row` appends the chunk as soon as it is full.
            unsafe { column.data.cast::<T>().add(self.rows).write(value) };
        }
    }

    /// Writes NULL into the next column, whatever its type.
    #[inline]
    pub(crate) fn null(&mut self) {
        let index = self.column;
        self.column += 1;
        let Some(column) = self.columns.get_mut(index) else {
            self.mismatch.get_or_insert_with(|| "the record wrote too many values".to_string());
            return;
        };
        // SAFETY: `column.vector` belongs to the live chunk; after ensure_validity_writable the
        // mask is non-null and covers `capacity` rows, and `self.rows < capacity`.
        unsafe {
            if column.validity.is_null() {
                ffi::duckdb_vector_ensure_validity_writable(column.vector);
                column.validity = ffi::duckdb_vector_get_validity(column.vector);
            }
            ffi::duckdb_validity_set_row_invalid(column.validity, self.rows as u64);
        }
    }

    #[inline]
    pub(crate) fn bool(&mut self, value: bool) {
        self.put(Kind::Boolean, value);
    }

    #[inline]
    pub(crate) fn i32(&mut self, value: i32) {
        self.put(Kind::Integer, value);
    }

    #[inline]
    pub(crate) fn i64(&mut self, value: i64) {
        self.put(Kind::BigInt, value);
    }

    #[inline]
    pub(crate) fn f64(&mut self, value: f64) {
        self.put(Kind::Double, value);
    }

    /// Writes a string (copied into the vector: inline up to 12 bytes, else into its heap).
    #[inline]
    pub(crate) fn str(&mut self, value: &str) {
        if let Some(index) = self.next(Kind::Varchar) {
            let vector = self.columns[index].vector;
            // SAFETY: a VARCHAR vector of the live chunk, row below capacity; `value` is valid
            // UTF-8 (a `&str`), which is what the unchecked assignment requires, and DuckDB copies
            // the bytes before returning.
            unsafe {
                ffi::duckdb_unsafe_vector_assign_string_element_len(
                    vector,
                    self.rows as u64,
                    value.as_ptr().cast(),
                    value.len() as u64,
                )
            };
        }
    }

    /// Ends the row: checks it filled every column with matching types, and appends the chunk
    /// when it is full.
    pub(crate) fn end_row(&mut self) -> duckdb::Result<()> {
        let written = std::mem::replace(&mut self.column, 0);
        let problem = match self.mismatch.take() {
            Some(mismatch) => Some(mismatch),
            None if written != self.columns.len() => {
                Some(format!("the record wrote {written} of {} values", self.columns.len()))
            }
            None => None,
        };
        if let Some(problem) = problem {
            self.discard_row();
            return Err(failure(format!("row {}: {problem}", self.rows)));
        }
        self.rows += 1;
        if self.rows == self.capacity {
            self.append_chunk()?;
        }
        Ok(())
    }

    /// Forgets the values of the row being written: the next row overwrites its data, and here
    /// its NULL marks are cleared.
    fn discard_row(&mut self) {
        for column in &self.columns {
            if !column.validity.is_null() {
                // SAFETY: a writable mask of the live chunk covering `capacity` rows, and
                // `self.rows < capacity`.
                unsafe { ffi::duckdb_validity_set_row_valid(column.validity, self.rows as u64) };
            }
        }
    }

    /// Hands the rows collected so far to DuckDB's appender and starts an empty chunk.
    fn append_chunk(&mut self) -> duckdb::Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        // SAFETY: the chunk and appender are live; the chunk's column count and types are the
        // appender's (the chunk was made from them); rows 0..self.rows were all written. After the
        // reset, every data and validity pointer is fetched again as the C API requires.
        let state = unsafe {
            ffi::duckdb_data_chunk_set_size(self.chunk, self.rows as u64);
            let state = ffi::duckdb_append_data_chunk(self.appender, self.chunk);
            ffi::duckdb_data_chunk_reset(self.chunk);
            for column in &mut self.columns {
                column.data = ffi::duckdb_vector_get_data(column.vector).cast();
                column.validity = ptr::null_mut();
            }
            state
        };
        self.rows = 0;
        if state != ffi::DuckDBSuccess {
            return Err(self.error("appending a data chunk"));
        }
        Ok(())
    }

    /// Appends the collected rows and flushes them into the table (one transaction).
    pub(crate) fn flush(&mut self) -> duckdb::Result<()> {
        if self.column != 0 {
            return Err(failure("flush in the middle of a row"));
        }
        self.append_chunk()?;
        // SAFETY: a live appender.
        let state = unsafe { ffi::duckdb_appender_flush(self.appender) };
        if state != ffi::DuckDBSuccess {
            return Err(self.error("flushing the appender"));
        }
        Ok(())
    }
}

fn kind_size(kind: Kind) -> usize {
    match kind {
        Kind::Boolean => 1,
        Kind::Integer => 4,
        Kind::BigInt | Kind::Double => 8,
        Kind::Varchar => 16,
    }
}

impl Drop for ChunkAppender<'_> {
    fn drop(&mut self) {
        // Like duckdb-rs's Appender, rows not flushed yet are flushed now and errors are lost:
        // callers flush explicitly to see them. A half-written row is dropped.
        if !self.appender.is_null() && !self.chunk.is_null() && self.column == 0 {
            let _ = self.append_chunk();
        }
        // SAFETY: each handle is destroyed once, children first; null handles (a constructor that
        // failed half-way) are skipped.
        unsafe {
            if !self.chunk.is_null() {
                ffi::duckdb_destroy_data_chunk(&mut self.chunk);
            }
            if !self.appender.is_null() {
                ffi::duckdb_appender_destroy(&mut self.appender);
            }
            if !self.connection.is_null() {
                ffi::duckdb_disconnect(&mut self.connection);
            }
        }
    }
}
