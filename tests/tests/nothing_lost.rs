//! Nothing lost: catch-up by CID after a kill -9, a fresh node joining a loaded cluster, and
//! SIGKILL during heavy publishing. (The partition scenario is in `partition.rs`.)

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sensornet_tests::{block_matches, cluster, eventually, Daemon, Opts};

/// Publishes `per_source` readings for each of `sources` sources in parallel; returns CIDs.
fn publish_parallel(node: &Daemon, topic: &str, sources: usize, per_source: usize) -> Vec<String> {
    let cids = Arc::new(Mutex::new(Vec::new()));
    std::thread::scope(|s| {
        for src in 0..sources {
            let cids = cids.clone();
            s.spawn(move || {
                for i in 0..per_source {
                    let value = 20.0 + (i % 50) as f64 / 10.0;
                    let cid = node.publish(topic, value, &format!("src{src}")).unwrap();
                    cids.lock().unwrap().push(cid);
                }
            });
        }
    });
    Arc::try_unwrap(cids).unwrap().into_inner().unwrap()
}

#[test]
fn killed_node_catches_up_1000_readings_by_cid() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(dir.path(), 3).unwrap();
    let before = nodes[0].publish("temperature", 20.0, "t1").unwrap();
    eventually(Duration::from_secs(5), "first reading everywhere", || {
        Ok(nodes[2]
            .history("temperature")?
            .iter()
            .any(|r| r["cid"] == before.as_str())
            .then_some(()))
    })
    .unwrap();
    nodes[2].kill9();
    let mut cids = vec![before];
    for i in 0..999 {
        cids.push(
            nodes[0]
                .publish("temperature", 20.0 + (i % 10) as f64, "t1")
                .unwrap(),
        );
    }
    let t0 = Instant::now();
    nodes[2].spawn().unwrap();
    nodes[2].wait_ready(Duration::from_secs(60)).unwrap();
    let ready_after = t0.elapsed();
    let hist = nodes[2].history("temperature").unwrap();
    let got: Vec<&str> = hist.iter().map(|r| r["cid"].as_str().unwrap()).collect();
    assert_eq!(got.len(), 1000, "restarted node holds every reading");
    assert_eq!(
        got,
        cids.iter().map(String::as_str).collect::<Vec<_>>(),
        "in publication order"
    );
    let seqs: Vec<u64> = hist.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=1000).collect::<Vec<u64>>());
    for c in &cids {
        assert!(block_matches(&nodes[2], c).unwrap(), "block {c} verifies");
    }
    // The CLI prints the same history, oldest first.
    let out = nodes[2].cli(&["history", "temperature"]).unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1000);
    assert!(text.lines().next().unwrap().contains(&cids[0]));
    assert!(text.lines().last().unwrap().contains(&cids[999]));
    println!("restart after missing 999 readings: ready in {ready_after:?}");
}

