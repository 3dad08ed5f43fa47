//! Hostile peers (a rust-libp2p test binary) attack a live node while an honest publisher keeps
//! going: every honest reading arrives, bad input is counted and penalised, memory stays bounded.

use std::process::{Command, Stdio};
use std::time::Duration;

use sensornet::p2p::behaviour::MAX_TOPICS_PER_PEER;
use sensornet_tests::{
    bin, cluster, eventually, multibase_topic, Daemon, KillOnDrop, LineReader, Opts,
};

/// How long an attacker may take to say who it is, and to finish its attack (10 s).
const ATTACKER_TIMEOUT: Duration = Duration::from_secs(60);

/// The pod's memory limit in the chart's default values (`resources.limits.memory`), in bytes.
fn chart_memory_limit() -> f64 {
    let values = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/sensornet/values.yaml"),
    )
    .unwrap();
    let after_limits = values
        .split("limits:")
        .nth(1)
        .expect("resources.limits in values.yaml");
    let memory = after_limits
        .lines()
        .find_map(|l| l.trim().strip_prefix("memory:"))
        .expect("a memory limit")
        .trim();
    let (n, unit) = memory.split_at(
        memory
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(memory.len()),
    );
    let n: f64 = n.parse().unwrap();
    n * match unit {
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Ki" => 1024.0,
        "" => 1.0,
        other => panic!("unit {other} of the chart's memory limit"),
    }
}

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
    const MODES: [&str; 10] = [
        "payloads:not-cbor",
        "payloads:bad-reading",
        "payloads:bad-bundle",
        "payloads:wrong-topic",
        "payloads:truncated",
        "payloads:oversized",
        "payloads:topic-flood",
        "unsigned",
        "badblocks",
        "replay",
    ];
    const REPLAY: usize = 9;
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
            hist.iter()
                .all(|r| r["source"] != "evil" && r["source"] != "unsigned"),
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
        "bad-bundle",
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
        6,
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
    let limit = chart_memory_limit();
    assert!(
        rss < limit,
        "memory {rss} bytes, over the chart's limit of {limit}"
    );
    println!(
        "hostile peer scores seen: {scores:?}; victim RSS {:.1} MB",
        rss / 1e6
    );
}

/// One attacker against a fresh node of its own.
struct Alone {
    victim: Daemon,
    child: KillOnDrop,
    id: String,
    lines: LineReader,
}

