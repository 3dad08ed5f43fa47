//! Hostile peers (a rust-libp2p test binary) attack a live node while an honest publisher keeps
//! going: every honest reading arrives, bad input is counted and penalised, memory stays bounded.

use std::process::{Command, Stdio};
use std::time::Duration;

use sensornet_tests::{bin, cluster, eventually, KillOnDrop, LineReader};

/// How long an attacker may take to say who it is, and to finish its attack (10 s).
const ATTACKER_TIMEOUT: Duration = Duration::from_secs(60);

fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn hostile_peers_are_rejected_and_penalised_while_honest_readings_all_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path(), 3).unwrap();
    let victim = &nodes[1];
    let spawn = |mode: &str| {
        let mut child = KillOnDrop(
            Command::new(bin("hostile-peer"))
                .args([victim.swarm.as_str(), mode, "10"])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut lines = LineReader::stdout_of(format!("the {mode} attacker"), &mut child);
        let first = lines.next_line(ATTACKER_TIMEOUT).unwrap();
        let id = first.strip_prefix("peer ").unwrap().to_string();
        (child, id, lines)
    };
    const MODES: [&str; 9] = [
        "payloads:not-cbor",
        "payloads:bad-reading",
        "payloads:wrong-topic",
        "payloads:truncated",
        "payloads:oversized",
        "payloads:topic-flood",
        "unsigned",
        "badblocks",
        "replay",
    ];
    const REPLAY: usize = 8;
    let attackers = MODES.map(spawn);

    // The honest publisher keeps going through the attack.
    let mut honest = Vec::new();
    let mut scores: Vec<f64> = Vec::new();
    for i in 0..150 {
        honest.push(
            nodes[0]
                .publish("temperature", 15.0 + (i % 10) as f64, "honest")
                .unwrap(),
        );
        std::thread::sleep(Duration::from_millis(50));
        if i % 10 == 0 {
            let peers = victim.post_json("swarm/peers").unwrap();
            for p in peers["Peers"].as_array().unwrap() {
                let scored = attackers.iter().take(4).chain([&attackers[REPLAY]]);
                if scored.into_iter().any(|a| p["Peer"] == a.1.as_str()) {
                    if let Some(s) = p["Score"].as_f64() {
                        scores.push(s);
                    }
                }
            }
        }
    }
    let mut logs = Vec::new();
    for (child, _, mut lines) in attackers {
        logs.push(lines.rest(ATTACKER_TIMEOUT).unwrap());
        let _ = child.wait_output(ATTACKER_TIMEOUT, "an attacker's exit");
    }
    for (i, mode) in MODES.iter().enumerate() {
        assert!(!logs[i].is_empty(), "the {mode} attacker did something");
    }
    for n in &nodes {
        eventually(Duration::from_secs(20), "every honest reading", || {
            let have: std::collections::HashSet<String> = n
                .history("temperature")?
                .iter()
                .map(|r| r["cid"].as_str().unwrap_or("").to_string())
                .collect();
            Ok(honest.iter().all(|c| have.contains(c)).then_some(()))
        })
        .unwrap();
        let hist = n.history("temperature").unwrap();
        assert!(
            hist.iter().all(|r| r["source"] != "evil"),
            "{}: no hostile reading stored",
            n.name
        );
    }
    // The replayer's hand-built gossip is well formed: its fresh readings are accepted, the
    // ones signed with long-used seqnos are not.
    let hist = victim.history("temperature").unwrap();
    let from = |source: &str| hist.iter().filter(|r| r["source"] == source).count();
    assert_eq!(
        from("replay-fresh"),
        5,
        "fresh hand-built readings accepted"
    );
    assert_eq!(from("replay-stale"), 0, "replayed seqnos refused");
    let (_, m) = victim.get_metrics("/metrics").unwrap();
    // One attacker per kind: peer scoring graylists each after its first invalid messages.
    let counted: Vec<&str> = [
        "not-cbor",
        "bad-reading",
        "wrong-topic",
        "not-a-reading",
        "replayed-seqno",
    ]
    .into_iter()
    .filter(|reason| {
        metric_sum(
            &m,
            &format!(
                "sensornet_readings_rejected_total{{topic=\"temperature\",reason=\"{reason}\"}}"
            ),
        ) + metric_sum(
            &m,
            &format!("sensornet_readings_rejected_total{{topic=\"humidity\",reason=\"{reason}\"}}"),
        ) + metric_sum(
            &m,
            &format!(
                "sensornet_readings_rejected_total{{topic=\"air-quality\",reason=\"{reason}\"}}"
            ),
        ) > 0.0
    })
    .collect();
    assert_eq!(
        counted.len(),
        5,
        "rejections counted by reason: {counted:?}"
    );
    let invalid = metric_sum(&m, "libp2p_gossipsub_invalid_messages_per_topic_total");
    println!("rejected reasons seen: {counted:?}; gossipsub invalid messages: {invalid}; attacker actions: {:?}", logs.iter().map(Vec::len).collect::<Vec<_>>());
    assert!(
        metric_sum(&m, "sensornet_catchup_bad_blocks_total") > 0.0,
        "lying block answers counted"
    );
    assert!(
        victim.log_text().contains("do not hash to their CID"),
        "the lying peer is named in the log"
    );
    assert!(
        scores.iter().any(|s| *s < 0.0),
        "the hostile peer's score dropped: {scores:?}"
    );
    let rss = metric_sum(&m, "process_resident_memory_bytes");
    assert!(rss < 300e6, "memory bounded: {rss} bytes");
    println!(
        "hostile peer scores seen: {scores:?}; victim RSS {:.1} MB",
        rss / 1e6
    );
}
