//! `report.html`: one self-contained page per run (inline SVG and CSS, no script, no external
//! asset) — a timeline of every operation per client, coloured by outcome, with the nemesis
//! windows shaded and labelled; the checker verdicts; the availability and recovery figures.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use isle_chaos::availability::Availability;
use isle_chaos::{History, Outcome, Verdict};

/// A nemesis window as it happened, in seconds since the workload started.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Shade {
    /// Label ("partition {1,2,3}|{4,5}").
    pub label: String,
    /// Start, s.
    pub from_s: f64,
    /// End, s (the final heal for a window without a stop).
    pub to_s: f64,
}

const OK: &str = "#2e7d32";
const FAIL: &str = "#c62828";
const UNKNOWN: &str = "#f9a825";

fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The page.
pub fn html(
    name: &str,
    engine: &str,
    history: &History,
    shades: &[Shade],
    verdicts: &[Verdict],
    figures: &[Availability],
) -> String {
    let mut page = String::new();
    let failed = verdicts.iter().any(Verdict::is_violated);
    let _ = write!(
        page,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>chaos: {title}</title>\
         <style>body{{font:14px system-ui,sans-serif;margin:16px;color:#222;background:#fff}}\
         h1{{font-size:20px;margin:0 0 4px}} h2{{font-size:16px;margin:18px 0 6px}}\
         table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:2px 6px;\
         text-align:left;vertical-align:top}} .ok{{color:{OK}}} .bad{{color:{FAIL}}} .warn{{color:#e65100}}\
         .key span{{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;\
         vertical-align:middle}} pre{{margin:0;white-space:pre-wrap}}</style></head><body>\
         <h1>{title} <span class=\"{class}\">{result}</span></h1>\
         <div>engine {engine}; {ops} operations; \
         <span class=\"key\"><span style=\"background:{OK}\"></span>ok\
         <span style=\"background:{FAIL}\"></span>refused\
         <span style=\"background:{UNKNOWN}\"></span>indeterminate\
         <span style=\"background:#90caf9\"></span>nemesis</span></div>",
        title = esc(name),
        engine = esc(engine),
        class = if failed { "bad" } else { "ok" },
        result = if failed { "VIOLATED" } else { "passed" },
        ops = history.len(),
    );
    page.push_str(&timeline(history, shades));
    page.push_str(
        "<h2>Verdicts</h2><table><tr><th>checker</th><th>status</th><th>details</th></tr>",
    );
    for verdict in verdicts {
        let class = if verdict.is_violated() {
            "bad"
        } else if verdict.undecided.is_empty() {
            "ok"
        } else {
            "warn"
        };
        let mut details = String::new();
        for violation in &verdict.violations {
            let _ = writeln!(details, "VIOLATION {violation}");
        }
        for why in &verdict.undecided {
            let _ = writeln!(details, "undecided: {why}");
        }
        for note in &verdict.notes {
            let _ = writeln!(details, "{note}");
        }
        let _ = write!(
            page,
            "<tr><td>{}</td><td class=\"{class}\">{}</td><td><pre>{}</pre></td></tr>",
            esc(&verdict.checker),
            esc(&verdict.status().to_string()),
            esc(details.trim_end())
        );
    }
    page.push_str(
        "</table><h2>Availability during each nemesis window</h2><table><tr>\
        <th>window</th><th>keyspace</th><th>group</th><th>ok / requests</th><th>refused</th>\
        <th>indeterminate</th><th>first success after the window</th></tr>",
    );
    for row in figures {
        let after = row
            .first_ok_after
            .map(|ns| format!("{:.2} s", ns as f64 / 1e9))
            .unwrap_or_else(|| "-".into());
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}/{} ({:.0}%)</td><td>{}</td><td>{}</td>\
             <td>{after}</td></tr>",
            esc(&row.window),
            row.keyspace,
            esc(&row.group),
            row.ok,
            row.requests,
            row.fraction.unwrap_or(0.0) * 100.0,
            row.refused,
            row.indeterminate
        );
    }
    page.push_str("</table></body></html>\n");
    page
}

