//! An owned copy of the TOML tree with the byte span of every key and value.
//!
//! `toml`'s spanned tree borrows the source text; the playbook keeps its own copy so that a parsed
//! playbook can be resolved later (with `--set` values) and still point every error at its place.

use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// A TOML value and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub(crate) span: Range<usize>,
    pub(crate) value: Value,
}

/// A key of a table and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Key {
    pub(crate) name: String,
    pub(crate) span: Range<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    String(String),
    Integer(Option<i64>),
    Float(Option<f64>),
    Boolean(bool),
    Datetime,
    Array(Vec<Node>),
    Table(Vec<(Key, Node)>),
}

impl Value {
    /// The TOML type name, for "expected a string, found an integer" messages.
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Value::String(_) => "a string",
            Value::Integer(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Boolean(_) => "a boolean",
            Value::Datetime => "a datetime",
            Value::Array(_) => "an array",
            Value::Table(_) => "a table",
        }
    }
}

impl Node {
    pub(crate) fn table(&self) -> Option<&[(Key, Node)]> {
        match &self.value {
            Value::Table(entries) => Some(entries),
            _ => None,
        }
    }
}

/// Parses `text` into a tree of nodes, or returns TOML syntax errors with their spans.
pub(crate) fn parse_document(text: &str) -> Result<Node, Vec<(Range<usize>, String)>> {
    let (root, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        return Err(errors
            .iter()
            .map(|e| (e.span().unwrap_or(0..0), e.message().trim().to_string()))
            .collect());
    }
    let span = root.span();
    Ok(Node { span, value: Value::Table(convert_table(root.get_ref())) })
}

fn convert_table(table: &DeTable<'_>) -> Vec<(Key, Node)> {
    table
        .iter()
        .map(|(key, value)| {
            (Key { name: key.get_ref().to_string(), span: key.span() }, convert(value))
        })
        .collect()
}

fn convert(value: &Spanned<DeValue<'_>>) -> Node {
    let converted = match value.get_ref() {
        DeValue::String(s) => Value::String(s.to_string()),
        DeValue::Integer(i) => Value::Integer(i64::from_str_radix(i.as_str(), i.radix()).ok()),
        DeValue::Float(f) => Value::Float(f.as_str().parse().ok()),
        DeValue::Boolean(b) => Value::Boolean(*b),
        DeValue::Datetime(_) => Value::Datetime,
        DeValue::Array(items) => Value::Array(items.iter().map(convert).collect()),
        DeValue::Table(table) => Value::Table(convert_table(table)),
    };
    Node { span: value.span(), value: converted }
}
