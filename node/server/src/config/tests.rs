//! Tests of the configuration: flags, file, defaults and errors.

use super::*;
use clap::Parser;

#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    node: NodeArgs,
}

fn parse(args: &[&str]) -> Result<NodeConfig, ConfigError> {
    let mut all = vec!["flotilla-node"];
    all.extend_from_slice(args);
    NodeConfig::resolve(Cli::parse_from(all).node)
}

const CLUSTER: &str =
    "n1=http://127.0.0.1:23801,n2=http://127.0.0.1:23802,n3=http://127.0.0.1:23803";

/// A configuration file holding `text`, in a directory that lasts as long
/// as the returned guard.
fn config_file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("node.yaml");
    std::fs::write(&path, text).expect("write");
    (dir, path)
}

#[test]
fn flags_resolve_with_defaults() {
    let c = parse(&["--name", "n2", "--initial-cluster", CLUSTER]).expect("valid");
    assert_eq!(c.peer_advertise, "http://127.0.0.1:23802");
    assert_eq!(c.peer_listen, "127.0.0.1:23802");
    assert_eq!(c.initial_cluster.len(), 3);
    assert_eq!(c.fsync, FsyncSetting::Always);
    assert_eq!(c.tick, Duration::from_millis(10));
    assert_eq!(c.auto_compaction, AutoCompaction::Off, "off, as in etcd");
    let again = parse(&["--name", "n2", "--initial-cluster", CLUSTER]).expect("valid");
    assert_eq!(c.member_id, again.member_id, "ids are stable");
    let other = parse(&["--name", "n1", "--initial-cluster", CLUSTER]).expect("valid");
    assert_ne!(c.member_id, other.member_id);
    assert_eq!(
        c.cluster_id, other.cluster_id,
        "one cluster id for all members"
    );
}

#[test]
fn ids_derive_from_token_names_and_urls() {
    let c = parse(&["--name", "n1", "--initial-cluster", CLUSTER]).expect("valid");
    assert_eq!(c.member_id, founding_member_id(DEFAULT_CLUSTER_TOKEN, "n1"));
    let mut members = c.initial_cluster.clone();
    assert_eq!(
        cluster_id_for(DEFAULT_CLUSTER_TOKEN, &members),
        c.cluster_id
    );
    members.reverse();
    assert_eq!(
        cluster_id_for(DEFAULT_CLUSTER_TOKEN, &members),
        c.cluster_id,
        "the order does not matter"
    );
    assert_ne!(cluster_id_for("other", &members), c.cluster_id);
    assert_ne!(
        cluster_id_for(DEFAULT_CLUSTER_TOKEN, &members[1..]),
        c.cluster_id
    );
}

#[test]
fn discovery_settings_and_joiners() {
    // A member not named in --initial-cluster joins: it needs its own
    // advertised peer URL, and asks the founders and the discovery peers.
    let c = parse(&[
        "--name",
        "n4",
        "--initial-cluster",
        CLUSTER,
        "--initial-advertise-peer-urls",
        "http://p-3.p-peers.ns.svc:2380",
        "--listen-peer-urls",
        "http://0.0.0.0:2380",
        "--discovery-peers",
        "p-peers.ns.svc:2380, http://10.0.0.9:2380",
        "--join-timeout-ms",
        "5000",
    ])
    .expect("valid");
    assert_eq!(c.peer_advertise, "http://p-3.p-peers.ns.svc:2380");
    assert_eq!(c.peer_listen, "0.0.0.0:2380");
    assert_eq!(c.discovery_peers, ["p-peers.ns.svc:2380", "10.0.0.9:2380"]);
    assert_eq!(c.join_timeout, Duration::from_secs(5));
    assert_eq!(c.discovery_timeout, Duration::from_secs(1), "the default");
    // etcdctl prints members that never started with an empty name: a
    // joiner takes them as peers to ask; a founder refuses them.
    let joiner = parse(&[
        "--name",
        "n5",
        "--initial-cluster",
        "n1=http://127.0.0.1:23801,=http://127.0.0.1:23804,n5=http://127.0.0.1:23805",
        "--initial-cluster-state",
        "existing",
    ])
    .expect("valid for a joiner");
    assert_eq!(joiner.initial_cluster.len(), 3);
    assert_eq!(joiner.peer_advertise, "http://127.0.0.1:23805");
    let err = parse(&[
        "--name",
        "n1",
        "--initial-cluster",
        "n1=http://127.0.0.1:23801,=http://127.0.0.1:23804",
    ])
    .expect_err("a founder needs names");
    assert!(err.to_string().contains("empty name"), "{err}");
    for (args, needle) in [
        (&["--discovery-peers", "no-port"][..], "discovery-peers"),
        (&["--discovery-timeout-ms", "0"][..], "discovery-timeout-ms"),
        (&["--join-timeout-ms", "0"][..], "join-timeout-ms"),
        (
            &["--initial-advertise-peer-urls", "http://a/path:1"][..],
            "initial-advertise-peer-urls",
        ),
    ] {
        let mut all = vec!["--name", "n1", "--initial-cluster", CLUSTER];
        all.extend_from_slice(args);
        let err = parse(&all).expect_err("invalid").to_string();
        assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
    }
}

