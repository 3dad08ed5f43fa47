//! Discovery and connection limits: subscribers of a topic find each other through the DHT
//! (Kubo's `/ipfs/kad/1.0.0`) whatever the bootstrap graph, and a node keeps no more
//! connections than its budget.

use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sensornet_tests::{eventually, pubsub_data, Daemon, Opts};
use serde_json::Value;

fn peer_ids(node: &Daemon) -> Result<Vec<String>> {
    let v = node.post_json("swarm/peers")?;
    Ok(v["Peers"]
        .as_array()
        .context("Peers is a list")?
        .iter()
        .filter_map(|p| p["Peer"].as_str().map(str::to_string))
        .collect())
}

/// Publishes numbered payloads from `from` until a subscription elsewhere (`rx`) receives
/// one published by `from`; returns it. (A subscriber also sees its own node's messages.)
fn first_delivery(from: &Daemon, rx: &Receiver<Value>, topic: &str) -> Result<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    while Instant::now() < deadline {
        n += 1;
        from.pubsub_pub(topic, format!("note {n} from {}", from.name).as_bytes())?;
        while let Ok(msg) = rx.recv_timeout(Duration::from_millis(500)) {
            if msg["from"] == from.peer_id.as_str() {
                return pubsub_data(&msg);
            }
        }
    }
    anyhow::bail!("no message on {topic} from {} within 30 s", from.name)
}

#[test]
fn a_raw_topic_reaches_subscribers_that_share_only_a_non_subscribing_bootstrap_node() -> Result<()>
{
    let dir = tempfile::tempdir()?;
    let a = Daemon::start(dir.path(), "a", Opts::default())?;
    let via_a = || Opts {
        bootstrap: vec![a.swarm.clone()],
        ..Opts::default()
    };
    let b = Daemon::start(dir.path(), "b", via_a())?;
    let c = Daemon::start(dir.path(), "c", via_a())?;
    for n in [&a, &b, &c] {
        n.wait_ready(Duration::from_secs(30))?;
    }
    let topic = "lab-notes";
    let on_b = b.pubsub_sub(topic)?;
    let on_c = c.pubsub_sub(topic)?;
    // The bootstrap node never subscribes: gossipsub on it would not relay the topic.
    let topics = a.post_json("pubsub/ls")?;
    assert!(
        !topics["Strings"]
            .as_array()
            .context("Strings")?
            .iter()
            .any(|t| t.as_str() == Some(&sensornet_tests::multibase_topic(topic))),
        "a does not subscribe to {topic}: {topics}"
    );
    eventually(
        Duration::from_secs(45),
        "b and c find each other through the DHT",
        || Ok(peer_ids(&b)?.contains(&c.peer_id).then_some(())),
    )?;
    let got = first_delivery(&b, &on_c, topic)?;
    assert!(
        String::from_utf8(got.clone())?.ends_with("from b"),
        "c got b's note: {got:?}"
    );
    let got = first_delivery(&c, &on_b, topic)?;
    assert!(
        String::from_utf8(got.clone())?.ends_with("from c"),
        "b got c's note: {got:?}"
    );
    Ok(())
}

#[test]
fn a_node_over_its_connection_budget_trims_down_and_everyone_still_gets_readings() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // Budget 4: all 6 spokes may dial in (up to 8 are held for the 30 s grace), then the
    // trimmer leaves 3.
    let hub = Daemon::start(
        dir.path(),
        "hub",
        Opts {
            extra: vec!["--max-connections".into(), "4".into()],
            ..Opts::default()
        },
    )?;
    hub.wait_ready(Duration::from_secs(30))?;
    let spokes: Vec<Daemon> = (0..6)
        .map(|i| {
            Daemon::start(
                dir.path(),
                &format!("spoke{i}"),
                Opts {
                    bootstrap: vec![hub.swarm.clone()],
                    ..Opts::default()
                },
            )
        })
        .collect::<Result<_>>()?;
    for s in &spokes {
        s.wait_ready(Duration::from_secs(30))?;
    }
    let peak = hub.peer_count()?;
    assert_eq!(peak, 6, "every spoke reached the hub at first");
    eventually(
        Duration::from_secs(60),
        "the hub trims to its low-water mark",
        || Ok((hub.peer_count()? <= 3).then_some(())),
    )?;
    assert!(hub.log_text().contains("over the connection budget"));
    // Trimmed spokes found each other through the DHT meanwhile; DHT queries may bring one
    // back for a while (the budget is a high-water mark, as in Kubo), never past twice it.
    let until = Instant::now() + Duration::from_secs(15);
    let mut most = 0;
    while Instant::now() < until {
        most = most.max(hub.peer_count()?);
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        most <= 8,
        "the hub held {most} peers, over twice its budget"
    );
    println!("hub: {peak} peers at first, at most {most} after trimming");
    let cid = spokes[5].publish("temperature", 21.5, "spoke-5")?;
    for n in spokes.iter().chain([&hub]) {
        eventually(
            Duration::from_secs(20),
            &format!("the reading on {}", n.name),
            || {
                Ok(n.history("temperature")?
                    .iter()
                    .any(|r| r["cid"] == cid.as_str())
                    .then_some(()))
            },
        )?;
    }
    Ok(())
}
