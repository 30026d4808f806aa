//! The `sluice` client commands against a real broker: every command is the real binary, fed
//! through stdin and judged by its stdout, stderr and exit status.

mod common;

use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::Value;

/// A finished CLI run.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

/// How long one CLI invocation may take before the test calls it hung.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `sluice ARGS` with `stdin`, killing it if it outlives [`CLI_TIMEOUT`].
fn sluice(args: &[&str], stdin: &str) -> Run {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluice");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.as_bytes().to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if started.elapsed() > CLI_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sluice {args:?} did not finish within {CLI_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = writer.join();
    Run {
        status,
        stdout: out_reader.join().expect("stdout reader"),
        stderr: err_reader.join().expect("stderr reader"),
        elapsed: started.elapsed(),
    }
}

/// Runs a command that must succeed and returns its stdout.
fn ok(args: &[&str], stdin: &str) -> String {
    let r = sluice(args, stdin);
    assert!(
        r.status.success(),
        "sluice {args:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        r.status,
        r.stdout,
        r.stderr
    );
    r.stdout
}

/// Runs a command that must fail and returns the run.
fn fails(args: &[&str], stdin: &str) -> Run {
    let r = sluice(args, stdin);
    assert!(
        !r.status.success(),
        "sluice {args:?} should have failed\nstdout:\n{}\nstderr:\n{}",
        r.stdout,
        r.stderr
    );
    r
}

fn json(s: &str) -> Value {
    let last = s.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn sorted_lines(s: &str) -> Vec<&str> {
    let mut v: Vec<&str> = s.lines().collect();
    v.sort_unstable();
    v
}

#[test]
fn topic_create_list_describe_delete() {
    let broker = Broker::start();
    let b = broker.bootstrap();
    let out = ok(
        &[
            "topic",
            "create",
            "-b",
            &b,
            "orders",
            "-p",
            "3",
            "-c",
            "retention.ms=3600000",
        ],
        "",
    );
    assert_eq!(out, "created topic orders\n");
    ok(&["topic", "create", "-b", &b, "audit", "-p", "1"], "");

    let out = ok(&["topic", "list", "-b", &b], "");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["TOPIC", "PARTITIONS", "REPLICATION"]
    );
    assert!(
        lines
            .iter()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["orders", "3", "1"]),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["audit", "1", "1"]),
        "{out}"
    );

    let v = json(&ok(&["topic", "list", "-b", &b, "--json"], ""));
    let names: Vec<&str> = v["topics"]
        .as_array()
        .expect("topics array")
        .iter()
        .map(|t| t["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["audit", "orders"]);

    // Two records in partition 1 show up as its high watermark.
    ok(&["produce", "-b", &b, "orders", "-p", "1"], "a\nb\n");
    let out = ok(&["topic", "describe", "-b", &b, "orders"], "");
    assert!(out.starts_with("Topic: orders  Partitions: 3\n"), "{out}");
    let rows: Vec<Vec<&str>> = out
        .lines()
        .skip(2)
        .take(3)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            ["0", "1", "1", "1", "1:0", "0", "0"],
            ["1", "1", "1", "1", "1:0", "0", "2"],
            ["2", "1", "1", "1", "1:0", "0", "0"]
        ]
    );
    let v = json(&ok(
        &["topic", "describe", "-b", &b, "orders", "--json"],
        "",
    ));
    assert_eq!(v["topic"], "orders");
    let parts = v["partitions"].as_array().expect("partitions");
    assert_eq!(parts.len(), 3);
    for (i, p) in parts.iter().enumerate() {
        assert_eq!(p["partition"], i as i64);
        assert_eq!(p["leader"], 1);
        assert_eq!(p["replicas"], serde_json::json!([1]));
        assert_eq!(p["isr"], serde_json::json!([1]));
        assert_eq!(p["lag"], serde_json::json!([{"replica": 1, "lag": 0}]));
    }
    assert_eq!(parts[1]["high"], 2);
    // Configs, when the broker answers DescribeConfigs; otherwise a note says why.
    if let Some(configs) = v["configs"].as_array() {
        let retention = configs
            .iter()
            .find(|c| c["name"] == "retention.ms")
            .expect("retention.ms described");
        assert_eq!(retention["value"], "3600000");
    } else {
        assert!(v["configs_error"].is_string(), "{v}");
    }

    assert_eq!(
        ok(&["topic", "delete", "-b", &b, "orders"], ""),
        "deleted topic orders\n"
    );
    let v = json(&ok(&["topic", "list", "-b", &b, "--json"], ""));
    assert_eq!(v["topics"].as_array().map(|a| a.len()), Some(1), "{v}");
    let r = fails(&["topic", "describe", "-b", &b, "orders"], "");
    assert!(
        r.stderr.contains("unknown topic \"orders\""),
        "{}",
        r.stderr
    );
    let r = fails(&["topic", "delete", "-b", &b, "orders"], "");
    assert!(r.stderr.contains("unknown topic"), "{}", r.stderr);
}