#[test]
fn bad_settings_get_clear_errors() {
    let cases: &[(&[&str], &str)] = &[
        (&["--initial-cluster", CLUSTER], "name"),
        (
            &["--name", "n9", "--initial-cluster", CLUSTER],
            "initial-advertise-peer-urls",
        ),
        (
            &[
                "--name",
                "n1",
                "--initial-cluster",
                "n1=http://a:1,n1=http://b:2",
            ],
            "appears twice",
        ),
        (
            &["--name", "n1", "--initial-cluster", "n1"],
            "not name=peer-url",
        ),
        (
            &["--name", "n1", "--initial-cluster", "n1=http://host"],
            "no port",
        ),
        (
            &[
                "--name",
                "n1",
                "--initial-cluster",
                CLUSTER,
                "--heartbeat-ticks",
                "20",
            ],
            "below --election-ticks",
        ),
        (
            &[
                "--name",
                "n1",
                "--initial-cluster",
                CLUSTER,
                "--tick-ms",
                "0",
            ],
            "tick-ms",
        ),
        (
            &[
                "--name",
                "n1",
                "--initial-cluster",
                CLUSTER,
                "--listen-client-urls",
                "http://127.0.0.1:23801",
            ],
            "must differ",
        ),
    ];
    for (args, needle) in cases {
        let err = parse(args).expect_err("invalid configuration").to_string();
        assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
    }
}

#[test]
fn file_fills_what_flags_leave_unset() {
    let (_dir, path) = config_file(&format!(
        "name: n3\ninitial-cluster: \"{CLUSTER}\"\ntick-ms: 50\nread-mode: lease\n"
    ));
    let file = path.to_str().expect("utf-8 path");
    let c = parse(&["--config-file", file, "--tick-ms", "20"]).expect("valid");
    assert_eq!(c.name, "n3");
    assert_eq!(c.tick, Duration::from_millis(20), "flags win over the file");
    assert_eq!(c.read_mode, ReadModeSetting::Lease);
    std::fs::write(&path, "name: n3\nunknown-setting: 1\n").expect("write");
    let err = parse(&["--config-file", file])
        .expect_err("unknown key")
        .to_string();
    assert!(err.contains("unknown-setting"), "{err}");
}

#[test]
fn follower_sync_on_loop_is_off_unless_asked_by_flag_or_file() {
    let c = parse(&["--name", "n1", "--initial-cluster", CLUSTER]).expect("valid");
    assert!(!c.follower_sync_on_loop);
    let on = [
        "--name",
        "n1",
        "--initial-cluster",
        CLUSTER,
        "--follower-sync-on-loop",
        "true",
    ];
    assert!(parse(&on).expect("valid").follower_sync_on_loop);
    let (_dir, path) = config_file(&format!(
        "name: n1\ninitial-cluster: \"{CLUSTER}\"\nfollower-sync-on-loop: true\n"
    ));
    let file = path.to_str().expect("utf-8 path");
    let c = parse(&["--config-file", file]).expect("valid");
    assert!(c.follower_sync_on_loop);
}

