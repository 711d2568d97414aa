//! The one error type of peel-findings. Variants carry what a user needs to act: the rule, the SQL
//! that failed and the store's message, or the column a result did not have.

/// Why findings could not be computed or stored.
#[derive(Debug, thiserror::Error)]
pub enum FindingsError {
    /// A rule's query failed in the store (a schema mismatch, a damaged file).
    #[error("rule {rule}: query failed: {source}\n  query: {sql}")]
    Query {
        rule: &'static str,
        sql: String,
        #[source]
        source: Box<peel_store::StoreError>,
    },
    /// A query result lacked a column or had an unexpected type in it.
    #[error("result column '{column}' {problem}")]
    Column { column: String, problem: &'static str },
    /// A rule failed while reading its query results.
    #[error("rule {rule}: {source}")]
    Rule {
        rule: &'static str,
        #[source]
        source: Box<FindingsError>,
    },
    /// The database has no run with this id.
    #[error("run '{run_id}' is not in the database (runs there: {known})")]
    UnknownRun { run_id: String, known: String },
    /// The database holds several runs and none was chosen.
    #[error("the database holds several runs ({runs}); choose one")]
    SeveralRuns { runs: String },
    /// The database holds no run at all.
    #[error("the database holds no runs")]
    NoRuns,
    /// Writing findings into the `findings` table failed.
    #[error("storing findings of run '{run_id}': {source}")]
    Store {
        run_id: String,
        #[source]
        source: Box<peel_store::StoreError>,
    },
}
