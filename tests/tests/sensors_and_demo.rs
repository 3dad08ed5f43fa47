//! The standalone `sensor` survives its node's restart without losing a reading, a node runs
//! several in-process sensors (one board, two kinds), and the demo prints all three topics and
//! leaves no process behind.

use std::process::{Command, Stdio};
use std::time::Duration;

use sensornet_tests::{bin, eventually, free_port, output_within, Daemon, KillOnDrop, Opts};

#[test]
fn separate_sensor_survives_a_node_restart_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let api = format!("127.0.0.1:{}", free_port());
    let mut node = Daemon::start(
        dir.path(),
        "n",
        Opts {
            api_addr: Some(api.clone()),
            ..Opts::default()
        },
    )
    .unwrap();
    let sensor = KillOnDrop(
        Command::new(bin("sensor"))
            .args([
                "--kind",
                "humidity",
                "--source",
                "sim:5",
                "--interval",
                "50ms",
                "--id",
                "h-test",
                "--count",
                "60",
                "--api",
                &api,
            ])
            .arg("--buffer-dir")
            .arg(dir.path().join("buf"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    eventually(Duration::from_secs(10), "some readings", || {
        Ok((node.history("humidity")?.len() >= 10).then_some(()))
    })
    .unwrap();
    node.stop_with(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(800)); // the sensor buffers while the node is away
    node.spawn().unwrap();
    // 60 readings 50 ms apart plus the outage: well under a minute.
    let out = sensor
        .wait_output(Duration::from_secs(60), "the sensor's 60 readings")
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("buffering on disk"),
        "the sensor noticed the outage: {err}"
    );
    let hist = node.history("humidity").unwrap();
    assert!(hist.len() >= 60, "delivered {}", hist.len());
    let seqs: Vec<u64> = hist.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=hist.len() as u64).collect::<Vec<_>>(),
        "one unbroken chain"
    );
    let times: Vec<u64> = hist.iter().map(|r| r["time"].as_u64().unwrap()).collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "in measurement order"
    );
    // Sampled every 50 ms with dropouts of 0.2 %: no hole wider than a few intervals.
    let widest = times.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(
        widest < 400,
        "a gap of {widest} ms means readings were lost during the restart"
    );
}

/// Sources of `topic` on `node` whose readings it holds.
fn sources(node: &Daemon, topic: &str) -> anyhow::Result<Vec<String>> {
    let mut s: Vec<String> = node
        .history(topic)?
        .iter()
        .filter_map(|r| r["source"].as_str().map(str::to_string))
        .collect();
    s.sort();
    s.dedup();
    Ok(s)
}

#[test]
fn a_node_runs_several_in_process_sensors_from_flags_or_an_env_list() {
    let dir = tempfile::tempdir().unwrap();
    // A BME280-like board: temperature and humidity, one id, flags repeated.
    let board = Daemon::start(
        dir.path(),
        "board",
        Opts {
            extra: [
                "--sensor",
                "temperature",
                "--sensor",
                "humidity",
                "--sensor-id",
                "bme280",
                "--sensor-interval",
                "100ms",
            ]
            .map(String::from)
            .to_vec(),
            ..Opts::default()
        },
    )
    .unwrap();
    // The chart's form: a comma-separated SENSORNET_SENSOR.
    let pod = Daemon::start(
        dir.path(),
        "pod",
        Opts {
            bootstrap: vec![board.swarm.clone()],
            env: [
                ("SENSORNET_SENSOR", "humidity,air-quality"),
                ("SENSORNET_SENSOR_INTERVAL", "100ms"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .to_vec(),
            ..Opts::default()
        },
    )
    .unwrap();
    let host = hostname();
    for (topic, want) in [
        ("temperature", vec!["bme280-temperature".to_string()]),
        (
            "humidity",
            vec!["bme280-humidity".to_string(), format!("{host}-humidity")],
        ),
        ("air-quality", vec![format!("{host}-air-quality")]),
    ] {
        for node in [&board, &pod] {
            eventually(
                Duration::from_secs(30),
                &format!("{topic} from {want:?} on {}", node.name),
                || Ok((sources(node, topic)? == want).then_some(())),
            )
            .unwrap();
        }
    }
    // Two sensors of one kind would write one source: refused before anything listens, also
    // when one is named by its alias.
    let out = output_within(
        Command::new(bin("node"))
            .args(["daemon", "--init", "--sensor", "temperature,temp"])
            .args(["--api-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"])
            .env("SENSORNET_PATH", dir.path().join("twice")),
        Duration::from_secs(20),
        "node daemon with two temperature sensors",
    )
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "two temperature sensors (one by its alias) must be refused"
    );
    assert!(err.contains("two sensors of one kind"), "{err}");
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn demo_prints_all_topics_and_leaves_nothing_running() {
    let out = output_within(
        Command::new(bin("sensornet-demo")).args([
            "--nodes",
            "4",
            "--duration",
            "10s",
            "--interval",
            "300ms",
            "--summary-every",
            "3",
        ]),
        Duration::from_secs(180),
        "the 10 s demo",
    )
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for t in ["temperature", "humidity", "air-quality"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(t) && l.contains("pub→deliver")),
            "no {t} reading in:\n{text}"
        );
    }
    // Every summary line, not just one, reports that nothing is missing.
    let summaries: Vec<&str> = text.lines().filter(|l| l.starts_with("-- ")).collect();
    assert!(!summaries.is_empty(), "no summary line in:\n{text}");
    for l in &summaries {
        assert!(
            l.ends_with("| nothing missing"),
            "a summary reports missing readings: {l}\n{text}"
        );
    }
    assert!(text.contains("nothing missing"), "{text}");
    let dashboard = text
        .lines()
        .find_map(|l| l.strip_prefix("dashboard of node0: "))
        .unwrap_or_else(|| panic!("no dashboard address in:\n{text}"));
    assert!(
        dashboard.starts_with("http://127.0.0.1:") && dashboard.ends_with("/webui"),
        "{dashboard}"
    );
    assert!(text.contains("all nodes stopped"));
    // Once it says it is stopping, the demo prints no reading (nor summary) any more.
    let stopping = text
        .lines()
        .position(|l| l.starts_with("stopping ") && l.ends_with(" nodes..."))
        .unwrap_or_else(|| panic!("no stopping line in:\n{text}"));
    let after: Vec<&str> = text.lines().skip(stopping + 1).collect();
    assert!(
        after
            .iter()
            .all(|l| !l.contains("pub→deliver") && !l.starts_with("-- ")),
        "printed after the stopping line: {after:?}"
    );
    let pids: Vec<u32> = text
        .lines()
        .filter_map(|l| l.split("(pid ").nth(1)?.split(')').next()?.parse().ok())
        .collect();
    assert_eq!(pids.len(), 4);
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "node pid {pid} still running"
        );
    }
}
