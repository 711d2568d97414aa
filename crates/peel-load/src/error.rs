//! The ways a load run can fail before or while it runs. Failed *requests* are not errors here:
//! they are data ([`crate::ErrorKind`] in each record).

/// Why a load run could not be done.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("invalid URL '{url}': {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("invalid mix entry '{entry}': {reason} (example: /cached=3,/db=1)")]
    InvalidMix { entry: String, reason: &'static str },
    #[error("invalid load setting '{field}': {reason}")]
    InvalidConfig { field: &'static str, reason: &'static str },
    #[error("all URLs must share one host:port, got '{first}' and '{other}'")]
    MixedAuthorities { first: String, other: String },
    #[error("the weights add up to {cycle_len} after dividing by their common divisor; keep it at most {max}")]
    WeightsTooLarge { cycle_len: u64, max: u64 },
    #[error("cannot resolve '{authority}'")]
    Resolve {
        authority: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the load generator's runtime")]
    Runtime(#[source] std::io::Error),
    #[error("run_load was called from inside an async runtime; call it from a plain thread")]
    InsideRuntime,
    #[error("the record sink failed at request {request_id}")]
    Sink {
        request_id: u64,
        #[source]
        source: crate::SinkError,
    },
}
