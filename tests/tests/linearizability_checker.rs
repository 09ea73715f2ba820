//! Tests of the linearizability checker: hand-written histories with a known
//! verdict, the JSON format, generated histories, and a comparison against
//! brute force on small random histories.

use flotilla_tests::linearizability::{
    Budget, CheckResult, GenerateConfig, History, HistoryRecorder, KvInput, KvOutput, OpKind,
    Operation, Outcome, Output, check_and_report, check_kv, random_kv_history, render_html,
    write_html,
};
use proptest::prelude::*;

/// Generous but finite: these histories are tiny, and a bug that makes the
/// search blow up should fail as a timeout rather than hang.
const BUDGET: Budget = Budget {
    steps_max: Some(50_000_000),
    wall_time_max: None,
};

fn operation(client_id: u64, op: OpKind, key: &str, call_ns: u64, return_ns: u64) -> Operation {
    Operation {
        client_id,
        op,
        key: key.to_owned(),
        value: None,
        expected: None,
        call_ns,
        return_ns: Some(return_ns),
        outcome: Outcome::Ok,
        output: None,
    }
}

fn put(client: u64, key: &str, value: &str, call_ns: u64, return_ns: u64) -> Operation {
    Operation {
        value: Some(value.to_owned()),
        ..operation(client, OpKind::Put, key, call_ns, return_ns)
    }
}

fn get(client: u64, key: &str, read: Option<&str>, call_ns: u64, return_ns: u64) -> Operation {
    Operation {
        output: Some(Output::value(read.map(str::to_owned))),
        ..operation(client, OpKind::Get, key, call_ns, return_ns)
    }
}

fn delete(client: u64, key: &str, call_ns: u64, return_ns: u64) -> Operation {
    operation(client, OpKind::Delete, key, call_ns, return_ns)
}

#[allow(clippy::too_many_arguments)] // mirrors the JSON fields one to one
fn cas(
    client: u64,
    key: &str,
    expected: Option<&str>,
    value: &str,
    succeeded: bool,
    call_ns: u64,
    return_ns: u64,
) -> Operation {
    Operation {
        value: Some(value.to_owned()),
        expected: Some(expected.map(str::to_owned)),
        output: Some(Output::succeeded(succeeded)),
        ..operation(client, OpKind::Cas, key, call_ns, return_ns)
    }
}

/// The same operation with unknown outcome: no return, no output.
fn unknown(op: Operation) -> Operation {
    Operation {
        return_ns: None,
        outcome: Outcome::Unknown,
        output: None,
        ..op
    }
}

fn failed(op: Operation) -> Operation {
    Operation {
        outcome: Outcome::Fail,
        output: None,
        ..op
    }
}

fn check(operations: Vec<Operation>) -> CheckResult {
    let history = History {
        model: "kv".to_owned(),
        operations,
    };
    check_kv(&history, BUDGET).expect("well-formed history")
}

fn assert_linearizable(operations: Vec<Operation>) {
    let result = check(operations);
    assert!(result.is_ok(), "{result}");
}

fn assert_illegal_on(key: &str, operations: Vec<Operation>) {
    match check(operations) {
        CheckResult::Illegal { key: failing, .. } => assert_eq!(failing, key),
        other => panic!("expected illegal on {key:?}, got {other}"),
    }
}

const HISTORY_MD_EXAMPLE: &str = r#"{
  "model": "kv",
  "operations": [
    {"client_id": 0, "op": "put",    "key": "k1", "value": "a",
     "call_ns": 1000, "return_ns": 2500, "outcome": "ok"},
    {"client_id": 1, "op": "get",    "key": "k1",
     "call_ns": 1200, "return_ns": 3000, "outcome": "ok", "output": {"value": "a"}},
    {"client_id": 2, "op": "delete", "key": "k1",
     "call_ns": 1300, "return_ns": null, "outcome": "unknown"},
    {"client_id": 3, "op": "cas",    "key": "k2", "expected": null, "value": "b",
     "call_ns": 1400, "return_ns": 2000, "outcome": "ok", "output": {"succeeded": true}}
  ]
}"#;

