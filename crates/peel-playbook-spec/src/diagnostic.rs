//! Errors found in a playbook, each pinned to a file:line:column, with what was expected and, when a
//! near miss is likely, a did-you-mean suggestion.
//!
//! Validation collects every diagnostic it can instead of stopping at the first, so an operator fixes
//! a playbook in one pass during an outage. This module only describes and locates problems; finding
//! them is the parser's and the resolver's job.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A position in a playbook file, 1-based as editors show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// One problem in a playbook.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub location: Location,
    pub message: String,
    /// What would have been accepted here, when that can be said in a few words.
    pub expected: Option<String>,
    /// A did-you-mean or how-to-fix line.
    pub help: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)?;
        if let Some(expected) = &self.expected {
            write!(f, " (expected {expected})")?;
        }
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

/// Every diagnostic found in one playbook, in file order.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, diagnostic) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{diagnostic}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// Collects diagnostics for one source text, turning byte spans into lines and columns.
#[derive(Debug)]
pub(crate) struct Sink<'s> {
    file: PathBuf,
    text: &'s str,
    found: Vec<(usize, Diagnostic)>,
}

impl<'s> Sink<'s> {
    pub(crate) fn new(file: &Path, text: &'s str) -> Self {
        Sink { file: file.to_path_buf(), text, found: Vec::new() }
    }

    pub(crate) fn error(
        &mut self,
        span: Range<usize>,
        message: impl Into<String>,
    ) -> Report<'_, 's> {
        let location = self.locate(span.start);
        self.found.push((
            span.start,
            Diagnostic { location, message: message.into(), expected: None, help: None },
        ));
        Report { sink: self }
    }

    pub(crate) fn has_errors(&self) -> bool {
        !self.found.is_empty()
    }

    pub(crate) fn finish(mut self) -> Diagnostics {
        // Stable sort: errors at one offset keep the order they were found in.
        self.found.sort_by_key(|(offset, _)| *offset);
        self.found.dedup_by(|a, b| a.1 == b.1);
        Diagnostics(self.found.into_iter().map(|(_, d)| d).collect())
    }

    pub(crate) fn locate(&self, offset: usize) -> Location {
        let offset = offset.min(self.text.len());
        let before = self.text.get(..offset).unwrap_or(self.text);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before.get(line_start..).map_or(1, |s| s.chars().count() + 1);
        Location { file: self.file.clone(), line, column }
    }
}

/// Builder for the optional parts of the diagnostic just added.
#[derive(Debug)]
pub(crate) struct Report<'a, 's> {
    sink: &'a mut Sink<'s>,
}

impl Report<'_, '_> {
    pub(crate) fn expected(self, expected: impl Into<String>) -> Self {
        if let Some((_, d)) = self.sink.found.last_mut() {
            d.expected = Some(expected.into());
        }
        self
    }

    pub(crate) fn help(self, help: impl Into<String>) -> Self {
        if let Some((_, d)) = self.sink.found.last_mut() {
            d.help = Some(help.into());
        }
        self
    }

    /// Adds "did you mean 'x'?" when one of `candidates` is a near miss of `got`.
    pub(crate) fn suggest<'c>(
        self,
        got: &str,
        candidates: impl IntoIterator<Item = &'c str>,
    ) -> Self {
        match did_you_mean(got, candidates) {
            Some(help) => self.help(help),
            None => self,
        }
    }
}

/// "did you mean 'a'?" or, for equally near misses, "did you mean 'a' or 'b'?".
pub(crate) fn did_you_mean<'c>(
    got: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<String> {
    let best = closest(got, candidates);
    match best.as_slice() {
        [] => None,
        [one] => Some(format!("did you mean '{one}'?")),
        many => {
            let quoted: Vec<String> = many.iter().map(|c| format!("'{c}'")).collect();
            Some(format!("did you mean {}?", quoted.join(" or ")))
        }
    }
}

/// The candidates nearest to `got` by edit distance, if near enough to be a likely typo (at most 3).
pub(crate) fn closest<'c>(
    got: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Vec<&'c str> {
    let limit = (got.chars().count() / 3).max(1) + usize::from(got.len() > 6);
    let scored: Vec<(usize, &str)> = candidates
        .into_iter()
        .map(|c| (edit_distance(&got.to_lowercase(), &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .collect();
    let Some(min) = scored.iter().map(|(d, _)| *d).min() else { return Vec::new() };
    let mut best: Vec<&str> =
        scored.into_iter().filter(|(d, _)| *d == min).map(|(_, c)| c).collect();
    best.dedup();
    best.truncate(3);
    best
}

/// Levenshtein distance with adjacent transpositions (optimal string alignment), over chars.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best =
                (rows[i - 1][j] + 1).min(rows[i][j - 1] + 1).min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_typos() {
        assert_eq!(edit_distance("duraton", "duration"), 1);
        assert_eq!(edit_distance("duartion", "duration"), 1);
        assert_eq!(edit_distance("rate", "rate"), 0);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn closest_ignores_far_candidates() {
        assert_eq!(closest("duraton", ["rate", "duration", "url"]), vec!["duration"]);
        assert!(closest("xyz", ["duration", "background"]).is_empty());
        assert_eq!(closest("argvs", ["argv", "env"]), vec!["argv"]);
        assert_eq!(did_you_mean("p98", ["p90", "p99"]).unwrap(), "did you mean 'p90' or 'p99'?");
    }

    #[test]
    fn locate_counts_lines_and_columns_from_one() {
        let text = "a = 1\nbb = 2\n";
        let mut sink = Sink::new(Path::new("p.toml"), text);
        sink.error(6..8, "x");
        sink.error(0..1, "y");
        let d = sink.finish();
        assert_eq!(d.0[0].location.to_string(), "p.toml:1:1");
        assert_eq!(d.0[1].location.to_string(), "p.toml:2:1");
    }
}