/// The auto-compaction `args` resolve to, or the error's text (from
/// the flag parser or the validation).
fn compaction(args: &[&str]) -> Result<AutoCompaction, String> {
    let mut all = vec![
        "flotilla-node",
        "--name",
        "n1",
        "--initial-cluster",
        CLUSTER,
    ];
    all.extend_from_slice(args);
    let cli = Cli::try_parse_from(all).map_err(|e| e.to_string())?;
    NodeConfig::resolve(cli.node)
        .map(|c| c.auto_compaction)
        .map_err(|e| e.to_string())
}

#[test]
fn auto_compaction_reads_etcds_flags() {
    let periodic = |retention| Ok(AutoCompaction::Periodic { retention });
    assert_eq!(
        compaction(&["--auto-compaction-retention", "30m"]),
        periodic(Duration::from_secs(1800)),
        "periodic is the default mode"
    );
    assert_eq!(
        compaction(&[
            "--auto-compaction-mode",
            "periodic",
            "--auto-compaction-retention",
            "1h30m"
        ]),
        periodic(Duration::from_secs(5400))
    );
    assert_eq!(
        compaction(&["--auto-compaction-retention", "2"]),
        periodic(Duration::from_secs(7200)),
        "a bare number is hours, as etcd reads it"
    );
    assert_eq!(
        compaction(&["--auto-compaction-retention", "0"]),
        Ok(AutoCompaction::Off)
    );
    assert_eq!(
        compaction(&[
            "--auto-compaction-mode",
            "revision",
            "--auto-compaction-retention",
            "1000"
        ]),
        Ok(AutoCompaction::Revision {
            revisions: 1000,
            check_interval: Duration::from_secs(300),
        }),
        "checked every five minutes, as etcd"
    );
}

#[test]
fn bad_auto_compaction_settings_get_clear_errors() {
    let cases: &[(&[&str], &str)] = &[
        (&["--auto-compaction-retention", "1.5h"], "nor a duration"),
        (&["--auto-compaction-retention", "10x"], "nor a duration"),
        (&["--auto-compaction-retention=-1"], "nor a duration"),
        (&["--auto-compaction-retention", "500ms"], "minimum of 1s"),
        (
            &["--auto-compaction-retention", "99999999999999999999"],
            "too large",
        ),
        (
            &["--auto-compaction-retention", "9999999999999999"],
            "too large",
        ),
        (&["--auto-compaction-mode", "hourly"], "hourly"),
        (
            &[
                "--auto-compaction-mode",
                "revision",
                "--auto-compaction-retention",
                "1h",
            ],
            "not a revision count",
        ),
        (
            &[
                "--auto-compaction-mode",
                "revision",
                "--auto-compaction-retention",
                "100000000",
            ],
            "the store keeps at most",
        ),
    ];
    for (args, needle) in cases {
        let err = compaction(args).expect_err("invalid configuration");
        assert!(
            err.contains("auto-compaction"),
            "{args:?}: {err:?} names no setting"
        );
        assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
    }
}

#[test]
fn auto_compaction_from_the_file_as_text_or_number() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("node.yaml");
    let file = path.to_str().expect("utf-8 path");
    let base = format!("name: n1\ninitial-cluster: \"{CLUSTER}\"\n");
    let from_file = |text: String| {
        std::fs::write(&path, text).expect("write");
        NodeConfig::resolve(NodeArgs {
            config_file: Some(path.clone()),
            ..NodeArgs::default()
        })
    };
    assert_eq!(
        from_file(format!(
            "{base}auto-compaction-mode: revision\nauto-compaction-retention: 500\n"
        ))
        .expect("valid")
        .auto_compaction,
        AutoCompaction::Revision {
            revisions: 500,
            check_interval: Duration::from_secs(300),
        }
    );
    assert_eq!(
        from_file(format!("{base}auto-compaction-retention: 45m\n"))
            .expect("valid")
            .auto_compaction,
        AutoCompaction::Periodic {
            retention: Duration::from_secs(2700)
        }
    );
    let err = from_file(format!("{base}auto-compaction-retention: 1.5h\n"))
        .expect_err("not a duration")
        .to_string();
    assert!(
        err.contains(file) && err.contains("nor a duration"),
        "{err}"
    );
    let err = from_file(format!("{base}auto-compaction-mode: hourly\n"))
        .expect_err("unknown mode")
        .to_string();
    assert!(err.contains("hourly"), "{err}");
}

