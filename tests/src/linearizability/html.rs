//! A self-contained HTML timeline of a history, for reading a failure.
//!
//! One row per client (split into lanes if a client had overlapping
//! operations), one box per operation from call to return. Positions are
//! the rank of each timestamp rather than the time itself, as in
//! Porcupine: what matters is which operations overlap, and real gaps
//! would squash short operations into slivers.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;

use super::checker::CheckResult;
use super::history::{History, HistoryError, OpKind, Operation, Outcome};
use super::kv::{KvInput, KvModel, KvOutput};
use super::model::Model;

/// Above this many operations only the failing key is drawn, to keep the
/// page usable.
const DRAW_ALL_OPS_MAX: usize = 2_000;
const COLUMN_PX: usize = 36;
const LANE_PX: usize = 26;

/// Writes [`render_html`] to `path`.
pub fn write_html(
    history: &History,
    result: &CheckResult,
    path: impl AsRef<Path>,
) -> Result<(), HistoryError> {
    let path = path.as_ref();
    std::fs::write(path, render_html(history, result)).map_err(|source| HistoryError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Renders the timeline of `history`, highlighting for an illegal result
/// the longest linearization found (green, numbered in order) and the
/// operation the search got stuck on (red). Hover a box for details.
pub fn render_html(history: &History, result: &CheckResult) -> String {
    let (failing_key, order, stuck) = match result {
        CheckResult::Illegal { key, partial } => (
            Some(key.as_str()),
            partial
                .longest
                .iter()
                .enumerate()
                .map(|(n, &i)| (i, n + 1))
                .collect(),
            partial.stuck_op,
        ),
        _ => (None, HashMap::new(), None),
    };
    let shown: Vec<usize> = (0..history.operations.len())
        .filter(|&i| {
            history.operations.len() <= DRAW_ALL_OPS_MAX
                || failing_key.is_none_or(|k| history.operations[i].key == k)
        })
        .collect();
    let times = time_columns(history, &shown);
    let end_column = times.len();
    let column = |ns: Option<u64>| {
        ns.and_then(|t| times.get(&t).copied())
            .unwrap_or(end_column)
    };

    let mut rows: BTreeMap<u64, Vec<Vec<usize>>> = BTreeMap::new();
    let mut by_call = shown.clone();
    by_call.sort_by_key(|&i| (history.operations[i].call_ns, i));
    for &i in &by_call {
        let op = &history.operations[i];
        let lanes = rows.entry(op.client_id).or_default();
        let start = column(Some(op.call_ns));
        let free = lanes.iter().position(|lane| {
            lane.last()
                .is_none_or(|&j| column(history.operations[j].return_ns) < start)
        });
        match free {
            Some(lane) => lanes[lane].push(i),
            None => lanes.push(vec![i]),
        }
    }

    let mut body = String::new();
    let width = (end_column + 2) * COLUMN_PX;
    for (client, lanes) in &rows {
        let height = lanes.len() * LANE_PX;
        let _ = write!(
            body,
            "<div class=row><div class=label>client {client}</div>\
             <div class=track style=\"width:{width}px;height:{height}px\">"
        );
        for (lane, ops) in lanes.iter().enumerate() {
            for &i in ops {
                let op = &history.operations[i];
                let (left, right) = (column(Some(op.call_ns)), column(op.return_ns));
                let class = classify(op, i, failing_key, &order, stuck);
                let number = order.get(&i).map(|n| format!("#{n} ")).unwrap_or_default();
                let _ = write!(
                    body,
                    "<div class=\"op {class}\" style=\"left:{}px;top:{}px;width:{}px\" \
                     title=\"{}\">{}</div>",
                    left * COLUMN_PX,
                    lane * LANE_PX + 2,
                    (right - left).max(1) * COLUMN_PX - 2,
                    escape(&tooltip(op, i)),
                    escape(&format!("{number}{}", describe(op))),
                );
            }
        }
        body.push_str("</div></div>\n");
    }
    page(history, result, &order, &body, shown.len())
}

/// Maps each distinct timestamp of the shown operations to its rank.
fn time_columns(history: &History, shown: &[usize]) -> HashMap<u64, usize> {
    let mut times: Vec<u64> = shown
        .iter()
        .flat_map(|&i| {
            let op = &history.operations[i];
            [Some(op.call_ns), op.return_ns]
        })
        .flatten()
        .collect();
    times.sort_unstable();
    times.dedup();
    times
        .into_iter()
        .enumerate()
        .map(|(rank, t)| (t, rank))
        .collect()
}

fn classify(
    op: &Operation,
    index: usize,
    failing_key: Option<&str>,
    order: &HashMap<usize, usize>,
    stuck: Option<usize>,
) -> String {
    let mut class = match () {
        _ if stuck == Some(index) => "stuck",
        _ if order.contains_key(&index) => "linearized",
        _ if failing_key == Some(op.key.as_str()) => "pending",
        _ if failing_key.is_some() => "other",
        _ => "plain",
    }
    .to_owned();
    match op.outcome {
        Outcome::Unknown => class.push_str(" unknown"),
        Outcome::Fail => class.push_str(" failed"),
        Outcome::Ok => {}
    }
    class
}

/// The operation as the KV model describes it.
fn describe(op: &Operation) -> String {
    let key = op.key.clone();
    let value = op.value.clone().unwrap_or_default();
    let input = match op.op {
        OpKind::Get => KvInput::get(key),
        OpKind::Put => KvInput::put(key, value),
        OpKind::Delete => KvInput::delete(key),
        OpKind::Cas => KvInput::cas(key, op.expected.clone().flatten(), value),
    };
    let output = op.output.as_ref().and_then(|o| match op.op {
        OpKind::Get => o.value.clone().map(KvOutput::Value),
        OpKind::Cas => o.succeeded.map(KvOutput::Succeeded),
        OpKind::Put | OpKind::Delete => None,
    });
    KvModel.describe_operation(&input, output.as_ref())
}

fn tooltip(op: &Operation, index: usize) -> String {
    let returned = op
        .return_ns
        .map_or_else(|| "never".to_owned(), |r| r.to_string());
    format!(
        "operation {index}: {}\nclient {}, key {:?}, outcome {:?}\ncall_ns {}, return_ns {returned}",
        describe(op),
        op.client_id,
        op.key,
        op.outcome,
        op.call_ns
    )
}

fn page(
    history: &History,
    result: &CheckResult,
    order: &HashMap<usize, usize>,
    body: &str,
    shown: usize,
) -> String {
    let mut steps: Vec<(usize, usize)> = order.iter().map(|(&i, &n)| (n, i)).collect();
    steps.sort_unstable();
    let mut list = String::new();
    for (n, i) in steps {
        let _ = write!(
            list,
            "<li value={n}>{}</li>",
            escape(&describe(&history.operations[i]))
        );
    }
    if let CheckResult::Illegal { partial, .. } = result {
        let stuck = partial
            .stuck_description
            .as_deref()
            .unwrap_or("(no operation could be linearized first)");
        let _ = write!(
            list,
            "</ol><p>State after it: {}. Stuck at: {}</p><ol>",
            escape(&partial.state_after),
            escape(stuck)
        );
    }
    let total = history.operations.len();
    format!(
        r#"<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Flotilla history: {verdict}</title>
<style>
body {{ font: 13px sans-serif; margin: 16px; }}
.row {{ display: flex; border-top: 1px solid #ddd; }}
.label {{ width: 80px; flex: none; padding-top: 4px; }}
.track {{ position: relative; flex: none; }}
.op {{ position: absolute; height: 20px; box-sizing: border-box; border: 1px solid #555;
  border-radius: 3px; overflow: hidden; white-space: nowrap; font-size: 11px; padding: 2px; }}
.plain {{ background: #cfe0f5; }} .other {{ background: #eef1f5; color: #999; border-color: #ccc; }}
.pending {{ background: #f6d58e; }} .linearized {{ background: #9ad69a; }}
.stuck {{ background: #f08080; border: 2px solid #a00; }}
.unknown {{ border-style: dashed; background-image: repeating-linear-gradient(45deg,
  transparent 0 6px, rgba(0,0,0,.08) 6px 12px); }}
.failed {{ text-decoration: line-through; opacity: .6; }}
#timeline {{ overflow-x: auto; }}
</style></head><body>
<h2>{verdict}</h2>
<p>{shown} of {total} operations drawn. Boxes span call to return (by rank of time);
dashed boxes have unknown outcome and extend to the end. Green: the longest linearization
found, numbered in order; red: where the search got stuck; amber: other operations on the
failing key; grey: other keys. Hover a box for details.</p>
<div id=timeline>
{body}</div>
<h3>Longest linearization</h3><ol>{list}</ol>
</body></html>
"#,
        verdict = escape(&result.to_string()),
    )
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' => out.push_str("&#10;"),
            _ => out.push(c),
        }
    }
    out
}