#[test]
fn topic_alter_config_sets_and_resets() {
    let broker = Broker::start();
    let b = broker.bootstrap();
    ok(&["topic", "create", "-b", &b, "cfg", "-p", "1"], "");
    let value = |name: &str| -> Value {
        let v = json(&ok(&["topic", "describe", "-b", &b, "cfg", "--json"], ""));
        let configs = v["configs"]
            .as_array()
            .unwrap_or_else(|| panic!("no configs: {v}"));
        configs
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("{name} not described: {v}"))
            .clone()
    };
    let default = value("retention.ms")["value"].clone();
    ok(
        &[
            "topic",
            "alter-config",
            "-b",
            &b,
            "cfg",
            "-c",
            "retention.ms=12345",
            "-c",
            "segment.ms=600000",
        ],
        "",
    );
    assert_eq!(value("retention.ms")["value"], "12345");
    assert_eq!(value("segment.ms")["value"], "600000");
    // Incremental: resetting one leaves the other alone.
    ok(
        &[
            "topic",
            "alter-config",
            "-b",
            &b,
            "cfg",
            "--delete",
            "retention.ms",
        ],
        "",
    );
    assert_eq!(value("retention.ms")["value"], default);
    assert_eq!(value("segment.ms")["value"], "600000");
    let r = fails(
        &[
            "topic",
            "alter-config",
            "-b",
            &b,
            "cfg",
            "-c",
            "retention.ms=soon",
        ],
        "",
    );
    assert!(r.stderr.contains("retention.ms"), "{}", r.stderr);
    fails(
        &[
            "topic",
            "alter-config",
            "-b",
            &b,
            "missing",
            "-c",
            "retention.ms=1",
        ],
        "",
    );
}

#[test]
fn produce_keys_and_headers_then_consume_with_format() {
    let broker = Broker::start();
    let b = broker.bootstrap();
    ok(&["topic", "create", "-b", &b, "events", "-p", "2"], "");
    ok(
        &[
            "produce", "-b", &b, "events", "-k", ":", "-H", "src=cli", "-H", "v=2", "-p", "0",
        ],
        "k1:hello\nk2:wor:ld\nno-key\n",
    );
    ok(
        &[
            "produce", "-b", &b, "events", "-k", "::", "-p", "1", "--acks", "1", "-z", "zstd",
        ],
        "a::b\n",
    );

    let out = ok(
        &["consume", "-b", &b, "events", "-f", r"%p %o %k %s\n", "-e"],
        "",
    );
    assert_eq!(
        sorted_lines(&out),
        ["0 0 k1 hello", "0 1 k2 wor:ld", "0 2  no-key", "1 0 a b"]
    );
    let out = ok(
        &[
            "consume",
            "-b",
            &b,
            "events",
            "-p",
            "0",
            "-f",
            r"%t/%p:%o %k=%s [%h]\n",
            "-e",
        ],
        "",
    );
    assert_eq!(
        out,
        "events/0:0 k1=hello [src=cli,v=2]\nevents/0:1 k2=wor:ld [src=cli,v=2]\nevents/0:2 =no-key [src=cli,v=2]\n"
    );
    // The default format is the value alone; -n stops early.
    assert_eq!(
        ok(&["consume", "-b", &b, "events", "-p", "0", "-n", "2"], ""),
        "hello\nwor:ld\n"
    );
    // --json: one JSON object per record.
    let out = ok(
        &["consume", "-b", &b, "events", "-p", "1", "-e", "--json"],
        "",
    );
    let v = json(&out);
    assert_eq!(v["key"], "a");
    assert_eq!(v["value"], "b");
    assert_eq!(v["offset"], 0);
    assert!(v["timestamp"].is_i64());
}