#[test]
fn history_md_example_parses_and_is_linearizable() {
    let history = History::from_json(HISTORY_MD_EXAMPLE).expect("parses");
    let expected = vec![
        put(0, "k1", "a", 1000, 2500),
        get(1, "k1", Some("a"), 1200, 3000),
        unknown(delete(2, "k1", 1300, 0)),
        cas(3, "k2", None, "b", true, 1400, 2000),
    ];
    assert_eq!(history.model, "kv");
    assert_eq!(history.operations, expected);
    assert!(check_kv(&history, BUDGET).expect("valid").is_ok());
}

#[test]
fn json_round_trip_through_a_file() {
    let history = random_kv_history(&GenerateConfig {
        operations: 300,
        unknown_probability: 0.2,
        ..GenerateConfig::default()
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("history.json");
    history.save(&path).expect("save");
    assert_eq!(History::load(&path).expect("load"), history);

    let exported = history
        .export_to(&dir.path().join("exports"), "sim::kv_test", 42)
        .expect("export");
    assert!(
        exported.ends_with("exports/sim--kv_test-42.json"),
        "{exported:?}"
    );
    assert_eq!(History::load(&exported).expect("load"), history);
}

#[test]
fn malformed_histories_are_errors_not_panics() {
    let dir = tempfile::tempdir().expect("temp dir");
    assert!(History::load(dir.path().join("missing.json")).is_err());
    assert!(History::from_json("{\"model\": \"kv\"}").is_err());
    assert!(History::from_json("[1, 2]").is_err());
    let no_output = operation(0, OpKind::Get, "k", 1, 2);
    let history = History {
        model: "kv".to_owned(),
        operations: vec![no_output],
    };
    assert!(check_kv(&history, BUDGET).is_err());
    let other_model = History {
        model: "log".to_owned(),
        operations: Vec::new(),
    };
    assert!(check_kv(&other_model, BUDGET).is_err());
}

#[test]
fn sequential_history_is_linearizable() {
    assert_linearizable(vec![
        get(0, "k", None, 0, 10),
        put(0, "k", "a", 20, 30),
        get(0, "k", Some("a"), 40, 50),
        put(1, "k", "b", 60, 70),
        get(0, "k", Some("b"), 80, 90),
    ]);
}

#[test]
fn reads_concurrent_with_a_write_may_see_either_value() {
    assert_linearizable(vec![
        put(0, "k", "a", 0, 10),
        put(1, "k", "b", 20, 100),
        get(2, "k", Some("b"), 30, 40),
        get(3, "k", Some("a"), 35, 50),
    ]);
}

#[test]
fn reads_concurrent_with_a_write_cannot_flip_back() {
    // Once client 2 saw "b" (returned at 40), a read starting later must
    // not see "a" again.
    assert_illegal_on(
        "k",
        vec![
            put(0, "k", "a", 0, 10),
            put(1, "k", "b", 20, 100),
            get(2, "k", Some("b"), 30, 40),
            get(3, "k", Some("a"), 45, 50),
        ],
    );
}

#[test]
fn cas_successes_and_failures_that_match_the_state_are_linearizable() {
    assert_linearizable(vec![
        cas(0, "k", None, "a", true, 0, 10),
        cas(1, "k", None, "x", false, 20, 30),
        cas(0, "k", Some("a"), "b", true, 40, 50),
        cas(1, "k", Some("a"), "c", false, 45, 55),
        get(2, "k", Some("b"), 60, 70),
    ]);
}

#[test]
fn concurrent_cas_only_one_wins() {
    assert_linearizable(vec![
        put(0, "k", "a", 0, 10),
        cas(1, "k", Some("a"), "b", true, 20, 40),
        cas(2, "k", Some("a"), "c", false, 20, 40),
    ]);
    assert_illegal_on(
        "k",
        vec![
            put(0, "k", "a", 0, 10),
            cas(1, "k", Some("a"), "b", true, 20, 40),
            cas(2, "k", Some("a"), "c", true, 20, 40),
        ],
    );
}

#[test]
fn unknown_write_that_took_effect_is_linearizable() {
    assert_linearizable(vec![
        put(0, "k", "a", 0, 10),
        unknown(put(1, "k", "b", 20, 0)),
        get(2, "k", Some("b"), 1_000, 1_010),
        get(2, "k", Some("b"), 2_000, 2_010),
    ]);
}

#[test]
fn unknown_write_that_never_took_effect_is_linearizable() {
    assert_linearizable(vec![
        put(0, "k", "a", 0, 10),
        unknown(put(1, "k", "b", 20, 0)),
        unknown(delete(1, "k", 25, 0)),
        unknown(cas(1, "k", Some("a"), "c", false, 30, 0)),
        get(2, "k", Some("a"), 1_000, 1_010),
    ]);
}

#[test]
fn unknown_write_takes_effect_at_most_once() {
    assert_illegal_on(
        "k",
        vec![
            put(0, "k", "a", 0, 10),
            unknown(put(1, "k", "b", 20, 0)),
            get(2, "k", Some("b"), 1_000, 1_010),
            get(2, "k", Some("a"), 2_000, 2_010),
        ],
    );
}

#[test]
fn unknown_write_cannot_take_effect_before_its_call() {
    assert_illegal_on(
        "k",
        vec![
            get(2, "k", Some("b"), 0, 10),
            unknown(put(1, "k", "b", 20, 0)),
        ],
    );
}

#[test]
fn failed_operations_are_ignored() {
    assert_linearizable(vec![
        put(0, "k", "a", 0, 10),
        failed(put(1, "k", "b", 20, 30)),
        get(2, "k", Some("a"), 40, 50),
    ]);
    assert_illegal_on(
        "k",
        vec![
            put(0, "k", "a", 0, 10),
            failed(put(1, "k", "b", 20, 30)),
            get(2, "k", Some("b"), 40, 50),
        ],
    );
}

#[test]
fn deletes_make_the_key_absent() {
    assert_linearizable(vec![
        put(0, "k", "a", 0, 10),
        delete(0, "k", 20, 30),
        get(1, "k", None, 40, 50),
        cas(1, "k", None, "b", true, 60, 70),
        get(0, "k", Some("b"), 80, 90),
    ]);
    assert_illegal_on(
        "k",
        vec![
            put(0, "k", "a", 0, 10),
            delete(0, "k", 20, 30),
            get(1, "k", Some("a"), 40, 50),
        ],
    );
}

#[test]
fn stale_read_is_illegal() {
    assert_illegal_on(
        "k",
        vec![
            put(0, "k", "a", 0, 10),
            put(1, "k", "b", 20, 30),
            get(2, "k", Some("a"), 40, 50),
        ],
    );
}

#[test]
fn lost_write_is_illegal() {
    // The write of "b" was acknowledged, yet a later read (nothing
    // concurrent) sees the value from before it.
    assert_illegal_on(
        "k2",
        vec![
            put(0, "k1", "x", 0, 10),
            put(0, "k2", "a", 0, 10),
            put(1, "k2", "b", 20, 30),
            get(1, "k1", Some("x"), 40, 50),
            get(2, "k2", Some("a"), 40, 50),
        ],
    );
    assert_illegal_on(
        "k",
        vec![put(0, "k", "a", 0, 10), get(1, "k", None, 20, 30)],
    );
}

#[test]
fn read_of_a_never_written_value_is_illegal() {
    assert_illegal_on(
        "k",
        vec![put(0, "k", "a", 0, 10), get(1, "k", Some("ghost"), 5, 30)],
    );
}

#[test]
fn cas_that_reports_success_wrongly_is_illegal() {
    assert_illegal_on(
        "k",
        vec![
            put(0, "k", "a", 0, 10),
            cas(1, "k", Some("z"), "b", true, 20, 30),
        ],
    );
    assert_illegal_on(
        "k",
        vec![
            put(0, "k", "a", 0, 10),
            cas(1, "k", Some("a"), "b", false, 20, 30),
        ],
    );
}

#[test]
fn illegal_result_names_the_longest_prefix_and_the_stuck_operation() {
    let operations = vec![
        put(0, "k", "a", 0, 10),
        put(1, "k", "b", 20, 30),
        get(2, "k", Some("a"), 40, 50),
    ];
    let CheckResult::Illegal { key, partial } = check(operations) else {
        panic!("expected illegal");
    };
    assert_eq!(key, "k");
    assert_eq!(partial.partition_ops, vec![0, 1, 2]);
    assert_eq!(partial.longest, vec![0, 1]);
    assert_eq!(partial.state_after, "\"b\"");
    assert_eq!(partial.stuck_op, Some(2));
}

#[test]
fn illegal_result_indices_refer_to_the_history_even_with_dropped_operations() {
    // Failed operations and unknown gets are dropped before the search;
    // the result must still point at the right history entries.
    let operations = vec![
        failed(put(3, "k", "z", 0, 5)),
        unknown(get(3, "k", None, 0, 0)),
        put(0, "k", "a", 0, 10),
        get(2, "k", Some("z"), 40, 50),
    ];
    let CheckResult::Illegal { partial, .. } = check(operations) else {
        panic!("expected illegal");
    };
    assert_eq!(partial.partition_ops, vec![2, 3]);
    assert_eq!(partial.stuck_op, Some(3));
}

#[test]
fn html_timeline_of_a_failing_history() {
    let history = History {
        model: "kv".to_owned(),
        operations: vec![
            put(0, "k", "a", 0, 10),
            put(1, "k", "b", 20, 30),
            unknown(put(3, "k", "<c>", 25, 0)),
            get(2, "k", Some("a"), 40, 50),
            put(0, "other", "x", 0, 10),
        ],
    };
    let result = check_kv(&history, BUDGET).expect("valid");
    assert!(result.is_illegal(), "{result}");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("timeline.html");
    write_html(&history, &result, &path).expect("write");
    let html = std::fs::read_to_string(&path).expect("read back");
    assert!(html.starts_with("<!DOCTYPE html>"));
    for client in 0..4 {
        assert!(
            html.contains(&format!("client {client}<")),
            "client {client}"
        );
    }
    assert!(html.contains("class=\"op stuck\""));
    assert!(html.contains("unknown"));
    assert!(html.contains("&lt;c&gt;"), "values are escaped");
    assert!(!html.contains("<c>"));
    // Ok results render too, without highlights.
    assert!(render_html(&history, &CheckResult::Ok).contains("linearizable"));
}

#[test]
fn check_and_report_leaves_files_for_a_failure() {
    let history = History {
        model: "kv".to_owned(),
        operations: vec![put(0, "k", "a", 0, 10), get(1, "k", None, 20, 30)],
    };
    let seed = std::process::id();
    let report =
        check_and_report(&history, BUDGET, "check_and_report_failure", seed).expect("valid");
    assert!(report.result.is_illegal(), "{report}");
    let json = report.history_path.clone().expect("history written");
    let html = report.html_path.clone().expect("timeline written");
    assert_eq!(History::load(&json).expect("load"), history);
    assert!(
        std::fs::read_to_string(&html)
            .expect("read")
            .contains("stuck")
    );
    let text = report.to_string();
    assert!(text.contains(&json.display().to_string()), "{text}");
    assert!(text.contains(&html.display().to_string()), "{text}");
    std::fs::remove_file(json).expect("clean up");
    std::fs::remove_file(html).expect("clean up");
}

#[test]
fn generated_history_is_accepted_and_a_mutated_one_rejected() {
    let mut history = random_kv_history(&GenerateConfig {
        seed: 7,
        operations: 2_000,
        keys: 20,
        clients: 10,
        unknown_probability: 0.05,
    });
    let result = check_kv(&history, BUDGET).expect("valid");
    assert!(result.is_ok(), "{result}");

    let target = history
        .operations
        .iter()
        .position(|op| op.op == OpKind::Get && op.outcome == Outcome::Ok)
        .expect("some ok get");
    history.operations[target].output = Some(Output::value(Some("never-written".to_owned())));
    match check_kv(&history, BUDGET).expect("valid") {
        CheckResult::Illegal { key, .. } => assert_eq!(key, history.operations[target].key),
        other => panic!("mutated history accepted: {other}"),
    }
}

#[test]
fn exhausted_budget_is_a_timeout_not_a_verdict() {
    let history = random_kv_history(&GenerateConfig::default());
    match check_kv(&history, Budget::steps(10)).expect("valid") {
        CheckResult::Timeout {
            partitions_checked,
            partitions_total,
            ..
        } => assert!(partitions_checked < partitions_total),
        other => panic!("expected timeout, got {other}"),
    }
}

#[test]
fn recorder_from_several_threads() {
    let recorder = HistoryRecorder::new();
    std::thread::scope(|scope| {
        for client in 0..4u64 {
            let recorder = &recorder;
            scope.spawn(move || {
                let key = format!("k{client}");
                let base = client * 1_000;
                let id = recorder.call(client, KvInput::put(&key, "a"), base);
                recorder.ok(id, base + 10, None);
                let id = recorder.call(client, KvInput::get(&key), base + 20);
                recorder.ok(id, base + 30, Some(KvOutput::Value(Some("a".to_owned()))));
                let id = recorder.call(client, KvInput::cas(&key, None, "b"), base + 40);
                recorder.ok(id, base + 50, Some(KvOutput::Succeeded(false)));
                let id = recorder.call(client, KvInput::delete(&key), base + 60);
                recorder.fail(id, base + 70);
                let id = recorder.call(client, KvInput::put(&key, "c"), base + 80);
                recorder.unknown(id);
                // Never completed: counts as unknown.
                recorder.call(client, KvInput::put(&key, "d"), base + 90);
            });
        }
    });
    assert_eq!(recorder.len(), 24);
    let history = recorder.history();
    let cas_op = history
        .operations
        .iter()
        .find(|op| op.op == OpKind::Cas)
        .expect("a cas");
    assert_eq!(cas_op.expected, Some(None));
    let result = recorder.check(BUDGET).expect("valid");
    assert!(result.is_ok(), "{result}");
    let reloaded = History::from_json(&history.to_json()).expect("parses");
    assert_eq!(reloaded, history);
}

#[test]
#[should_panic(expected = "completed twice")]
fn recorder_rejects_completing_twice() {
    let recorder = HistoryRecorder::new();
    let id = recorder.call(0, KvInput::get("k"), 0);
    recorder.ok(id, 1, Some(KvOutput::Value(None)));
    recorder.ok(id, 2, Some(KvOutput::Value(None)));
}

/// Brute force: is there an order of all ok operations plus any subset of
/// the unknown ones that respects real time and replays correctly? Only
/// for a handful of operations on one key.
fn brute_force(operations: &[Operation]) -> bool {
    let ops: Vec<&Operation> = operations
        .iter()
        .filter(|op| op.outcome != Outcome::Fail)
        .collect();
    let unknown: Vec<usize> = (0..ops.len())
        .filter(|&i| ops[i].return_ns.is_none())
        .collect();
    (0..1u32 << unknown.len()).any(|mask| {
        let chosen: Vec<usize> = (0..ops.len())
            .filter(|&i| {
                unknown
                    .iter()
                    .position(|&u| u == i)
                    .is_none_or(|bit| mask & (1 << bit) != 0)
            })
            .collect();
        permutations_valid(
            &ops,
            &chosen,
            &mut Vec::new(),
            &mut vec![false; chosen.len()],
        )
    })
}

fn permutations_valid(
    ops: &[&Operation],
    chosen: &[usize],
    order: &mut Vec<usize>,
    used: &mut Vec<bool>,
) -> bool {
    if order.len() == chosen.len() {
        return replays(ops, order);
    }
    for slot in 0..chosen.len() {
        if used[slot] {
            continue;
        }
        let candidate = chosen[slot];
        // Real time: nothing still unplaced may have returned before this
        // operation was called (equal times count as concurrent).
        let respects_time = (0..chosen.len()).all(|other| {
            used[other]
                || other == slot
                || ops[chosen[other]]
                    .return_ns
                    .is_none_or(|r| r >= ops[candidate].call_ns)
        });
        if !respects_time {
            continue;
        }
        used[slot] = true;
        order.push(candidate);
        let found = permutations_valid(ops, chosen, order, used);
        order.pop();
        used[slot] = false;
        if found {
            return true;
        }
    }
    false
}

fn replays(ops: &[&Operation], order: &[usize]) -> bool {
    let mut state: Option<String> = None;
    for &i in order {
        let op = ops[i];
        let known = op.outcome == Outcome::Ok;
        match op.op {
            OpKind::Get if known => {
                if op.output.as_ref().and_then(|o| o.value.clone()) != Some(state.clone()) {
                    return false;
                }
            }
            OpKind::Get => {}
            OpKind::Put => state = op.value.clone(),
            OpKind::Delete => state = None,
            OpKind::Cas => {
                let swaps = op.expected.clone().flatten() == state;
                if known && op.output.as_ref().and_then(|o| o.succeeded) != Some(swaps) {
                    return false;
                }
                if swaps {
                    state = op.value.clone();
                }
            }
        }
    }
    true
}

fn small_value() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop::sample::select(vec!["a".to_owned(), "b".to_owned()]))
}

