//! The node core end to end: three real daemons on loopback, the CLI, curl and the API.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use sensornet_tests::{
    bin, block_matches, cluster, output_within, Daemon, KillOnDrop, LineReader, Opts,
};

/// How long a subscriber may take to print a published reading (the test's own bound is 2 s).
const LINE_TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn pub_on_first_is_printed_by_sub_on_third_within_2s() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path(), 3).unwrap();
    let mut sub = KillOnDrop(
        Command::new(bin("node"))
            .args(["--repo"])
            .arg(&nodes[2].repo)
            .args(["sub", "temp", "--json", "-n", "2"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = LineReader::stdout_of("`node sub temp` on n2", &mut sub);
    std::thread::sleep(Duration::from_millis(700)); // the subscription opens
    let t0 = Instant::now();
    let out = nodes[0].cli(&["pub", "temp", "25"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cid = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let line = lines.next_line(LINE_TIMEOUT).unwrap();
    let elapsed = t0.elapsed();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["cid"], cid.as_str());
    assert_eq!(v["topic"], "temperature");
    assert_eq!(v["value"], 25.0);
    assert_eq!(v["unit"], "°C");
    assert!(elapsed < Duration::from_secs(2), "pub→sub took {elapsed:?}");
    println!(
        "pub→sub across 3 nodes (CLI pub to CLI sub line): {elapsed:?}, node-reported delay {} ms",
        v["delay_ms"]
    );

    // The same through curl and Kubo's pubsub/pub with a multipart file.
    let file = dir.path().join("reading.txt");
    std::fs::write(&file, "26.5").unwrap();
    let topic = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("temp");
    let out = output_within(
        Command::new("curl")
            .args(["-sS", "-f", "-m", "30", "-X", "POST"])
            .arg(format!(
                "http://{}/api/v0/pubsub/pub?arg=u{topic}",
                nodes[0].api
            ))
            .arg("-F")
            .arg(format!("data=@{}", file.display())),
        Duration::from_secs(60),
        "curl pubsub/pub",
    )
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = lines.next_line(LINE_TIMEOUT).unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["value"], 26.5);
    assert_eq!(
        v["seq"].as_u64(),
        Some(2),
        "chained after the first reading of this source"
    );
    // `-n 2`: the subscriber exits after the second reading.
    sub.wait_output(LINE_TIMEOUT, "`node sub -n 2` after its second line")
        .unwrap();

    // block/get of the reading's CID returns bytes that hash to it, on every node.
    for n in &nodes {
        assert!(
            block_matches(n, &cid).unwrap(),
            "{} lacks a valid block {cid}",
            n.name
        );
    }
}

#[test]
fn api_is_post_only_with_kubo_errors() {
    let dir = tempfile::tempdir().unwrap();
    let n = Daemon::start(dir.path(), "a", Opts::default()).unwrap();
    let client = sensornet_tests::http();
    let r = client
        .get(format!("http://{}/api/v0/id", n.api))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(v["Type"], "error");
    assert!(v["Message"].as_str().unwrap().contains("POST"));
    // Bad multibase, bad CID, bad value: 400 in Kubo's shape.
    for q in [
        "pubsub/pub?arg=!!",
        "block/get?arg=notacid",
        "reading/pub?topic=temp&value=NaN",
        "reading/pub?topic=humidity&value=140",
    ] {
        let (st, body) = n.post(q).unwrap();
        assert_eq!(st, 400, "{q}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["Code"], 1, "{q}");
        assert_eq!(v["Type"], "error");
    }
    let v = n.post_json("id").unwrap();
    assert_eq!(v["ID"], n.peer_id.as_str());
    let v = n.post_json("version").unwrap();
    assert!(v["Version"].as_str().is_some());
}

#[test]
fn cli_without_daemon_says_to_start_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = output_within(
        Command::new(bin("node"))
            .arg("--repo")
            .arg(dir.path().join("none"))
            .args(["pub", "temp", "25"]),
        Duration::from_secs(60),
        "`node pub` without a daemon",
    )
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("node daemon"), "{err}");
    // A stale api file (daemon gone) gives the same advice.
    let out = output_within(
        Command::new(bin("node")).args(["--api", "127.0.0.1:1", "id"]),
        Duration::from_secs(60),
        "`node --api 127.0.0.1:1 id`",
    )
    .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success());
    assert!(
        err.contains("node daemon") && err.trim().lines().count() == 1,
        "{err}"
    );
}

