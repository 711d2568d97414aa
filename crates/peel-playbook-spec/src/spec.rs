//! The keys each part of a playbook accepts: one table that drives unknown-key errors, did-you-mean
//! suggestions and the JSON Schema shipped for editors (docs/playbook.schema.json).

use crate::model::StepKind;

/// One accepted key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSpec {
    pub name: &'static str,
    /// `string`, `duration`, `integer`, `boolean`, `string-list`, `integer-list`, `table`,
    /// `threshold`, `threshold-list`, `quantity`.
    pub ty: &'static str,
    pub required: bool,
    pub doc: &'static str,
}

const fn field(name: &'static str, ty: &'static str, doc: &'static str) -> FieldSpec {
    FieldSpec { name, ty, required: false, doc }
}

const fn required(name: &'static str, ty: &'static str, doc: &'static str) -> FieldSpec {
    FieldSpec { name, ty, required: true, doc }
}

/// Keys every step accepts.
pub const COMMON: &[FieldSpec] = &[
    required("kind", "string", "The step kind."),
    field("name", "string", "Unique name within the stage (default: <kind>-<n>)."),
    field("continue_on_error", "boolean", "A failure of this step does not stop the stage."),
];

/// Top-level tables.
pub const ROOT: &[&str] = &["playbook", "vars", "targets", "reproduce", "analyze", "verify-fix"];

/// Keys of `[playbook]`.
pub const META: &[FieldSpec] = &[
    required("name", "string", "Short name; run folders are named after it."),
    field("description", "string", "What the playbook is for."),
    field("owner", "string", "Who maintains it."),
    field("symptoms", "string-list", "The symptoms it addresses."),
];

/// Keys of `[vars.NAME]` in table form.
pub const VAR: &[FieldSpec] = &[
    required("default", "string", "The value unless --set NAME=VALUE."),
    field("description", "string", "What it is."),
];

/// Keys of `[targets.NAME]`.
pub const TARGET: &[FieldSpec] = &[
    field("address", "string", "host:port of the service."),
    field("url", "string", "Base URL of the service."),
    field("interface", "string", "Network interface to capture on."),
    field("processes", "string-list", "Process names to snapshot (gunicorn, uwsgi, postgres)."),
];

/// Keys of a stage table.
pub const STAGE: &[FieldSpec] = &[
    field("description", "string", "What the stage does."),
    field("steps", "table-list", "The steps, in order."),
    field(
        "guards",
        "table-list",
        "Conditions checked while the stage runs; a failing guard aborts it.",
    ),
    field("matrix", "table", "Repeat the stage for each value of a variable."),
];

/// Keys of a guard.
pub const GUARD: &[FieldSpec] = &[
    required("expect", "threshold", "The condition that must hold, e.g. free_disk_pct > 5%."),
    field(
        "sql",
        "string",
        "SQL giving the metric; without it the metric is built in (free_disk_pct, rate(errors), errors, listen_overflows).",
    ),
    field("every", "duration", "How often to check (default 1s)."),
];

/// Guard metrics measured without `sql`: the metric's name, how a threshold writes it, what it is.
pub const GUARD_METRICS: &[(&str, &str, &str)] = &[
    ("free_disk_pct", "free_disk_pct", "free space of the run folder's filesystem, in percent"),
    (
        "rate_errors",
        "rate(errors)",
        "share of the running load step's requests that failed or got a 5xx answer, once it has 10",
    ),
    ("errors", "errors", "requests of the running load step that failed or got a 5xx answer"),
    (
        "listen_overflows",
        "listen_overflows",
        "rise of TcpExt.ListenOverflows since the stage started",
    ),
];

/// Keys of a stage's `matrix`.
pub const MATRIX: &[FieldSpec] = &[
    required("var", "string", "The variable to vary."),
    required("values", "string-list", "Its values; the stage runs once per value."),
];