/// The SVG timeline: one row per client (labelled with its node), time across.
fn timeline(history: &History, shades: &[Shade]) -> String {
    let mut rows: BTreeMap<(String, u64), usize> = BTreeMap::new();
    for op in &history.ops {
        let node = op.node.clone().unwrap_or_else(|| "-".into());
        let next = rows.len();
        rows.entry((node, op.process)).or_insert(next);
    }
    // Rows sorted by node, then client.
    let order: BTreeMap<(String, u64), usize> = rows
        .keys()
        .enumerate()
        .map(|(i, k)| (k.clone(), i))
        .collect();
    let end_ns = history
        .ops
        .iter()
        .map(|op| op.complete)
        .chain(shades.iter().map(|s| (s.to_s * 1e9) as u64))
        .max()
        .unwrap_or(1)
        .max(1);
    let (left, top, width) = (120.0, 20.0 + 16.0 * shades.len().min(6) as f64, 1240.0);
    let row_h = (560.0 / order.len().max(1) as f64).clamp(8.0, 28.0);
    let height = top + row_h * order.len() as f64 + 30.0;
    let x = |ns: u64| left + width * ns as f64 / end_ns as f64;
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{height}\" \
         font-size=\"11\" role=\"img\"><rect width=\"{w}\" height=\"{height}\" fill=\"#fafafa\"/>",
        w = left + width + 20.0
    );
    // Nemesis windows, behind everything, labels stacked above the rows.
    for (i, shade) in shades.iter().enumerate() {
        let (from, to) = (x((shade.from_s * 1e9) as u64), x((shade.to_s * 1e9) as u64));
        let lane = (i % 6) as f64;
        // A label that would run off the right edge ends at it instead.
        let room = left + width - from;
        let (tx, anchor) = if room < 6.5 * shade.label.chars().count() as f64 {
            (left + width, "end")
        } else {
            (from + 2.0, "start")
        };
        let _ = write!(
            svg,
            "<rect x=\"{from:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" \
             fill=\"#90caf9\" fill-opacity=\"0.35\" stroke=\"#1e88e5\"/>\
             <text x=\"{tx:.1}\" y=\"{ly:.1}\" fill=\"#0d47a1\" \
             text-anchor=\"{anchor}\">{label}</text>",
            y = top - 2.0,
            w = (to - from).max(1.0),
            h = row_h * order.len() as f64 + 4.0,
            ly = 14.0 + 16.0 * lane,
            label = esc(&shade.label)
        );
    }
    // Seconds.
    let secs = end_ns / 1_000_000_000;
    let step = (secs / 20).max(1);
    for s in (0..=secs).step_by(step as usize) {
        let sx = x(s * 1_000_000_000);
        let _ = write!(
            svg,
            "<line x1=\"{sx:.1}\" y1=\"{top}\" x2=\"{sx:.1}\" y2=\"{b:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{sx:.1}\" y=\"{ty:.1}\" text-anchor=\"middle\">{s}s</text>",
            b = height - 24.0,
            ty = height - 10.0
        );
    }
    for ((node, process), row) in &order {
        let y = top + row_h * *row as f64;
        let _ = write!(
            svg,
            "<text x=\"4\" y=\"{ty:.1}\">{} client {process}</text>",
            esc(node),
            ty = y + row_h * 0.75
        );
    }
    for op in &history.ops {
        let node = op.node.clone().unwrap_or_else(|| "-".into());
        let Some(row) = order.get(&(node, op.process)) else {
            continue;
        };
        let colour = match op.outcome {
            Outcome::Ok(_) => OK,
            Outcome::Fail => FAIL,
            Outcome::Indeterminate => UNKNOWN,
        };
        let (from, to) = (x(op.invoke), x(op.complete.max(op.invoke)));
        let _ = write!(
            svg,
            "<rect x=\"{from:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" \
             fill=\"{colour}\"><title>{t}</title></rect>",
            y = top + row_h * *row as f64 + 1.0,
            w = (to - from).max(1.5),
            h = (row_h - 2.0).max(1.0),
            t = esc(&format!("{} {}", op.key, op))
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use isle_chaos::{Op, Operation, Ret};

    #[test]
    fn the_page_has_a_timeline_with_every_operation_and_the_windows() {
        let mut history = History::new();
        history
            .push(Operation::new(0, "k", Op::Read, 0, 5, Outcome::Ok(Ret::Value(None))).on("n1"));
        history.push(Operation::new(1, "k<", Op::Write("v".into()), 2, 9, Outcome::Fail).on("n2"));
        let shades = [Shade {
            label: "partition <x>".into(),
            from_s: 0.0,
            to_s: 1.0,
        }];
        let page = html(
            "t",
            "loopback",
            &history,
            &shades,
            &[Verdict::new("c")],
            &[],
        );
        assert!(page.starts_with("<!doctype html>"));
        assert_eq!(
            page.matches("<title>").count(),
            3,
            "page title and one per op"
        );
        assert!(page.contains("partition &lt;x&gt;"));
        assert!(page.contains(FAIL) && page.contains(OK));
        assert!(!page.contains("<script") && !page.contains("http://") || page.contains("xmlns"));
    }
}
