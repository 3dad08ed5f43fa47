//! History by time range across the mesh: a node that does not subscribe a topic, or whose
//! retention is shorter than the range asked, answers from its peers (merged, deduped); the
//! CLI's --since/--until/--every/--source and the API's clear 400s.

use std::time::Duration;

use anyhow::Result;
use sensornet_tests::{eventually, Daemon, Opts};
use serde_json::Value;

fn lines(body: &str) -> Vec<Value> {
    body.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_node_without_the_topic_answers_history_from_its_peers() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let holder = Daemon::start(dir.path(), "holder", Opts::default())?;
    // The asker subscribes temperature only and keeps one hour of it.
    let mut asker = Daemon::start(
        dir.path(),
        "asker",
        Opts {
            bootstrap: vec![holder.swarm.clone()],
            extra: vec!["--retention".into(), "1h".into()],
            ..Opts::default()
        },
    )?;
    asker.stop_with(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(5));
    std::fs::write(
        asker.repo.join("config.toml"),
        "topics = [\"temperature\"]\n",
    )?;
    asker.spawn()?;
    holder.wait_ready(Duration::from_secs(30))?;
    asker.wait_ready(Duration::from_secs(30))?;
    eventually(Duration::from_secs(15), "the two connected", || {
        Ok((asker.peer_count()? >= 1).then_some(()))
    })?;

    // Humidity, 30 readings a minute apart over the last half hour, on the holder only.
    let now = sensornet::clock::now_ms();
    let base = now - now % 60_000 - 30 * 60_000;
    for i in 0..30u64 {
        for src in ["h-a", "h-b"] {
            holder.post_json(&format!(
                "reading/pub?topic=humidity&value={}&source={src}&time={}",
                40 + i,
                base + i * 60_000
            ))?;
        }
    }
    // Temperature from three hours ago: before the asker's retention horizon.
    let old = now - 3 * 3_600_000;
    for i in 0..5u64 {
        holder.post_json(&format!(
            "reading/pub?topic=temperature&value={i}&source=t-old&time={}",
            old + i * 1000
        ))?;
    }

    let (st, body) = asker.post("reading/history?topic=humidity&local=true")?;
    assert_eq!(st, 200, "{body}");
    assert!(
        lines(&body).is_empty(),
        "the asker holds no humidity: {body}"
    );

    let (st, body) = asker.post("reading/history?topic=humidity")?;
    assert_eq!(st, 200, "{body}");
    let got = lines(&body);
    assert_eq!(
        got.len(),
        60,
        "every humidity reading, from the holder: {body}"
    );
    let mut cids: Vec<&str> = got.iter().map(|r| r["cid"].as_str().unwrap()).collect();
    cids.sort();
    cids.dedup();
    assert_eq!(cids.len(), 60, "no copies");
    for src in ["h-a", "h-b"] {
        let seqs: Vec<u64> = got
            .iter()
            .filter(|r| r["source"] == src)
            .map(|r| r["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, (1..=30).collect::<Vec<_>>(), "{src} in history order");
    }

    // A limit keeps the oldest, also when merging.
    let (st, body) = asker.post("reading/history?topic=humidity&limit=4")?;
    assert_eq!(st, 200, "{body}");
    let first: Vec<u64> = lines(&body)
        .iter()
        .map(|r| r["time"].as_u64().unwrap())
        .collect();
    assert_eq!(first, [base, base, base + 60_000, base + 60_000], "{body}");

    // Downsampled from the peer, and a source filter.
    let (st, body) = asker.post(&format!(
        "reading/history?topic=humidity&since={}&every=10m&source=h-b",
        base - 1
    ))?;
    assert_eq!(st, 200, "{body}");
    let buckets = lines(&body);
    assert!(buckets.iter().all(|b| b["source"] == "h-b"), "{body}");
    assert_eq!(
        buckets
            .iter()
            .map(|b| b["count"].as_u64().unwrap())
            .sum::<u64>(),
        30,
        "{body}"
    );

    // Before the asker's horizon: the holder's readings come back.
    let (st, body) = asker.post("reading/history?topic=temperature&since=4h&source=t-old")?;
    assert_eq!(st, 200, "{body}");
    assert_eq!(lines(&body).len(), 5, "{body}");

    // The CLI: the same query, human lines of buckets.
    let out = asker.cli(&[
        "history", "humidity", "--since", "1h", "--until", "now", "--every", "15m", "--source",
        "h-a",
    ])?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.lines().count() >= 2 && text.lines().all(|l| l.contains("h-a") && l.contains("n=")),
        "{text}"
    );

    // Bad ranges: a clear message and a failing exit.
    let out = asker.cli(&["history", "humidity", "--since", "30days", "--every", "1s"])?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("at most 10000") && err.contains("HTTP 400"),
        "{err}"
    );
    let (st, body) = asker.post("reading/history?topic=humidity&since=2h&until=3h")?;
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("range is empty"), "{body}");
    Ok(())
}