#[test]
fn restart_keeps_peer_id_and_init_refuses_existing_repo() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = Daemon::start(dir.path(), "a", Opts::default()).unwrap();
    let first = n.peer_id.clone();
    let cid = n.publish("humidity", 40.0, "h").unwrap();
    let st = n
        .stop_with(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(5))
        .unwrap();
    assert!(st.success(), "clean exit on SIGTERM: {st:?}");
    assert!(
        !n.repo.join("api").exists(),
        "api file removed on clean exit"
    );
    assert!(
        !n.daemon_file().exists(),
        "daemon.json removed on clean exit"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(n.repo.join("identity.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let out = n.cli(&["init"]).unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    n.spawn().unwrap();
    assert_eq!(n.peer_id, first);
    assert!(block_matches(&n, &cid).unwrap());
    let h = n.history("humidity").unwrap();
    assert_eq!(h.len(), 1);
    // The next reading of the source chains onto the stored head.
    let v = n
        .post_json("reading/pub?topic=humidity&value=41&source=h")
        .unwrap();
    assert_eq!(v["Seq"], 2);
}

/// `sensornet_store_commits_total` of a node.
fn commits(node: &Daemon) -> u64 {
    let (_, text) = node.get_metrics("/metrics").unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("sensornet_store_commits_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .expect("sensornet_store_commits_total is exported") as u64
}

fn post_batch(node: &Daemon, body: String) -> (u16, String) {
    let resp = sensornet_tests::http()
        .post(format!("http://{}/api/v0/reading/pub-batch", node.api))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .unwrap();
    (resp.status().as_u16(), resp.text().unwrap())
}

#[test]
fn a_batch_is_published_all_or_nothing_in_one_commit_and_reaches_the_peers() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path(), 2).unwrap();
    let (a, b) = (&nodes[0], &nodes[1]);
    // 300 readings of three sources, interleaved, one of them through the `temp` alias.
    let mut body = String::new();
    for i in 0..300 {
        let (topic, source) = match i % 3 {
            0 => ("temp", "batch-t"),
            1 => ("humidity", "batch-h"),
            _ => ("air-quality", "batch-q"),
        };
        body.push_str(&format!(
            "{{\"topic\":\"{topic}\",\"value\":{},\"source\":\"{source}\"}}\n",
            10 + (i / 3) % 80
        ));
    }
    let before = commits(a);
    let (status, text) = post_batch(a, body.clone());
    assert_eq!(status, 200, "{text}");
    let after = commits(a);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 300, "one answer line per reading");
    // Each source's readings are chained in the order given: seq 1..=100.
    for (source, topic) in [
        ("batch-t", "temperature"),
        ("batch-h", "humidity"),
        ("batch-q", "air-quality"),
    ] {
        let seqs: Vec<u64> = lines
            .iter()
            .filter(|l| l["Source"] == source)
            .map(|l| {
                assert_eq!(l["Topic"], topic);
                l["Seq"].as_u64().unwrap()
            })
            .collect();
        assert_eq!(seqs, (1..=100).collect::<Vec<_>>(), "{source}");
    }
    // Answered once durable, in one commit (the node's own housekeeping may add one).
    assert!(
        (1..=2).contains(&(after - before)),
        "300 readings took {} commits",
        after - before
    );
    let of = |node: &Daemon, topic: &str, source: &str| -> Vec<f64> {
        let mut h: Vec<_> = node
            .history(topic)
            .unwrap()
            .into_iter()
            .filter(|r| r["source"] == source)
            .collect();
        h.sort_by_key(|r| r["seq"].as_u64());
        h.iter().map(|r| r["value"].as_f64().unwrap()).collect()
    };
    let want: Vec<f64> = (0..100).map(|k| f64::from(10 + k % 80)).collect();
    assert_eq!(of(a, "temperature", "batch-t"), want);
    sensornet_tests::eventually(Duration::from_secs(30), "the batch on the peer", || {
        Ok((of(b, "temperature", "batch-t") == want
            && of(b, "humidity", "batch-h").len() == 100
            && of(b, "air-quality", "batch-q").len() == 100)
            .then_some(()))
    })
    .unwrap();

    // All or nothing: a bad line anywhere refuses the whole batch, naming the line.
    let cases = [
        (
            "{\"topic\":\"temp\",\"value\":\"warm\",\"source\":\"bad\"}",
            "line 3",
        ),
        (
            "{\"topic\":\"temp\",\"value\":1e9,\"source\":\"bad\"}",
            "line 3",
        ),
        (
            "{\"topic\":\"temp\",\"value\":20,\"source\":\"bad\",\"colour\":1}",
            "line 3",
        ),
        ("not json", "line 3"),
    ];
    for (bad, names) in cases {
        let body = format!(
            "{{\"topic\":\"temp\",\"value\":20,\"source\":\"bad\"}}\n\n{bad}\n{{\"topic\":\"temp\",\"value\":21,\"source\":\"bad\"}}\n"
        );
        let (status, text) = post_batch(a, body);
        assert_eq!(status, 400, "{bad}: {text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let msg = v["Message"].as_str().unwrap();
        assert!(msg.contains(names), "{bad}: {msg}");
        assert!(msg.contains("nothing of the batch was published"), "{msg}");
        assert_eq!(v["Type"], "error");
    }
    assert!(
        of(a, "temperature", "bad").is_empty(),
        "nothing of a refused batch is stored"
    );
    let (status, text) = post_batch(a, "\n\n".into());
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("no readings"), "{text}");
    let big: String = (0..10_001)
        .map(|i| {
            format!(
                "{{\"topic\":\"temp\",\"value\":{},\"source\":\"big\"}}\n",
                i % 30
            )
        })
        .collect();
    let (status, text) = post_batch(a, big);
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("more than 10000"), "{text}");
    assert!(of(a, "temperature", "big").is_empty());
    let (status, text) = post_batch(a, " ".repeat(4_000_001));
    assert_eq!(status, 413, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).expect("Kubo's JSON error shape");
    assert!(v["Message"].as_str().unwrap().contains("split it"), "{v}");
}