#[test]
fn fresh_node_catches_up_10000_readings_before_ready() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path(), 2).unwrap();
    let t0 = Instant::now();
    let cids = publish_parallel(&nodes[0], "humidity", 10, 1000);
    println!("published 10,000 durable readings in {:?}", t0.elapsed());
    eventually(Duration::from_secs(60), "second node has all", || {
        Ok((nodes[1].history("humidity")?.len() == 10_000).then_some(()))
    })
    .unwrap();
    let t0 = Instant::now();
    let fresh = Daemon::start(
        dir.path(),
        "fresh",
        Opts {
            bootstrap: vec![nodes[1].swarm.clone()],
            ..Opts::default()
        },
    )
    .unwrap();
    // Readiness must not come before the store holds everything.
    let mut ready_seen = false;
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if fresh.is_ready() {
            ready_seen = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let ready_after = t0.elapsed();
    assert!(ready_seen, "fresh node never turned ready");
    let hist = fresh.history("humidity").unwrap();
    assert_eq!(
        hist.len(),
        10_000,
        "ready only once the whole window is here"
    );
    let want: HashSet<&str> = cids.iter().map(String::as_str).collect();
    let got: HashSet<&str> = hist.iter().map(|r| r["cid"].as_str().unwrap()).collect();
    assert_eq!(want, got);
    let (_, metrics) = fresh.get_metrics("/metrics").unwrap();
    let fetched: f64 = metrics
        .lines()
        .find(|l| l.starts_with("sensornet_catchup_blocks_fetched_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(fetched >= 10_000.0, "fetched {fetched}");
    println!(
        "fresh node: start→ready {ready_after:?} (process start to ready, incl. catch-up of 10,000), {:.0} blocks/s overall",
        10_000.0 / ready_after.as_secs_f64()
    );
}

#[test]
fn sigkill_during_publishing_loses_no_acknowledged_reading() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Daemon::start(dir.path(), "victim", Opts::default()).unwrap();
    let mut acked: Vec<String> = Vec::new();
    for round in 0..20 {
        let stop = Arc::new(AtomicBool::new(false));
        let got = Arc::new(Mutex::new(Vec::new()));
        let api = node.api.clone();
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let (stop, got, api) = (stop.clone(), got.clone(), api.clone());
                std::thread::spawn(move || {
                    let c = sensornet_tests::http();
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let url = format!("http://{api}/api/v0/reading/pub?topic=air-quality&value={}&source=w{w}", 10 + i % 30);
                        match c.post(url).send() {
                            // Only a 200 with a CID is an acknowledgement.
                            Ok(r) if r.status().is_success() => {
                                if let Ok(v) = r.json::<serde_json::Value>() {
                                    got.lock().unwrap().push(v["Cid"].as_str().unwrap().to_string());
                                }
                            }
                            _ => break,
                        }
                        i += 1;
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(150 + (round * 37) % 200));
        node.kill9();
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            let _ = w.join();
        }
        acked.extend(got.lock().unwrap().drain(..));
        node.spawn().unwrap();
    }
    assert!(acked.len() > 100, "the loop published ({})", acked.len());
    let hist = node.history("air-quality").unwrap();
    let stored: HashSet<&str> = hist.iter().map(|r| r["cid"].as_str().unwrap()).collect();
    let missing: Vec<&String> = acked
        .iter()
        .filter(|c| !stored.contains(c.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged readings lost, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    for c in acked.iter().step_by(7) {
        assert!(block_matches(&node, c).unwrap(), "block {c} intact");
    }
    println!(
        "20 SIGKILL rounds: {} acknowledged readings, all present and intact",
        acked.len()
    );
}

#[test]
fn retention_drops_old_readings_by_age_and_by_bytes() {
    let dir = tempfile::tempdir().unwrap();
    // By age: a 3 s window.
    let aged = Daemon::start(
        dir.path(),
        "aged",
        Opts {
            extra: vec!["--retention".into(), "3s".into()],
            ..Opts::default()
        },
    )
    .unwrap();
    for i in 0..5 {
        aged.publish("temperature", 20.0 + i as f64, "old").unwrap();
    }
    assert_eq!(aged.history("temperature").unwrap().len(), 5);
    eventually(Duration::from_secs(20), "old readings collected", || {
        Ok(aged.history("temperature")?.is_empty().then_some(()))
    })
    .unwrap();
    // The source's head survives so its chain continues.
    let v = aged
        .post_json("reading/pub?topic=temperature&value=30&source=old")
        .unwrap();
    assert_eq!(v["Seq"], 6);

    // By bytes: a 2,000-byte budget keeps only the newest readings.
    let repo = dir.path().join("budget");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(
        repo.join("config.toml"),
        "[retention]\nmax_age = \"50s\"\nmax_bytes = 2000\n",
    )
    .unwrap();
    let budget = Daemon::start(dir.path(), "budget", Opts::default()).unwrap();
    let mut cids = Vec::new();
    for i in 0..60 {
        cids.push(
            budget
                .publish("humidity", 40.0 + (i % 10) as f64, "b")
                .unwrap(),
        );
    }
    let kept = eventually(Duration::from_secs(20), "trimmed to the budget", || {
        let h = budget.history("humidity")?;
        Ok((h.len() < 60).then_some(h))
    })
    .unwrap();
    assert!(kept.len() <= 20 && !kept.is_empty(), "kept {}", kept.len());
    assert_eq!(
        kept.last().unwrap()["cid"],
        cids[59].as_str(),
        "the newest stay"
    );
}
