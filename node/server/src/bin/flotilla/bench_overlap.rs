//! Which writes of `bench stall` overlapped a Raft snapshot, so the cost of
//! snapshots to writes is read from one run: the latencies of writes that
//! overlapped a snapshot being written on any member, beside those of
//! writes that overlapped none.
//!
//! A member logs each snapshot it took when the file is durable ("took a
//! snapshot and compacted the log", with `encode_ms` and `write_ms`); the
//! snapshot ran from the line's timestamp less those two, to the
//! timestamp. Reading the spans from the logs after the phase costs the
//! members nothing during the load, is exact to the millisecond, and works
//! with members of any version that log the line. (The members' `/metrics`
//! show the same as a gauge, `flotilla_raft_snapshot_writing`, for
//! monitoring.)

use std::time::Duration;

/// What a member logs when one of its snapshots is durable.
pub const SNAPSHOT_LINE: &str = "took a snapshot and compacted the log";

/// A span of wall-clock time, in seconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Span {
    pub start: f64,
    pub end: f64,
}

impl Span {
    /// The span `took` long from `start`.
    pub fn of(start: f64, took: Duration) -> Span {
        Span {
            start,
            end: start + took.as_secs_f64(),
        }
    }
}

/// The snapshots a member's log tells of, in the order it took them.
pub fn snapshot_spans(log: &str) -> Vec<Span> {
    log.lines()
        .filter(|l| l.contains(SNAPSHOT_LINE))
        .filter_map(parse_snapshot_line)
        .collect()
}

/// One snapshot's span from its log line: `<RFC 3339 UTC time> ... encode_ms=E
/// ... write_ms=W`.
fn parse_snapshot_line(line: &str) -> Option<Span> {
    let end = parse_utc(line.split_whitespace().next()?)?;
    let took_ms = field(line, "encode_ms")? + field(line, "write_ms")?;
    Some(Span {
        start: end - took_ms as f64 / 1e3,
        end,
    })
}

/// The number after `name=` in a log line.
fn field(line: &str, name: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

/// `2026-12-05T05:44:21.123456Z` as seconds since the Unix epoch.
fn parse_utc(s: &str) -> Option<f64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.splitn(3, ':');
    let hour: i64 = t.next()?.parse().ok()?;
    let minute: i64 = t.next()?.parse().ok()?;
    let second: f64 = t.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some((days * 86_400 + hour * 3_600 + minute * 60) as f64 + second)
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar
/// (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `spans` sorted and merged where they touch or overlap.
pub fn merge(mut spans: Vec<Span>) -> Vec<Span> {
    spans.retain(|s| s.end >= s.start);
    spans.sort_by(|a, b| a.start.total_cmp(&b.start));
    let mut merged: Vec<Span> = Vec::with_capacity(spans.len());
    for s in spans {
        match merged.last_mut() {
            Some(last) if s.start <= last.end => last.end = last.end.max(s.end),
            _ => merged.push(s),
        }
    }
    merged
}

/// Whether `w` shares any instant with one of `merged` (from [`merge`]).
pub fn overlaps(merged: &[Span], w: Span) -> bool {
    // The first span that does not end before the write starts.
    let i = merged.partition_point(|s| s.end < w.start);
    merged.get(i).is_some_and(|s| s.start <= w.end)
}

/// How long `merged` covers of `within`, in seconds.
pub fn covered(merged: &[Span], within: Span) -> f64 {
    merged
        .iter()
        .map(|s| (s.end.min(within.end) - s.start.max(within.start)).max(0.0))
        .sum()
}

/// The writes' latencies, split into those that overlapped a span of
/// `merged` and those that did not.
pub fn split(writes: &[(f64, Duration)], merged: &[Span]) -> (Vec<Duration>, Vec<Duration>) {
    let (mut during, mut clear) = (Vec::new(), Vec::new());
    for &(start, took) in writes {
        if overlaps(merged, Span::of(start, took)) {
            during.push(took);
        } else {
            clear.push(took);
        }
    }
    (during, clear)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_log_line_gives_the_snapshot_span() {
        let log = "\
2026-12-05T05:44:20.000000Z  INFO flotilla_node::driver::task: applied id=1
2026-12-05T05:44:21.500000Z  INFO flotilla_node::driver::task: took a snapshot and compacted the log id=2 index=40001 bytes=300000000 encode_ms=700 write_ms=300
not a line of ours: took a snapshot and compacted the log encode_ms=1
1970-01-02T00:00:10Z  INFO x: took a snapshot and compacted the log encode_ms=0 write_ms=2500
";
        let spans = snapshot_spans(log);
        assert_eq!(spans.len(), 2, "{spans:?}");
        // 2026-12-05 is day 20,792 since the epoch.
        let end = 20_792.0 * 86_400.0 + 5.0 * 3_600.0 + 44.0 * 60.0 + 21.5;
        assert!((spans[0].end - end).abs() < 1e-6, "{spans:?}");
        assert!((spans[0].start - (end - 1.0)).abs() < 1e-6, "{spans:?}");
        assert_eq!(
            spans[1],
            Span {
                start: 86_400.0 + 7.5,
                end: 86_410.0
            }
        );
    }

    #[test]
    fn writes_are_split_by_overlap_with_any_snapshot() {
        // Two members' snapshots: [10, 12] and [11, 13] merge; [20, 21].
        let merged = merge(vec![
            Span::of(20.0, ms(1000)),
            Span::of(10.0, ms(2000)),
            Span::of(11.0, ms(2000)),
        ]);
        assert_eq!(
            merged,
            vec![
                Span {
                    start: 10.0,
                    end: 13.0
                },
                Span {
                    start: 20.0,
                    end: 21.0
                }
            ]
        );
        let writes = [
            (9.0, ms(5)),      // before any: clear
            (9.999, ms(2)),    // runs into the first: during
            (12.5, ms(1)),     // inside the merged one: during
            (13.001, ms(1)),   // just after it: clear
            (19.0, ms(2500)),  // spans the second whole: during
            (21.0005, ms(10)), // after the last: clear
        ];
        let (during, clear) = split(&writes, &merged);
        assert_eq!(during, vec![ms(2), ms(1), ms(2500)]);
        assert_eq!(clear, vec![ms(5), ms(1), ms(10)]);
        assert!(split(&writes, &[]).0.is_empty(), "no snapshots, no overlap");
    }

    #[test]
    fn coverage_counts_only_inside_the_window() {
        let merged = merge(vec![Span::of(0.0, ms(4000)), Span::of(8.0, ms(4000))]);
        let window = Span {
            start: 2.0,
            end: 10.0,
        };
        assert!((covered(&merged, window) - 4.0).abs() < 1e-9);
    }
}