#[test]
fn quota_and_request_limits_read_etcds_flags() {
    let base = ["--name", "n1", "--initial-cluster", CLUSTER];
    let with = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        parse(&args)
    };
    let c = with(&[]).expect("valid");
    assert_eq!(c.quota_backend_bytes, Some(DEFAULT_QUOTA_BYTES), "2 GiB");
    assert_eq!(c.max_txn_ops, 128);
    assert_eq!(c.max_concurrent_streams, u32::MAX, "unlimited, as etcd");
    assert_eq!(c.max_client_connections, 4096);
    let c = with(&["--quota-backend-bytes", "0"]).expect("valid");
    assert_eq!(c.quota_backend_bytes, Some(DEFAULT_QUOTA_BYTES));
    let c = with(&["--quota-backend-bytes", "-1"]).expect("valid");
    assert_eq!(c.quota_backend_bytes, None, "negative turns it off");
    let c = with(&["--quota-backend-bytes", "1048576", "--max-txn-ops", "512"]).expect("valid");
    assert_eq!(
        (c.quota_backend_bytes, c.max_txn_ops),
        (Some(1_048_576), 512)
    );
    for (flag, value) in [
        ("--max-txn-ops", "0"),
        ("--max-txn-ops", "65537"),
        ("--max-concurrent-streams", "0"),
        ("--max-client-connections", "0"),
    ] {
        let e = with(&[flag, value]).expect_err("refused");
        assert!(
            e.to_string().contains(flag.trim_start_matches("--")),
            "{flag} {value}: {e}"
        );
    }
    let file = tempfile::NamedTempFile::new().expect("tempfile");
    std::fs::write(file.path(), "quota-backend-bytes: 4096\nmax-txn-ops: 7\n").expect("write");
    let path = file.path().to_str().expect("path");
    let c = with(&["--config-file", path]).expect("valid");
    assert_eq!((c.quota_backend_bytes, c.max_txn_ops), (Some(4096), 7));
}

#[test]
fn catchup_entries_and_shutdown_timeout_have_defaults_flags_and_limits() {
    let c = parse(&["--name", "n1", "--initial-cluster", CLUSTER]).expect("valid");
    assert_eq!(c.snapshot_catchup_entries, 5_000, "etcd's default");
    assert_eq!(c.snapshot_min_log_percent, 100);
    assert_eq!(c.snapshot_max_log_bytes, 32 << 20);
    assert_eq!(c.shutdown_timeout, Duration::from_secs(5));
    let c = parse(&[
        "--name",
        "n1",
        "--initial-cluster",
        CLUSTER,
        "--snapshot-catchup-entries",
        "0",
        "--snapshot-min-log-percent",
        "0",
        "--snapshot-max-log-bytes",
        "1048576",
        "--shutdown-timeout-ms",
        "1500",
    ])
    .expect("valid");
    assert_eq!(
        (
            c.snapshot_catchup_entries,
            c.snapshot_min_log_percent,
            c.snapshot_max_log_bytes
        ),
        (0, 0, 1 << 20)
    );
    assert_eq!(c.shutdown_timeout, Duration::from_millis(1500));
    for (flag, value) in [
        ("--shutdown-timeout-ms", "10"),
        ("--snapshot-catchup-entries", "20000000"),
        ("--snapshot-min-log-percent", "10001"),
        ("--snapshot-max-log-bytes", "1048575"),
        ("--snapshot-max-log-bytes", "17179869185"),
    ] {
        let err = parse(&["--name", "n1", "--initial-cluster", CLUSTER, flag, value])
            .expect_err("out of range")
            .to_string();
        assert!(err.contains(&flag[2..]), "{err:?} names {flag}");
    }
}

/// Under Kubernetes members advertise DNS names (a headless Service's
/// `<pod>.<service>.<namespace>.svc`) and listen on every interface: the
/// names are taken as they are (resolved later, on every connection), the
/// listen addresses need not match them.
#[test]
fn dns_names_are_advertised_while_listening_on_any_address() {
    let cluster = "db-0=http://db-0.db-peers.ns.svc:2380,\
                   db-1=http://db-1.db-peers.ns.svc:2380,\
                   db-2=http://db-2.db-peers.ns.svc:2380";
    let c = parse(&[
        "--name",
        "db-1",
        "--initial-cluster",
        cluster,
        "--listen-peer-urls",
        "http://0.0.0.0:2380",
        "--listen-client-urls",
        "http://0.0.0.0:2379",
        "--advertise-client-urls",
        "http://db-1.db-peers.ns.svc:2379",
        "--listen-metrics-urls",
        "http://0.0.0.0:2381",
    ])
    .expect("valid");
    assert_eq!(c.peer_advertise, "http://db-1.db-peers.ns.svc:2380");
    assert_eq!(c.peer_listen, "0.0.0.0:2380");
    assert_eq!(c.client_listen, "0.0.0.0:2379");
    assert_eq!(c.client_advertise, "http://db-1.db-peers.ns.svc:2379");
}

