//! `report.html`: the same report as `report.md`, self-contained (no network needed to view it),
//! with an inline SVG chart of every compare step (baseline against candidate) and, per matrix
//! stage, the p99 of every URL class against the matrix value.
//!
//! The HTML is made from the Markdown report, whose subset (headings, tables, lists, paragraphs,
//! inline code) is known here, so the two never say different things.

use std::fmt::Write as _;

use crate::report::MatrixChart;
use crate::run::RunSummary;

/// Turns peel's report Markdown into a standalone HTML page.
pub(crate) fn render(markdown: &str, summary: &RunSummary, matrix: &[MatrixChart]) -> String {
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
            if rest == "Matrix" {
                for chart in matrix {
                    body.push_str(&matrix_chart(chart));
                }
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

/// Series colours, in order; more classes than colours reuse them.
const COLORS: &[&str] = &["#2a6fdb", "#d9822b", "#2a2", "#c22", "#8e44ad", "#16a085", "#7f8c8d"];

/// A line per URL class: p99 (y, from 0) against the matrix values (x, in run order).
fn matrix_chart(chart: &MatrixChart) -> String {
    const LEFT: f64 = 80.0;
    const TOP: f64 = 30.0;
    const PLOT_W: f64 = 560.0;
    const PLOT_H: f64 = 180.0;
    let max = chart
        .series
        .iter()
        .flat_map(|(_, points)| points.iter().flatten())
        .fold(f64::MIN_POSITIVE, |a, b| a.max(*b));
    let steps = chart.values.len().saturating_sub(1).max(1) as f64;
    let x = |i: usize| {
        LEFT + if chart.values.len() == 1 { PLOT_W / 2.0 } else { i as f64 * PLOT_W / steps }
    };
    let y = |v: f64| TOP + PLOT_H - v / max * PLOT_H;
    let mut svg = String::new();
    let height = TOP + PLOT_H + 40.0 + 16.0 * chart.series.len() as f64;
    let _ = write!(
        svg,
        "<p><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"900\" height=\"{height:.0}\" role=\"img\">\
         <text x=\"0\" y=\"14\" font-size=\"13\">{}</text>\
         <line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{b:.1}\" stroke=\"#999\"/>\
         <line x1=\"{LEFT}\" y1=\"{b:.1}\" x2=\"{r:.1}\" y2=\"{b:.1}\" stroke=\"#999\"/>\
         <text x=\"0\" y=\"{t:.1}\" font-size=\"12\">{}</text>\
         <text x=\"0\" y=\"{b:.1}\" font-size=\"12\">0</text>",
        escape(&chart.title),
        crate::run::micros(max),
        b = TOP + PLOT_H,
        r = LEFT + PLOT_W,
        t = TOP + 4.0,
    );
    for (i, value) in chart.values.iter().enumerate() {
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"middle\">{}</text>",
            x(i),
            TOP + PLOT_H + 16.0,
            escape(value)
        );
    }
    for (n, (class, points)) in chart.series.iter().enumerate() {
        let color = COLORS[n % COLORS.len()];
        let coords: Vec<String> = points
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.map(|v| format!("{:.1},{:.1}", x(i), y(v))))
            .collect();
        let _ = write!(
            svg,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"/>",
            coords.join(" ")
        );
        for (i, p) in points.iter().enumerate() {
            let Some(v) = p else { continue };
            let _ = write!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"><title>{} {}: p99 {}</title></circle>\
                 <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\">{}</text>",
                x(i),
                y(*v),
                escape(class),
                escape(&chart.values[i]),
                crate::run::micros(*v),
                x(i) + 5.0,
                y(*v) - 5.0,
                crate::run::micros(*v),
            );
        }
        let legend_y = TOP + PLOT_H + 36.0 + 16.0 * n as f64;
        let _ = write!(
            svg,
            "<rect x=\"{LEFT}\" y=\"{:.1}\" width=\"12\" height=\"4\" fill=\"{color}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\">{}</text>",
            legend_y - 4.0,
            LEFT + 18.0,
            legend_y,
            escape(class)
        );
    }
    let _ = writeln!(svg, "</svg></p>\n<p>SQL: <code>{}</code></p>", escape(&chart.sql));
    svg
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
    fn matrix_chart_draws_one_line_per_class_over_the_values() {
        let chart = MatrixChart {
            title: "reproduce: p99 latency per URL class against workers".into(),
            values: vec!["2".into(), "4".into(), "8".into()],
            series: vec![
                ("/db".into(), vec![Some(40_000.0), Some(20_000.0), Some(10_000.0)]),
                ("/static".into(), vec![Some(900.0), None, Some(800.0)]),
            ],
            sql: "SELECT 1".into(),
        };
        let svg = matrix_chart(&chart);
        assert_eq!(svg.matches("<polyline").count(), 2, "{svg}");
        assert_eq!(svg.matches("<circle").count(), 5, "{svg}");
        // x: values spread over the plot, y: 40 ms at the top (30), 10 ms a quarter up from 210.
        assert!(svg.contains("points=\"80.0,30.0 360.0,120.0 640.0,165.0\""), "{svg}");
        assert!(svg.contains("<title>/db 8: p99 10.0ms</title>"), "{svg}");
        assert!(svg.contains(">/static</text>"), "{svg}");
        assert!(svg.contains("SQL: <code>SELECT 1</code>"), "{svg}");
    }

    #[test]
    fn inline_markup_is_escaped_and_converted() {
        assert_eq!(
            inline("a `x<y` **FAIL** b\\|c"),
            "a <code>x&lt;y</code> <strong>FAIL</strong> b|c"
        );
    }
}
