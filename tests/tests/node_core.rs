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
