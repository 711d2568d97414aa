//! `${name}` substitution in playbook strings.
//!
//! A template is split into literal text and variable references once; values are then substituted
//! into each string on its own (one argv element stays one argv element, whatever the value holds),
//! which is why peel never builds a shell command line out of variables. `$$` writes a literal `$`.

use std::collections::BTreeMap;
use std::ops::Range;

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    Text(String),
    /// A variable name and its byte range inside the template string (`${` to `}`).
    Var(String, Range<usize>),
}

/// Why a template could not be split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TemplateError {
    pub(crate) at: usize,
    pub(crate) message: &'static str,
}

/// Splits `text` into literal text and `${name}` references.
pub(crate) fn parse(text: &str) -> Result<Vec<Piece>, TemplateError> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut rest = text.char_indices().peekable();
    while let Some((i, c)) = rest.next() {
        if c != '$' {
            literal.push(c);
            continue;
        }
        match rest.peek().map(|(_, c)| *c) {
            Some('$') => {
                rest.next();
                literal.push('$');
            }
            Some('{') => {
                rest.next();
                let start = i + 2;
                let Some(end) = text[start..].find('}').map(|n| start + n) else {
                    return Err(TemplateError { at: i, message: "'${' without a closing '}'" });
                };
                let name = &text[start..end];
                if !is_name(name) {
                    return Err(TemplateError {
                        at: i,
                        message: "a variable name is letters, digits, '_', '-' and '.'",
                    });
                }
                if !literal.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut literal)));
                }
                pieces.push(Piece::Var(name.to_string(), i..end + 1));
                while rest.peek().is_some_and(|(j, _)| *j <= end) {
                    rest.next();
                }
            }
            _ => literal.push('$'),
        }
    }
    if !literal.is_empty() {
        pieces.push(Piece::Text(literal));
    }
    Ok(pieces)
}

/// A valid variable name: starts with a letter or '_', then letters, digits, '_', '-', '.'.
pub(crate) fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Substitutes every reference; returns the names that have no value instead when any is missing.
pub(crate) fn render(
    pieces: &[Piece],
    values: &BTreeMap<String, String>,
) -> Result<String, Vec<(String, Range<usize>)>> {
    let mut out = String::new();
    let mut missing = Vec::new();
    for piece in pieces {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Var(name, range) => match values.get(name) {
                Some(value) => out.push_str(value),
                None => missing.push((name.clone(), range.clone())),
            },
        }
    }
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("rate".to_string(), "200".to_string()),
            ("url".into(), "http://x; rm -rf /".into()),
        ])
    }

    #[test]
    fn substitutes_each_reference() {
        let pieces = parse("--rate=${rate}/s $$HOME $5").unwrap();
        assert_eq!(render(&pieces, &values()).unwrap(), "--rate=200/s $HOME $5");
    }

    #[test]
    fn values_are_inserted_verbatim_into_one_string() {
        let pieces = parse("${url}").unwrap();
        assert_eq!(render(&pieces, &values()).unwrap(), "http://x; rm -rf /");
    }

    #[test]
    fn missing_names_carry_their_range() {
        let pieces = parse("a ${nope} ${rate}").unwrap();
        assert_eq!(render(&pieces, &values()).unwrap_err(), vec![("nope".to_string(), 2..9)]);
    }

    #[test]
    fn malformed_references_are_errors() {
        assert_eq!(parse("x ${rate").unwrap_err().at, 2);
        assert_eq!(parse("${}").unwrap_err().at, 0);
        assert_eq!(parse("${a b}").unwrap_err().at, 0);
    }
}