#[test]
fn consume_from_end_offset_and_timestamp() {
    let broker = Broker::start();
    let b = broker.bootstrap();
    ok(&["topic", "create", "-b", &b, "t", "-p", "1"], "");
    ok(&["produce", "-b", &b, "t"], "r0\nr1\nr2\n");
    // Records produced from here on carry a CreateTime at or after `since`.
    let now_ms = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let before = now_ms();
    let since = wait_for(
        "the clock to tick",
        Duration::from_secs(5),
        Duration::from_millis(1),
        || {
            let n = now_ms();
            (n > before + 1).then_some(n)
        },
    );
    ok(&["produce", "-b", &b, "t"], "r3\nr4\n");

    let f = r"%o %s\n";
    assert_eq!(
        ok(&["consume", "-b", &b, "t", "-o", "end", "-e", "-f", f], ""),
        ""
    );
    assert_eq!(
        ok(&["consume", "-b", &b, "t", "-o", "3", "-e", "-f", f], ""),
        "3 r3\n4 r4\n"
    );
    assert_eq!(
        ok(&["consume", "-b", &b, "t", "-o", "-2", "-e", "-f", f], ""),
        "3 r3\n4 r4\n"
    );
    assert_eq!(
        ok(
            &[
                "consume",
                "-b",
                &b,
                "t",
                "-o",
                &format!("@{since}"),
                "-e",
                "-f",
                f
            ],
            ""
        ),
        "3 r3\n4 r4\n"
    );
    assert_eq!(
        ok(&["consume", "-b", &b, "t", "-o", "@0", "-e", "-f", f], ""),
        "0 r0\n1 r1\n2 r2\n3 r3\n4 r4\n"
    );
    // A timestamp after every record: nothing to read.
    let future = format!("@{}", now_ms() + 3_600_000);
    assert_eq!(
        ok(
            &["consume", "-b", &b, "t", "-o", &future, "-e", "-f", f],
            ""
        ),
        ""
    );
    fails(&["consume", "-b", &b, "t", "-o", "soon", "-e"], "");
}

