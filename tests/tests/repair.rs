//! Holes are repaired later: a reading no peer could supply when its successor arrived is
//! linked past (a hole, counted and listed), and fetched as soon as a peer that holds it
//! connects, or by the periodic sweep from an already connected peer after a quiet spell.

use std::time::Duration;

use anyhow::{Context, Result};
use sensornet::reading::Reading;
use sensornet_tests::{eventually, http, Daemon, Opts};
use serde_json::Value;

const SOURCE: &str = "hole-src";

/// Five readings of one source, chained, oldest first: (CID, bytes).
fn chain() -> Vec<(String, Vec<u8>)> {
    let now = sensornet::clock::now_ms();
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let mut prev = None;
    for seq in 1..=5u64 {
        let r = Reading {
            joins: Vec::new(),
            aqi: None,
            seq,
            prev,
            time: now - 5_000 + seq * 1_000,
            unit: "°C".into(),
            topic: "temperature".into(),
            value: 20.0 + seq as f64,
            source: SOURCE.into(),
        };
        let (cid, bytes) = r.encode();
        prev = Some(cid);
        out.push((cid.to_string(), bytes));
    }
    out
}

/// `pubsub/pub` of raw DAG-CBOR bytes on `temperature`, as a Kubo client sends them.
fn pub_block(node: &Daemon, bytes: &[u8]) -> Result<()> {
    let topic = multibase::encode(multibase::Base::Base64Url, "temperature");
    let form = reqwest::blocking::multipart::Form::new().part(
        "file",
        reqwest::blocking::multipart::Part::bytes(bytes.to_vec()).file_name("reading"),
    );
    let r = http()
        .post(format!("http://{}/api/v0/pubsub/pub?arg={topic}", node.api))
        .multipart(form)
        .send()?;
    anyhow::ensure!(r.status().is_success(), "pubsub/pub: {}", r.text()?);
    Ok(())
}

/// The heads of the test source on a node, as (seq, holes), highest first; errors are
/// errors, not "no head".
fn source_heads(node: &Daemon) -> Result<Vec<(u64, u64)>> {
    let v = node.post_json("reading/heads?topic=temperature")?;
    let heads = v["Heads"].as_array().context("Heads is a list")?;
    let mut out: Vec<(u64, u64)> = heads
        .iter()
        .filter(|h| h["source"] == SOURCE)
        .map(|h| {
            (
                h["seq"].as_u64().unwrap_or(0),
                h["holes"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    out.sort_unstable_by(|a, b| b.cmp(a));
    Ok(out)
}

fn history_seqs(node: &Daemon) -> Result<Vec<u64>> {
    Ok(node
        .history("temperature")?
        .iter()
        .filter(|r| r["source"] == SOURCE)
        .filter_map(|r: &Value| r["seq"].as_u64())
        .collect())
}

fn holes_metric(node: &Daemon) -> Result<f64> {
    let (_, text) = node.get_metrics("/metrics")?;
    text.lines()
        .find_map(|l| l.strip_prefix("sensornet_catchup_holes "))
        .context("sensornet_catchup_holes is exported")?
        .trim()
        .parse::<f64>()
        .context("a number")
}

#[test]
fn a_hole_is_filled_when_a_holder_connects_and_by_the_sweep_after_quiet() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let chain = chain();
    let victim = Daemon::start(dir.path(), "victim", Opts::default())?;
    let peer = Daemon::start(
        dir.path(),
        "peer",
        Opts {
            bootstrap: vec![victim.swarm.clone()],
            ..Opts::default()
        },
    )?;
    victim.wait_ready(Duration::from_secs(30))?;
    peer.wait_ready(Duration::from_secs(30))?;
    eventually(Duration::from_secs(15), "victim and peer connected", || {
        Ok((victim.peer_count()? >= 1).then_some(()))
    })?;

    // Reading 3 never reaches either node: its successors are linked past it.
    for i in [0, 1, 3, 4] {
        pub_block(&victim, &chain[i].1)?;
    }
    for node in [&victim, &peer] {
        eventually(
            // Failed requests (not "I lack it") are retried for about a minute before a gap.
            Duration::from_secs(90),
            &format!("a hole on {}", node.name),
            || match source_heads(node)?.as_slice() {
                [(5, 1), ..] => Ok(Some(())),
                other => anyhow::bail!("heads and holes {other:?}"),
            },
        )?;
        assert_eq!(history_seqs(node)?, vec![1, 2, 4, 5], "{}", node.name);
        // Nothing known links to reading 2 while 3 is missing: it stays a head beside 5
        // until the hole is filled (docs/history-model.md).
        assert_eq!(source_heads(node)?, vec![(5, 1), (2, 1)], "{}", node.name);
    }
    assert_eq!(holes_metric(&victim)?, 1.0);
    let cli = victim.cli(&["heads", "temperature"])?;
    let heads = String::from_utf8_lossy(&cli.stdout);
    assert!(
        heads.contains(SOURCE) && heads.contains("1 missing"),
        "node heads lists the hole: {heads}"
    );

    // A node that holds the whole chain connects to the victim only.
    let holder = Daemon::start(dir.path(), "holder", Opts::default())?;
    holder.wait_ready(Duration::from_secs(30))?;
    for (_, bytes) in &chain {
        pub_block(&holder, bytes)?;
    }
    assert_eq!(history_seqs(&holder)?, vec![1, 2, 3, 4, 5]);
    let (st, body) = holder.post(&format!("swarm/connect?arg={}", victim.swarm))?;
    assert_eq!(st, 200, "{body}");

    eventually(
        Duration::from_secs(15),
        "the victim fills its hole",
        || match source_heads(&victim)?.as_slice() {
            [(5, 0)] => Ok(Some(())),
            other => anyhow::bail!("heads and holes {other:?}"),
        },
    )?;
    assert_eq!(history_seqs(&victim)?, vec![1, 2, 3, 4, 5]);
    assert!(sensornet_tests::block_matches(&victim, &chain[2].0)?);
    eventually(Duration::from_secs(10), "the hole gauge drops", || {
        Ok((holes_metric(&victim)? == 0.0).then_some(()))
    })?;

    // The peer never meets the holder: its periodic sweep asks the victim, which has it now.
    eventually(
        Duration::from_secs(45),
        "the peer's sweep fills its hole",
        || match source_heads(&peer)?.as_slice() {
            [(5, 0)] => Ok(Some(())),
            other => anyhow::bail!("heads and holes {other:?}"),
        },
    )?;
    assert_eq!(history_seqs(&peer)?, vec![1, 2, 3, 4, 5]);
    Ok(())
}