fn small_operation() -> impl Strategy<Value = Operation> {
    (
        0..4u64,
        0..4usize,
        small_value(),
        small_value(),
        any::<bool>(),
        0..20u64,
        0..8u64,
        0..10u32,
    )
        .prop_map(|(client, kind, v1, v2, flag, call, length, outcome)| {
            let value = v1.clone().unwrap_or_else(|| "a".to_owned());
            let op = match kind {
                0 => get(client, "k", v1.as_deref(), call, call + length),
                1 => put(client, "k", &value, call, call + length),
                2 => delete(client, "k", call, call + length),
                _ => cas(
                    client,
                    "k",
                    v2.as_deref(),
                    &value,
                    flag,
                    call,
                    call + length,
                ),
            };
            match outcome {
                0 | 1 => unknown(op),
                2 => failed(op),
                _ => op,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn agrees_with_brute_force(operations in prop::collection::vec(small_operation(), 1..7)) {
        let expected = brute_force(&operations);
        let result = check(operations.clone());
        let timed_out = matches!(result, CheckResult::Timeout { .. });
        prop_assert!(!timed_out, "{}", result);
        prop_assert_eq!(result.is_ok(), expected, "{} for {:?}", result, operations);
    }

    #[test]
    fn generated_histories_are_linearizable(seed in any::<u64>()) {
        let history = random_kv_history(&GenerateConfig {
            seed,
            operations: 200,
            keys: 3,
            clients: 6,
            unknown_probability: 0.1,
        });
        let result = check_kv(&history, BUDGET).expect("valid");
        prop_assert!(result.is_ok(), "seed {}: {}", seed, result);
    }
}