impl Alone {
    fn start(dir: &std::path::Path, mode: &str, secs: u64) -> Alone {
        let name = format!("victim-{}", mode.replace(':', "-"));
        let victim = Daemon::start(dir, &name, Opts::default()).unwrap();
        victim.wait_ready(Duration::from_secs(30)).unwrap();
        let mut child = KillOnDrop(
            Command::new(bin("hostile-peer"))
                .args([victim.swarm.as_str(), mode, &secs.to_string()])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut lines = LineReader::stdout_of(format!("the {mode} attacker"), &mut child);
        let first = lines.next_line(ATTACKER_TIMEOUT).unwrap();
        let id = first.strip_prefix("peer ").unwrap().to_string();
        Alone {
            victim,
            child,
            id,
            lines,
        }
    }

    /// Waits for the attacker to finish; returns the node and what the attacker printed.
    fn finish(mut self) -> (Daemon, Vec<String>) {
        let out = self.lines.rest(ATTACKER_TIMEOUT).unwrap();
        let _ = self
            .child
            .wait_output(ATTACKER_TIMEOUT, "the attacker's exit");
        (self.victim, out)
    }
}

fn metrics(node: &Daemon) -> String {
    node.get_metrics("/metrics").unwrap().1
}

/// Rejections by sensornet's own validator, any topic and reason.
fn own_rejections(m: &str) -> f64 {
    metric_sum(m, "sensornet_readings_rejected_total")
}

fn rss(m: &str) -> f64 {
    metric_sum(m, "process_resident_memory_bytes")
}

#[test]
fn unsigned_oversized_and_topic_flood_attacks_are_each_refused_by_their_own_check() {
    let dir = tempfile::tempdir().unwrap();
    let limit = chart_memory_limit();

    // Unsigned: readings our validator would take, refused by gossipsub's signature check
    // before it sees them.
    let (victim, out) = Alone::start(dir.path(), "unsigned", 6).finish();
    assert!(
        out.iter().any(|l| l == "valid: sent"),
        "the unsigned attacker published: {out:?}"
    );
    let m = metrics(&victim);
    assert!(
        metric_sum(
            &m,
            "libp2p_gossipsub_invalid_messages_per_topic_total{hash=\"temperature\"}"
        ) > 0.0,
        "gossipsub counted the unsigned messages as invalid"
    );
    assert_eq!(
        own_rejections(&m),
        0.0,
        "refused before sensornet's validator"
    );
    assert!(
        victim
            .history("temperature")
            .unwrap()
            .iter()
            .all(|r| r["source"] != "unsigned"),
        "no unsigned reading stored"
    );
    assert!(
        rss(&m) < limit,
        "memory {} over the chart's limit {limit}",
        rss(&m)
    );

    // Oversized: a 2 MiB message, over the 1 MiB + envelope transmit limit, is dropped by the
    // frame decoder: gossipsub never receives it as a message.
    let (victim, out) = Alone::start(dir.path(), "payloads:oversized", 6).finish();
    assert!(
        out.iter().any(|l| l == "oversized: sent"),
        "the oversized attacker published: {out:?}"
    );
    let m = metrics(&victim);
    assert_eq!(
        metric_sum(
            &m,
            "libp2p_gossipsub_topic_msg_recv_counts_unfiltered_total{hash=\"temperature\"}"
        ),
        0.0,
        "no oversized message was decoded"
    );
    assert_eq!(own_rejections(&m), 0.0);
    assert!(victim.history("temperature").unwrap().is_empty());
    assert!(
        rss(&m) < limit,
        "memory {} over the chart's limit {limit}",
        rss(&m)
    );

    // Topic flood: 300 new topics at once; the node tracks at most MAX_TOPICS_PER_PEER per
    // peer and refuses the rest, while the attacker's ordinary subscriptions are kept.
    let mut flood = Alone::start(dir.path(), "payloads:topic-flood", 8);
    let line = flood
        .lines
        .wait_for_line(ATTACKER_TIMEOUT, "the flood", |l| {
            l.starts_with("topic-flood: sent")
        })
        .unwrap();
    let prefix = line
        .strip_prefix("topic-flood: sent ")
        .and_then(|t| t.strip_suffix("0..299"))
        .unwrap()
        .to_string();
    let has = |topic: &str| -> bool {
        let v = flood
            .victim
            .post_json(&format!("pubsub/peers?arg={}", multibase_topic(topic)))
            .unwrap();
        v["Strings"]
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p.as_str() == Some(flood.id.as_str())))
    };
    eventually(
        Duration::from_secs(10),
        "the flooder's chatter kept",
        || Ok(has("chatter").then_some(())),
    )
    .unwrap();
    let accepted = (0..300).filter(|i| has(&format!("{prefix}{i}"))).count();
    // temperature, humidity, air-quality and chatter count against the cap too.
    assert!(
        accepted + 4 <= MAX_TOPICS_PER_PEER,
        "{accepted} flooded topics tracked, over the cap of {MAX_TOPICS_PER_PEER}"
    );
    assert!(
        !has(&format!("{prefix}299")),
        "the last flooded topic refused"
    );
    println!("topic flood: {accepted} of 300 topics tracked (cap {MAX_TOPICS_PER_PEER})");
    let (victim, _) = flood.finish();
    let m = metrics(&victim);
    assert!(
        rss(&m) < limit,
        "memory {} over the chart's limit {limit}",
        rss(&m)
    );
}