/// Keys a step of `kind` accepts besides [`COMMON`].
pub fn step_fields(kind: StepKind) -> &'static [FieldSpec] {
    match kind {
        StepKind::Load => LOAD_FIELDS,
        StepKind::Exec => EXEC_FIELDS,
        StepKind::Snapshot => SNAPSHOT_FIELDS,
        StepKind::Capture => CAPTURE_FIELDS,
        StepKind::Sysctl => SYSCTL_FIELDS,
        StepKind::Analyze => ANALYZE_FIELDS,
        StepKind::Findings => FINDINGS_FIELDS,
        StepKind::Query => QUERY_FIELDS,
        StepKind::Compare => COMPARE_FIELDS,
        StepKind::Wait => WAIT_FIELDS,
        StepKind::Note => NOTE_FIELDS,
        StepKind::Confirm => CONFIRM_FIELDS,
        StepKind::Archive => ARCHIVE_FIELDS,
    }
}

const LOAD_FIELDS: &[FieldSpec] = &[
    required("url", "string", "Base URL (scheme, host, port)."),
    field("mix", "table", "Path -> weight; each path is its own URL class."),
    field("rate", "integer", "Requests per second (open model)."),
    field("concurrency", "integer", "Concurrent requests (closed model)."),
    required("duration", "duration", "How long to drive load."),
    field("connections", "integer", "Maximum connections."),
    field("keepalive", "boolean", "Reuse connections (default true)."),
    field("timeout", "duration", "Per-request timeout."),
];

const EXEC_FIELDS: &[FieldSpec] = &[
    field("argv", "string-list", "Program and arguments; no shell."),
    field("command", "string", "Shell command, only with shell = true."),
    field("shell", "boolean", "Run `command` with sh -c; variables arrive as $PEEL_VAR_<NAME>."),
    field("timeout", "duration", "Kill the whole process group after this long."),
    field("env", "table", "Extra environment variables."),
    field("cwd", "string", "Working directory."),
    field("expect_exit", "integer-list", "Accepted exit codes (default [0])."),
    field("background", "boolean", "Keep running; stopped at the end of the stage."),
    field("undo", "string-list", "An argv run at cleanup, in reverse order."),
];

const SNAPSHOT_FIELDS: &[FieldSpec] = &[
    field("every", "duration", "Sample every this long."),
    field("for", "duration", "Sample for this long (without it: until the stage ends)."),
    field("processes", "string-list", "Process names to include."),
    field("sysctls", "string-list", "Extra sysctl keys or globs."),
];

const CAPTURE_FIELDS: &[FieldSpec] = &[
    required("interface", "string", "Interface (lo, any, eth0)."),
    field("filter", "string", "BPF filter."),
    field("snaplen", "integer", "Bytes kept per packet."),
    field("ring", "string", "SIZE_MB:COUNT ring buffer."),
];

const SYSCTL_FIELDS: &[FieldSpec] =
    &[required("set", "table", "key -> value; restored at cleanup.")];

const ANALYZE_FIELDS: &[FieldSpec] = &[
    field("captures_of", "string", "Analyze another stage's captures (default: this stage)."),
    field("ports", "integer-list", "Server ports to analyze."),
];

const FINDINGS_FIELDS: &[FieldSpec] = &[];

const QUERY_FIELDS: &[FieldSpec] = &[
    required("sql", "string", "SQL over the run database."),
    field(
        "expect",
        "threshold-list",
        "Thresholds over the result's columns, e.g. p99_server_us < 50ms.",
    ),
];

const COMPARE_FIELDS: &[FieldSpec] = &[
    required("metric", "string", "Name of the metric; its suffix gives the unit (p99_us)."),
    required("sql", "string", "SQL giving the metric for ${stage} (one row, first column)."),
    required("baseline", "string", "The stage measured before the fix."),
    field("candidate", "string", "The stage measured after the fix (default: this stage)."),
    field("better", "string", "lower (default) or higher."),
    field("improves_by", "quantity", "Required relative improvement, e.g. 50%."),
    field("at_most", "quantity", "Upper bound for the candidate value."),
    field("at_least", "quantity", "Lower bound for the candidate value."),
];

