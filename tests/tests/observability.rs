//! A real Prometheus scrapes three running nodes; promtool checks the rules, their unit tests,
//! the config and a real scrape; the dashboard and alerts only use metrics a node exports.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sensornet_tests::{eventually, http, wait_output, Daemon, Opts};
use serde_json::Value;

const FILES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/sensornet/files");

struct Prometheus(Child);
impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool missing: scripts/install-prometheus.sh installs it");
    if let Some(s) = stdin {
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), s.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    let out = wait_output(
        &mut child,
        Duration::from_secs(120),
        &format!("promtool {}", args.join(" ")),
    )
    .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn query(port: u16, q: &str) -> anyhow::Result<Vec<Value>> {
    let enc: String = form_urlencoded::byte_serialize(q.as_bytes()).collect();
    let v: Value = http()
        .get(format!("http://127.0.0.1:{port}/api/v1/query?query={enc}"))
        .send()?
        .json()?;
    anyhow::ensure!(v["status"] == "success", "query {q}: {v}");
    Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
}

fn scalar(port: u16, q: &str) -> Option<f64> {
    query(port, q).ok()?.first()?["value"][1]
        .as_str()?
        .parse()
        .ok()
}

#[test]
fn alert_rules_and_their_unit_tests_pass() {
    let (ok, out) = promtool(&["check", "rules", &format!("{FILES}/alerts.yml")], None);
    assert!(ok, "{out}");
    let (ok, out) = promtool(
        &["test", "rules", &format!("{FILES}/alerts_test.yml")],
        None,
    );
    assert!(ok, "{out}");
}

#[test]
fn prometheus_scrapes_three_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let first = Daemon::start(dir.path(), "m0", Opts::default()).unwrap();
    let boot = vec![first.swarm.clone()];
    let sensor = |kind: &str| Opts {
        bootstrap: boot.clone(),
        extra: ["--sensor", kind, "--sensor-interval", "100ms"]
            .map(String::from)
            .to_vec(),
        ..Opts::default()
    };
    let mut nodes = [
        first,
        Daemon::start(dir.path(), "m1", sensor("temperature")).unwrap(),
        Daemon::start(dir.path(), "m2", sensor("humidity")).unwrap(),
    ];

    // A real scrape passes promtool's linter, and holds every metric the dashboard and alerts use.
    nodes[0].wait_ready(Duration::from_secs(20)).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let (_, scrape) = nodes[0].get_metrics("/metrics").unwrap();
    let (ok, out) = promtool(&["check", "metrics"], Some(&scrape));
    assert!(ok, "promtool check metrics: {out}");
    let used = std::fs::read_to_string(format!("{FILES}/grafana-dashboard.json")).unwrap()
        + &std::fs::read_to_string(format!("{FILES}/alerts.yml")).unwrap();
    let mut names: Vec<String> = used
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| {
            w.starts_with("sensornet_") || w.starts_with("process_") || w.starts_with("libp2p_")
        })
        .map(|w| {
            ["_bucket", "_count", "_sum"]
                .iter()
                .fold(w.to_string(), |w, s| {
                    w.strip_suffix(s).map(String::from).unwrap_or(w)
                })
        })
        .collect();
    names.sort();
    names.dedup();
    assert!(names.len() >= 12, "{names:?}");
    for n in &names {
        assert!(
            scrape.contains(&format!("# TYPE {n} ")),
            "the dashboard or alerts use {n}, which a node does not export"
        );
    }

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let targets: Vec<String> = nodes.iter().map(|n| format!("'{}'", n.metrics)).collect();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {FILES}/alerts.yml\nscrape_configs:\n  - job_name: sensornet\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        ),
    )
    .unwrap();
    let (ok, out) = promtool(&["check", "config", config.to_str().unwrap()], None);
    assert!(ok, "{out}");
    let _prom = Prometheus(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus missing: scripts/install-prometheus.sh installs it"),
    );
    let t = Duration::from_secs(60);
    eventually(t, "3 targets up", || {
        Ok((scalar(port, r#"count(up{job="sensornet"} == 1)"#) == Some(3.0)).then_some(()))
    })
    .unwrap();
    eventually(t, "a series per node", || {
        Ok((query(port, "sensornet_ready")?.len() == 3
            && query(port, "process_resident_memory_bytes")?.len() == 3)
            .then_some(()))
    })
    .unwrap();
    eventually(t, "a non-zero reading rate", || {
        Ok(
            scalar(port, "sum(rate(sensornet_readings_delivered_total[5s]))")
                .filter(|r| *r > 0.0)
                .map(|_| ()),
        )
    })
    .unwrap();
    eventually(t, "a populated delay histogram", || {
        let n = scalar(port, r#"sum(sensornet_delivery_delay_seconds_count{topic="temperature"})"#).unwrap_or(0.0);
        let p99 = scalar(port, "histogram_quantile(0.99, sum by (le) (rate(sensornet_delivery_delay_seconds_bucket[10s])))");
        Ok((n > 10.0 && p99.is_some_and(f64::is_finite)).then_some(()))
    })
    .unwrap();
    let victim = nodes[2].metrics.clone();
    nodes[2].kill9();
    eventually(t, "up drops to 0 for the killed node", || {
        Ok((scalar(port, &format!(r#"up{{instance="{victim}"}}"#)) == Some(0.0)).then_some(()))
    })
    .unwrap();
    assert_eq!(
        scalar(port, r#"count(up{job="sensornet"} == 1)"#),
        Some(2.0)
    );
}