#[test]
fn group_describe_reset_and_delete() {
    let broker = Broker::start();
    let b = broker.bootstrap();
    ok(&["topic", "create", "-b", &b, "jobs", "-p", "2"], "");
    ok(&["produce", "-b", &b, "jobs", "-p", "0"], "a\nb\nc\n");
    ok(&["produce", "-b", &b, "jobs", "-p", "1"], "d\n");

    let out = ok(
        &[
            "consume",
            "-b",
            &b,
            "jobs",
            "-g",
            "workers",
            "-e",
            "-f",
            r"%p %o %s\n",
        ],
        "",
    );
    assert_eq!(sorted_lines(&out), ["0 0 a", "0 1 b", "0 2 c", "1 0 d"]);

    let out = ok(&["group", "list", "-b", &b], "");
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["workers", "Empty", "consumer", "0"]),
        "{out}"
    );
    let v = json(&ok(&["group", "list", "-b", &b, "--json"], ""));
    assert!(
        v["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["group"] == "workers"),
        "{v}"
    );

    // Everything consumed and committed: lag 0 on both partitions.
    let v = json(&ok(
        &["group", "describe", "-b", &b, "workers", "--json"],
        "",
    ));
    assert_eq!(v["state"], "Empty");
    assert_eq!(v["members"].as_array().map(|m| m.len()), Some(0));
    let offsets: Vec<(i64, i64, i64, i64)> = v["offsets"]
        .as_array()
        .expect("offsets")
        .iter()
        .map(|o| {
            assert_eq!(o["topic"], "jobs");
            (
                o["partition"].as_i64().unwrap(),
                o["committed"].as_i64().unwrap(),
                o["end"].as_i64().unwrap(),
                o["lag"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(offsets, [(0, 3, 3, 0), (1, 1, 1, 0)]);
    let out = ok(&["group", "describe", "-b", &b, "workers"], "");
    assert!(out.starts_with("Group: workers  State: Empty"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["jobs", "0", "3", "3", "0", "-"]),
        "{out}"
    );

    // Nothing new: the group reads nothing.
    assert_eq!(
        ok(&["consume", "-b", &b, "jobs", "-g", "workers", "-e"], ""),
        ""
    );

    let out = ok(
        &[
            "group",
            "reset-offsets",
            "-b",
            &b,
            "workers",
            "--topic",
            "jobs",
            "--to-earliest",
        ],
        "",
    );
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["jobs", "0", "3", "0"]),
        "{out}"
    );
    let out = ok(
        &[
            "consume",
            "-b",
            &b,
            "jobs",
            "-g",
            "workers",
            "-e",
            "-f",
            r"%p %o %s\n",
        ],
        "",
    );
    assert_eq!(sorted_lines(&out), ["0 0 a", "0 1 b", "0 2 c", "1 0 d"]);

    let v = json(&ok(
        &[
            "group",
            "reset-offsets",
            "-b",
            &b,
            "workers",
            "--topic",
            "jobs",
            "--to-offset",
            "2",
            "--json",
        ],
        "",
    ));
    // Clamped to each partition's end: partition 1 only has one record.
    let new: Vec<i64> = v["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["offset"].as_i64().unwrap())
        .collect();
    assert_eq!(new, [2, 1]);
    assert_eq!(
        ok(&["consume", "-b", &b, "jobs", "-g", "workers", "-e"], ""),
        "c\n"
    );

    ok(
        &[
            "group",
            "reset-offsets",
            "-b",
            &b,
            "workers",
            "--topic",
            "jobs",
            "--to-latest",
        ],
        "",
    );
    assert_eq!(
        ok(&["consume", "-b", &b, "jobs", "-g", "workers", "-e"], ""),
        ""
    );

    assert_eq!(
        ok(&["group", "delete", "-b", &b, "workers"], ""),
        "deleted group workers\n"
    );
    let r = fails(&["group", "describe", "-b", &b, "workers"], "");
    assert!(r.stderr.contains("unknown group"), "{}", r.stderr);
}

#[test]
fn group_reset_refuses_active_groups() {
    let broker = Broker::start();
    let b = broker.bootstrap();
    ok(&["topic", "create", "-b", &b, "live", "-p", "1"], "");
    // A member that stays in the group until killed.
    let mut member = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["consume", "-b", &b, "live", "-g", "busy"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn consumer");
    let v = wait_for(
        "the member to join",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            // Until the first join completes the group may not be listed yet.
            let r = sluice(&["group", "describe", "-b", &b, "busy", "--json"], "");
            let v = r.status.success().then(|| json(&r.stdout))?;
            (v["state"] == "Stable").then_some(v)
        },
    );
    let members = v["members"].as_array().expect("members");
    assert_eq!(members.len(), 1);
    assert!(
        members[0]["client_id"]
            .as_str()
            .unwrap()
            .starts_with("sluice-cli"),
        "{v}"
    );
    assert_eq!(members[0]["assignment"]["live"], serde_json::json!([0]));
    let r = fails(
        &[
            "group",
            "reset-offsets",
            "-b",
            &b,
            "busy",
            "--topic",
            "live",
            "--to-earliest",
        ],
        "",
    );
    assert!(r.stderr.contains("active member"), "{}", r.stderr);
    let _ = member.kill();
    let _ = member.wait();
}

#[test]
fn cluster_info() {
    let broker = Broker::start();
    let b = broker.bootstrap();
    let out = ok(&["cluster", "info", "-b", &b], "");
    assert!(out.contains("Controller: 1\n"), "{out}");
    assert!(
        out.lines().any(|l| l.split_whitespace().collect::<Vec<_>>()
            == [
                "1",
                "127.0.0.1",
                &broker.port().to_string(),
                "-",
                "alive",
                "yes"
            ]),
        "{out}"
    );
    let v = json(&ok(&["cluster", "info", "-b", &b, "--json"], ""));
    assert_eq!(v["controller_id"], 1);
    assert_eq!(
        v["brokers"],
        serde_json::json!([{"id": 1, "host": "127.0.0.1", "port": broker.port(), "rack": null, "fenced": false}])
    );
    assert_eq!(v["quorum"]["leader_id"], 1, "{v}");
    assert_eq!(v["quorum"]["voters"][0]["id"], 1, "{v}");
    assert_eq!(v["quorum"]["voters"][0]["lag"], 0, "{v}");
    assert!(
        v["cluster_id"].as_str().is_some_and(|s| !s.is_empty()),
        "{v}"
    );
    assert_eq!(v["cli_version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn unreachable_broker_fails_fast_with_a_clear_message() {
    // A port nobody listens on.
    let dead = format!("127.0.0.1:{}", free_port());
    let cases: Vec<Vec<&str>> = vec![
        vec!["topic", "list", "-b", &dead],
        vec!["topic", "describe", "-b", &dead, "x"],
        vec!["produce", "-b", &dead, "x"],
        vec!["consume", "-b", &dead, "x", "-e"],
        vec!["group", "list", "-b", &dead],
        vec!["cluster", "info", "-b", &dead],
        vec!["bench", "produce", "-b", &dead, "--messages", "10"],
    ];
    for args in cases {
        let r = fails(&args, "x\n");
        assert!(
            r.elapsed < Duration::from_secs(10),
            "{args:?} took {:?}",
            r.elapsed
        );
        assert!(
            r.stderr
                .contains(&format!("cannot reach a broker at {dead}")),
            "{args:?}: {}",
            r.stderr
        );
    }
}

#[test]
fn unknown_topic_is_an_error() {
    let broker = Broker::start();
    let b = broker.bootstrap();
    for args in [
        vec!["topic", "describe", "-b", &b, "ghost"],
        vec!["consume", "-b", &b, "ghost", "-e"],
        vec![
            "topic",
            "alter-config",
            "-b",
            &b,
            "ghost",
            "-c",
            "retention.ms=1",
        ],
    ] {
        let r = fails(&args, "");
        assert!(
            r.stderr.contains("unknown topic \"ghost\""),
            "{args:?}: {}",
            r.stderr
        );
    }
    ok(&["topic", "create", "-b", &b, "one", "-p", "1"], "");
    let r = fails(&["produce", "-b", &b, "one", "-p", "5"], "x\n");
    assert!(r.stderr.contains("no partition 5"), "{}", r.stderr);
}

fn assert_bench_json(out: &str) -> Value {
    let v = json(out);
    for field in ["messages", "bytes", "seconds", "msgs_per_sec", "mb_per_sec"] {
        assert!(v[field].is_number(), "{field} missing or not a number: {v}");
    }
    for field in ["p50", "p95", "p99", "p999", "max"] {
        assert!(
            v["latency_ms"][field].is_number(),
            "latency_ms.{field}: {v}"
        );
    }
    v
}

#[test]
fn bench_reports_parse_as_json() {
    let broker = Broker::start();
    let b = broker.bootstrap();
    let out = ok(
        &[
            "bench",
            "produce",
            "-b",
            &b,
            "--messages",
            "2000",
            "--record-size",
            "100",
            "--json",
        ],
        "",
    );
    let v = assert_bench_json(&out);
    assert_eq!(v["messages"], 2000);
    let out = ok(
        &[
            "bench",
            "e2e",
            "-b",
            &b,
            "--topic",
            "e2e",
            "--partitions",
            "2",
            "--consumers",
            "2",
            "--messages",
            "1000",
            "--rate",
            "5000",
            "--key-distribution",
            "random",
            "--json",
        ],
        "",
    );
    assert_bench_json(&out);
    let out = ok(&["bench", "consume", "-b", &b, "--json"], "");
    assert_bench_json(&out);
    let out = ok(
        &[
            "bench",
            "produce",
            "-b",
            &b,
            "--duration",
            "0.5",
            "--producers",
            "2",
            "-z",
            "lz4",
            "--acks",
            "1",
            "--key-distribution",
            "sequential",
            "--linger-ms",
            "1",
            "--batch-size",
            "65536",
        ],
        "",
    );
    assert!(out.contains("throughput"), "{out}");
}
