//! `report.html`: the same report as `report.md`, self-contained (no network needed to view it),
//! with an inline SVG chart of every compare step (baseline against candidate).
//!
//! The HTML is made from the Markdown report, whose subset (headings, tables, lists, paragraphs,
//! inline code) is known here, so the two never say different things.

use std::fmt::Write as _;

use crate::run::RunSummary;

/// Turns peel's report Markdown into a standalone HTML page.
pub(crate) fn render(markdown: &str, summary: &RunSummary) -> String {
    let mut body = String::new();
    let mut in_table = false;
    let mut in_list = false;
    for line in markdown.lines() {
        let trimmed = line.trim();
        if in_table && !trimmed.starts_with('|') {
            body.push_str("</table>\n");
            in_table = false;
        }
        if in_list && !trimmed.starts_with("- ") {
            body.push_str("</ul>\n");
            in_list = false;
        }
        if let Some(rest) = trimmed.strip_prefix("### ") {
            let _ = writeln!(body, "<h3>{}</h3>", inline(rest));
        } else if let Some(rest) = trimmed.strip_prefix("## ") {
            let _ = writeln!(body, "<h2>{}</h2>", inline(rest));
            if rest == "Checks" {
                body.push_str(&charts(summary));
            }
        } else if let Some(rest) = trimmed.strip_prefix("# ") {
            let _ = writeln!(body, "<h1>{}</h1>", inline(rest));
        } else if trimmed.starts_with('|') {
            let cells: Vec<&str> = trimmed.trim_matches('|').split(" | ").map(str::trim).collect();
            if cells.iter().all(|c| c.chars().all(|ch| ch == '-' || ch == '|')) {
                continue;
            }
            let tag = if in_table { "td" } else { "th" };
            if !in_table {
                body.push_str("<table>\n");
                in_table = true;
            }
            let row: Vec<String> =
                cells.iter().map(|c| format!("<{tag}>{}</{tag}>", inline(c))).collect();
            let _ = writeln!(body, "<tr>{}</tr>", row.concat());
        } else if let Some(rest) = trimmed.strip_prefix("- ") {
            if !in_list {
                body.push_str("<ul>\n");
                in_list = true;
            }
            let _ = writeln!(body, "<li>{}</li>", inline(rest));
        } else if !trimmed.is_empty() {
            let _ = writeln!(body, "<p>{}</p>", inline(trimmed));
        }
    }
    if in_table {
        body.push_str("</table>\n");
    }
    if in_list {
        body.push_str("</ul>\n");
    }
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>peel report {}</title>\n<style>\n\
         body{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}}\n\
         table{{border-collapse:collapse;margin:.5em 0}}td,th{{border:1px solid #ccc;padding:.2em .5em;font-size:90%}}\n\
         th{{background:#f2f2f2}}code{{background:#f6f6f6;font-size:85%}}strong{{color:#b00}}\n\
         </style></head><body>\n{body}</body></html>\n",
        escape(&summary.run_id)
    )
}

/// One horizontal bar pair per compare step: baseline (grey) and candidate (green or red).
fn charts(summary: &RunSummary) -> String {
    let mut out = String::new();
    for step in summary.steps.iter().filter(|s| s.kind == crate::StepKind::Compare) {
        let value = |side: &str| {
            step.outputs.get(side).and_then(|v| v.get("value")).and_then(|v| v.as_f64())
        };
        let (Some(baseline), Some(candidate)) = (value("baseline"), value("candidate")) else {
            continue;
        };
        let max = baseline.max(candidate).max(f64::MIN_POSITIVE);
        let passed = step.checks.iter().all(|c| c.passed);
        let width = |v: f64| (v / max * 600.0).max(1.0);
        let metric = step.outputs.get("metric").and_then(|m| m.as_str()).unwrap_or(&step.name);
        let _ = writeln!(
            out,
            "<p><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"900\" height=\"70\" role=\"img\">\
             <text x=\"0\" y=\"14\" font-size=\"13\">{name}: {metric}</text>\
             <rect x=\"120\" y=\"22\" width=\"{wb:.1}\" height=\"18\" fill=\"#999\"/>\
             <text x=\"0\" y=\"36\" font-size=\"12\">baseline</text>\
             <text x=\"{tb:.1}\" y=\"36\" font-size=\"12\">{b}</text>\
             <rect x=\"120\" y=\"44\" width=\"{wc:.1}\" height=\"18\" fill=\"{color}\"/>\
             <text x=\"0\" y=\"58\" font-size=\"12\">candidate</text>\
             <text x=\"{tc:.1}\" y=\"58\" font-size=\"12\">{c}</text></svg></p>",
            name = escape(&step.name),
            metric = escape(metric),
            wb = width(baseline),
            tb = 125.0 + width(baseline),
            b = crate::threshold::trim_float(baseline),
            wc = width(candidate),
            tc = 125.0 + width(candidate),
            c = crate::threshold::trim_float(candidate),
            color = if passed { "#2a2" } else { "#c22" },
        );
    }
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// `code`, **bold** and escaping.
fn inline(text: &str) -> String {
    let text = escape(&text.replace("\\|", "|"));
    let mut out = String::new();
    for (i, part) in text.split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{part}</code>");
        } else {
            let mut bold = false;
            for (j, piece) in part.split("**").enumerate() {
                if j > 0 {
                    out.push_str(if bold { "</strong>" } else { "<strong>" });
                    bold = !bold;
                }
                out.push_str(piece);
            }
            if bold {
                out.push_str("</strong>");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_markup_is_escaped_and_converted() {
        assert_eq!(
            inline("a `x<y` **FAIL** b\\|c"),
            "a <code>x&lt;y</code> <strong>FAIL</strong> b|c"
        );
    }
}
