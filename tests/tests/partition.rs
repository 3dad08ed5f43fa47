//! A five-node cluster in network namespaces is cut in two, both halves publish, the cut heals:
//! every node converges on the same heads and the same set of readings. And a peer behind a
//! cut link is dropped once it misses its pings, not when TCP gives up a quarter of an hour
//! later.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use sensornet_tests::netns::Net;
use sensornet_tests::{eventually, Daemon, Opts};

fn cids(d: &Daemon) -> BTreeSet<String> {
    d.history("temperature")
        .unwrap_or_default()
        .iter()
        .map(|r| r["cid"].as_str().unwrap_or("").to_string())
        .collect()
}

/// A node's heads; a failed query is an error, never "no heads".
fn heads(d: &Daemon) -> anyhow::Result<String> {
    Ok(d.post_json("reading/heads?topic=temperature")?["Heads"].to_string())
}

fn peers(d: &Daemon) -> anyhow::Result<BTreeSet<String>> {
    Ok(d.post_json("swarm/peers")?["Peers"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| p["Peer"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}

/// Blocks this node fetched by catch-up (not gossip).
fn fetched(d: &Daemon) -> anyhow::Result<f64> {
    let (_, text) = d.get_metrics("/metrics")?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("sensornet_catchup_blocks_fetched_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0))
}

#[test]
fn partitioned_halves_converge_after_healing() {
    let net = Net::new(5, 2).expect("creating network namespaces (needs root)");
    let dir = tempfile::tempdir().unwrap();
    let all: Vec<String> = net
        .addrs
        .iter()
        .map(|a| format!("/ip4/{a}/tcp/4001"))
        .collect();
    let nodes: Vec<Daemon> = (0..5)
        .map(|i| {
            Daemon::start(
                dir.path(),
                &format!("p{i}"),
                Opts {
                    listen: Some(all[i].clone()),
                    bootstrap: all
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| *j != i)
                        .map(|(_, a)| a.clone())
                        .collect(),
                    netns: Some(net.hosts[i].clone()),
                    ..Opts::default()
                },
            )
            .unwrap()
        })
        .collect();
    for n in &nodes {
        n.wait_ready(Duration::from_secs(30)).unwrap();
        eventually(Duration::from_secs(30), "4 peers", || {
            Ok((n.peer_count()? >= 4).then_some(()))
        })
        .unwrap();
    }
    nodes[0].publish("temperature", 10.0, "left").unwrap();
    nodes[4].publish("temperature", 11.0, "right").unwrap();
    eventually(
        Duration::from_secs(10),
        "initial readings everywhere",
        || Ok(nodes.iter().all(|n| cids(n).len() == 2).then_some(())),
    )
    .unwrap();

    net.connect_halves(false).unwrap();
    // The cut lasts until every connection across it is gone (missed pings), so what the
    // halves write meanwhile can only come back through catch-up, not gossip's retransmits.
    let cut = Instant::now();
    for (i, n) in nodes.iter().enumerate() {
        let other_side: Vec<&String> = nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| (*j < 2) != (i < 2))
            .map(|(_, m)| &m.peer_id)
            .collect();
        eventually(
            Duration::from_secs(90),
            &format!("{} drops the peers across the cut", n.name),
            || {
                let p = peers(n)?;
                Ok(other_side.iter().all(|o| !p.contains(*o)).then_some(()))
            },
        )
        .unwrap();
    }
    println!(
        "connections across the cut dropped after {:?}",
        cut.elapsed()
    );
    let fetched_before: f64 = nodes.iter().map(|n| fetched(n).unwrap()).sum();
    for i in 0..20 {
        nodes[i % 2]
            .publish("temperature", 12.0 + i as f64 / 10.0, "left")
            .unwrap();
        nodes[2 + i % 3]
            .publish("temperature", 13.0 + i as f64 / 10.0, "right")
            .unwrap();
    }
    // Past gossipsub's message cache (5 heartbeats of 0.7 s): nothing written during the
    // cut is offered again by gossip after the heal.
    std::thread::sleep(Duration::from_secs(5));
    let left = cids(&nodes[0]);
    let right = cids(&nodes[4]);
    assert_ne!(left, right, "the partition really separated the halves");
    assert_eq!(left.len(), 22);
    assert_eq!(right.len(), 22);

    let t0 = Instant::now();
    net.connect_halves(true).unwrap();
    eventually(Duration::from_secs(120), "convergence", || {
        let sets: Vec<BTreeSet<String>> = nodes.iter().map(cids).collect();
        let hs: Vec<String> = nodes.iter().map(heads).collect::<anyhow::Result<_>>()?;
        Ok(
            (sets.iter().all(|s| s.len() == 42 && *s == sets[0]) && hs.iter().all(|h| *h == hs[0]))
                .then_some(()),
        )
    })
    .unwrap();
    let healed_in = t0.elapsed();
    let fetched_after: f64 = nodes.iter().map(|n| fetched(n).unwrap()).sum();
    // Each side lacks the other's 20: at least 20 blocks per node came by catch-up.
    assert!(
        fetched_after - fetched_before >= 5.0 * 20.0,
        "catch-up brought what was written across the cut: {} blocks",
        fetched_after - fetched_before
    );
    println!(
        "partition healed: all 5 nodes converged on 42 readings in {healed_in:?}, {} blocks by catch-up",
        fetched_after - fetched_before
    );
}

#[test]
fn a_peer_behind_a_cut_link_is_dropped_after_missed_pings_and_redialed_after() {
    let net = Net::new(2, 1).expect("creating network namespaces (needs root)");
    let dir = tempfile::tempdir().unwrap();
    let addr = |i: usize| format!("/ip4/{}/tcp/4001", net.addrs[i]);
    let nodes: Vec<Daemon> = (0..2)
        .map(|i| {
            Daemon::start(
                dir.path(),
                &format!("q{i}"),
                Opts {
                    listen: Some(addr(i)),
                    bootstrap: vec![addr(1 - i)],
                    netns: Some(net.hosts[i].clone()),
                    ..Opts::default()
                },
            )
            .unwrap()
        })
        .collect();
    for n in &nodes {
        eventually(Duration::from_secs(30), "connected", || {
            Ok((n.peer_count()? == 1).then_some(()))
        })
        .unwrap();
    }
    // No FIN, no RST: the link just goes quiet, as with a power loss or a cut cable.
    net.connect_halves(false).unwrap();
    let cut = Instant::now();
    for n in &nodes {
        eventually(
            Duration::from_secs(90),
            "the peer behind the cut dropped",
            || Ok((n.peer_count()? == 0).then_some(())),
        )
        .unwrap();
        assert!(
            n.log_text().contains("stopped answering pings"),
            "{} closed it for missed pings",
            n.name
        );
    }
    let dropped_after = cut.elapsed();
    assert!(
        dropped_after >= Duration::from_secs(20),
        "dropped after {dropped_after:?}: too soon for three missed pings"
    );
    eprintln!("peers dropped {dropped_after:?} after the cut");
    net.connect_halves(true).unwrap();
    for n in &nodes {
        eventually(
            Duration::from_secs(45),
            "redialed after the cut heals",
            || Ok((n.peer_count()? == 1).then_some(())),
        )
        .unwrap();
    }
}
