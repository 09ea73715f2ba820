//! etcd's watch response fragments: a watcher created with `fragment` set
//! gets a response too large for a client to take in one piece split into
//! several, each marked `fragment` but the last.

use flotilla_proto::etcdserverpb::WatchResponse;
use prost::Message as _;

/// The field number of `WatchResponse.events`.
const EVENTS_FIELD: u32 = 11;

/// Splits `response` as etcd does: kept whole when it encodes to fewer than
/// `bytes_max` bytes or has fewer than two events; otherwise into pieces
/// carrying its header and id, each as many of the events, in order, as
/// stay below `bytes_max` (at least one), all but the last marked
/// `fragment`. A client joins pieces until one arrives unmarked.
pub(super) fn fragments(response: WatchResponse, bytes_max: usize) -> Vec<WatchResponse> {
    if response.events.len() < 2 || response.encoded_len() < bytes_max {
        return vec![response];
    }
    let mut template = response;
    let events = std::mem::take(&mut template.events);
    template.fragment = true;
    let base = template.encoded_len();
    let mut out = Vec::new();
    let mut piece = Vec::new();
    let mut bytes = base;
    for event in events {
        let len = prost::encoding::message::encoded_len(EVENTS_FIELD, &event);
        if !piece.is_empty() && bytes + len >= bytes_max {
            out.push(WatchResponse {
                events: std::mem::take(&mut piece),
                ..template.clone()
            });
            bytes = base;
        }
        bytes += len;
        piece.push(event);
    }
    out.push(WatchResponse {
        events: piece,
        fragment: false,
        ..template
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_proto::etcdserverpb::ResponseHeader;
    use flotilla_proto::mvccpb::{Event, KeyValue};

    fn event(n: usize, value_bytes: usize) -> Event {
        Event {
            kv: Some(KeyValue {
                key: format!("key-{n:03}").into_bytes(),
                value: vec![b'v'; value_bytes],
                mod_revision: 7,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn response(events: Vec<Event>) -> WatchResponse {
        WatchResponse {
            header: Some(ResponseHeader {
                revision: 7,
                member_id: 1,
                ..Default::default()
            }),
            watch_id: 3,
            events,
            ..Default::default()
        }
    }

    #[test]
    fn a_small_response_or_a_single_event_stays_whole() {
        let small = response((0..3).map(|n| event(n, 10)).collect());
        assert_eq!(fragments(small.clone(), 10_000), vec![small]);
        let big_one = response(vec![event(0, 5_000)]);
        assert_eq!(fragments(big_one.clone(), 1_000), vec![big_one]);
    }

    #[test]
    fn a_large_response_splits_below_the_limit_in_order() {
        let events: Vec<Event> = (0..50).map(|n| event(n, 100)).collect();
        let whole = response(events.clone());
        let limit = 1_000;
        assert!(whole.encoded_len() >= limit);
        let pieces = fragments(whole, limit);
        assert!(pieces.len() > 1, "{} pieces", pieces.len());
        let (last, rest) = pieces.split_last().expect("pieces");
        assert!(rest.iter().all(|p| p.fragment), "all but the last marked");
        assert!(!last.fragment, "the last one unmarked");
        for p in &pieces {
            assert!(p.encoded_len() < limit, "{} bytes", p.encoded_len());
            assert!(!p.events.is_empty());
            assert_eq!(
                (p.watch_id, p.header.as_ref().map(|h| h.revision)),
                (3, Some(7))
            );
        }
        // Each piece is as full as it can be: the next event would not fit.
        for (p, next) in rest.iter().zip(&pieces[1..]) {
            let mut fuller = p.clone();
            fuller.events.push(next.events[0].clone());
            assert!(fuller.encoded_len() >= limit);
        }
        let joined: Vec<Event> = pieces.into_iter().flat_map(|p| p.events).collect();
        assert_eq!(joined, events, "nothing lost, nothing reordered");
    }

    #[test]
    fn an_event_larger_than_the_limit_travels_alone() {
        let events = vec![event(0, 10), event(1, 3_000), event(2, 10)];
        let pieces = fragments(response(events.clone()), 1_000);
        let sizes: Vec<usize> = pieces.iter().map(|p| p.events.len()).collect();
        assert_eq!(sizes, vec![1, 1, 1]);
        let flags: Vec<bool> = pieces.iter().map(|p| p.fragment).collect();
        assert_eq!(flags, vec![true, true, false]);
    }
}