const WAIT_FIELDS: &[FieldSpec] = &[
    field("for", "duration", "Sleep this long."),
    field("port", "string", "host:port to wait for."),
    field("timeout", "duration", "Give up waiting for the port after this long (default 30s)."),
];

const NOTE_FIELDS: &[FieldSpec] = &[required("text", "string", "Text for the report.")];

const CONFIRM_FIELDS: &[FieldSpec] =
    &[required("prompt", "string", "Question for the operator (--yes answers it).")];

const ARCHIVE_FIELDS: &[FieldSpec] =
    &[field("out", "string", "Archive path (default: <run>/evidence.tar.zst).")];

fn type_schema(ty: &str) -> serde_json::Value {
    use serde_json::json;
    match ty {
        "string" | "duration" | "threshold" => json!({"type": "string"}),
        "integer" => json!({"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string"}]}),
        "boolean" => json!({"anyOf": [{"type": "boolean"}, {"type": "string"}]}),
        "quantity" => json!({"anyOf": [{"type": "number"}, {"type": "string"}]}),
        "string-list" => json!({"type": "array", "items": {"type": "string"}}),
        "integer-list" => {
            json!({"type": "array", "items": {"anyOf": [{"type": "integer"}, {"type": "string"}]}})
        }
        "threshold-list" => {
            json!({"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]})
        }
        "table-list" => json!({"type": "array", "items": {"type": "object"}}),
        _ => json!({"type": "object"}),
    }
}

fn object_schema(fields: &[&FieldSpec]) -> serde_json::Value {
    let properties: serde_json::Map<String, serde_json::Value> = fields
        .iter()
        .map(|f| {
            let mut schema = type_schema(f.ty);
            if let Some(object) = schema.as_object_mut() {
                object.insert("description".into(), f.doc.into());
            }
            (f.name.to_string(), schema)
        })
        .collect();
    let required: Vec<&str> = fields.iter().filter(|f| f.required).map(|f| f.name).collect();
    serde_json::json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false})
}

/// The JSON Schema of a playbook (draft 2020-12), generated from the same tables as validation.
pub fn json_schema() -> serde_json::Value {
    use serde_json::json;
    let steps: Vec<serde_json::Value> = StepKind::ALL
        .iter()
        .map(|kind| {
            let fields: Vec<&FieldSpec> = COMMON.iter().chain(step_fields(*kind)).collect();
            let mut schema = object_schema(&fields);
            schema["properties"]["kind"] = json!({"const": kind.as_str()});
            schema["title"] = json!(format!("{kind} step"));
            schema
        })
        .collect();
    let stage = {
        let mut schema = object_schema(&STAGE.iter().collect::<Vec<_>>());
        schema["properties"]["steps"] = json!({"type": "array", "items": {"oneOf": steps}});
        schema["properties"]["guards"] =
            json!({"type": "array", "items": object_schema(&GUARD.iter().collect::<Vec<_>>())});
        schema["properties"]["matrix"] = object_schema(&MATRIX.iter().collect::<Vec<_>>());
        schema["properties"]["matrix"]["properties"]["values"] = json!({"type": "array", "items": {"type": ["string", "number", "boolean"]}, "minItems": 1});
        schema
    };
    let scalar = json!({"type": ["string", "number", "boolean"]});
    let var_table = object_schema(&VAR.iter().collect::<Vec<_>>());
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "peel playbook",
        "description": "A peel incident playbook (TOML). Generated from crates/peel-playbook-spec/src/spec.rs; `peel validate` gives the same answers with file:line:column.",
        "type": "object",
        "additionalProperties": false,
        "required": ["playbook"],
        "properties": {
            "playbook": object_schema(&META.iter().collect::<Vec<_>>()),
            "vars": {"type": "object", "additionalProperties": {"anyOf": [scalar, var_table]}},
            "targets": {"type": "object", "additionalProperties": object_schema(&TARGET.iter().collect::<Vec<_>>())},
            "reproduce": stage.clone(),
            "analyze": stage.clone(),
            "verify-fix": stage,
        }
    })
}