#[test]
fn kafka_listener_flags_have_defaults_and_limits() {
    let c = parse(&["--name", "n1", "--initial-cluster", CLUSTER]).expect("valid");
    assert_eq!(c.broker.kafka_listen, None, "off unless asked for");
    assert_eq!(c.broker.kafka_frame_bytes_max, 100 << 20);
    let c = parse(&[
        "--name",
        "n1",
        "--initial-cluster",
        CLUSTER,
        "--kafka-listen-addr",
        "0.0.0.0:9092",
        "--kafka-advertise-addr",
        "kafka-0.flotilla:9092",
        "--kafka-max-frame-bytes",
        "1048576",
    ])
    .expect("valid");
    assert_eq!(c.broker.kafka_listen.as_deref(), Some("0.0.0.0:9092"));
    assert_eq!(
        c.broker.kafka_advertise.as_deref(),
        Some("kafka-0.flotilla:9092")
    );
    assert_eq!(c.broker.kafka_frame_bytes_max, 1 << 20);
    let empty = parse(&[
        "--name",
        "n1",
        "--initial-cluster",
        CLUSTER,
        "--kafka-listen-addr",
        "",
    ])
    .expect("valid");
    assert_eq!(empty.broker.kafka_listen, None, "empty is off");
    for (flags, names) in [
        (vec!["--kafka-listen-addr", "nohost"], "kafka-listen-addr"),
        (
            vec!["--kafka-advertise-addr", "h:9092"],
            "kafka-advertise-addr",
        ),
        (
            vec![
                "--kafka-listen-addr",
                "h:1",
                "--kafka-max-frame-bytes",
                "10",
            ],
            "kafka-max-frame-bytes",
        ),
    ] {
        let mut args = vec!["--name", "n1", "--initial-cluster", CLUSTER];
        args.extend(flags);
        let err = parse(&args).expect_err("invalid").to_string();
        assert!(err.contains(names), "{err:?} names {names}");
    }
}

#[test]
fn client_thread_is_the_drivers_with_one_worker_thread_unless_set() {
    let base = ["--name", "n1", "--initial-cluster", CLUSTER];
    let c = parse(&base).expect("valid");
    assert_eq!(c.client_thread, ClientThreadSetting::Auto);
    assert!(c.client_thread.on_driver(Some(1)));
    assert!(!c.client_thread.on_driver(Some(2)));
    assert!(!c.client_thread.on_driver(None), "a current-thread runtime");
    let mut args = base.to_vec();
    args.extend_from_slice(&["--client-thread", "workers"]);
    let c = parse(&args).expect("valid");
    assert!(!c.client_thread.on_driver(Some(1)));
    let mut args = base.to_vec();
    args.extend_from_slice(&["--client-thread", "driver"]);
    let c = parse(&args).expect("valid");
    assert!(c.client_thread.on_driver(Some(7)));
    assert!(
        !c.client_thread.on_driver(None),
        "no workers to hand calls to"
    );
    let mut args = vec!["flotilla-node"];
    args.extend_from_slice(&base);
    args.extend_from_slice(&["--client-thread", "elsewhere"]);
    let e = Cli::try_parse_from(args).expect_err("refused");
    assert!(e.to_string().contains("elsewhere"), "{e}");
    let file = tempfile::NamedTempFile::new().expect("tempfile");
    std::fs::write(file.path(), "client-thread: driver\n").expect("write");
    let path = file.path().to_str().expect("path");
    let mut args = base.to_vec();
    args.extend_from_slice(&["--config-file", path]);
    let c = parse(&args).expect("valid");
    assert_eq!(c.client_thread, ClientThreadSetting::Driver);
}
