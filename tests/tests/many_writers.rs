//! Several writers for one source (a load-balanced Service, both sides of a partition): the
//! source's history is a Merkle clock, so concurrent readings are siblings, every node ends
//! with all of them and the same heads, and the next reading joins them into one head.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result};
use sensornet_tests::{eventually, Daemon, Opts};
use serde_json::Value;

const SOURCE: &str = "shared-sensor";

/// One reading as the test looks at it: (seq, cid, prev, joins).
type Row = (u64, String, String, Vec<String>);

/// The source's readings on a node.
fn readings(node: &Daemon) -> Result<Vec<Row>> {
    Ok(node
        .history("temperature")?
        .iter()
        .filter(|r| r["source"] == SOURCE)
        .map(|r: &Value| {
            (
                r["seq"].as_u64().unwrap_or(0),
                r["cid"].as_str().unwrap_or("").to_string(),
                r["prev"].as_str().unwrap_or("").to_string(),
                r["joins"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|c| c.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
            )
        })
        .collect())
}

/// The source's heads on a node, as a sorted list of CIDs; an API error is an error.
fn heads(node: &Daemon) -> Result<Vec<String>> {
    let v = node.post_json("reading/heads?topic=temperature")?;
    let mut out: Vec<String> = v["Heads"]
        .as_array()
        .context("Heads is a list")?
        .iter()
        .filter(|h| h["source"] == SOURCE)
        .filter_map(|h| h["cid"].as_str().map(str::to_string))
        .collect();
    out.sort();
    Ok(out)
}

#[test]
fn concurrent_writers_of_one_source_converge_on_one_history() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let a = Daemon::start(dir.path(), "a", Opts::default())?;
    let b = Daemon::start(dir.path(), "b", Opts::default())?;
    a.wait_ready(Duration::from_secs(30))?;
    b.wait_ready(Duration::from_secs(30))?;

    // Apart (a partition, or two pods before they met), both write for one source.
    let mut acked = BTreeSet::new();
    for v in [20.0, 20.5, 21.0] {
        acked.insert(a.publish("temperature", v, SOURCE)?);
    }
    for v in [30.0, 30.5] {
        acked.insert(b.publish("temperature", v, SOURCE)?);
    }
    assert_eq!(acked.len(), 5, "five distinct readings acknowledged");

    let (st, body) = b.post(&format!("swarm/connect?arg={}", a.swarm))?;
    assert_eq!(st, 200, "{body}");
    // Each fetches the other's branch: both hold all five, and the same two heads.
    for node in [&a, &b] {
        eventually(
            Duration::from_secs(30),
            &format!("{} has both branches", node.name),
            || {
                let have: BTreeSet<String> = readings(node)?.into_iter().map(|r| r.1).collect();
                Ok((have == acked && heads(node)?.len() == 2).then_some(()))
            },
        )?;
    }
    assert_eq!(heads(&a)?, heads(&b)?, "the same heads on both nodes");
    let before = heads(&a)?;
    // Siblings share heights: 1 and 2 exist twice, each with its own CID.
    let seqs: Vec<u64> = readings(&a)?.iter().map(|r| r.0).collect();
    assert_eq!(seqs.iter().filter(|s| **s == 1).count(), 2, "{seqs:?}");

    // The next reading follows the greatest head and joins the other: one head again.
    let joined = a.publish("temperature", 22.0, SOURCE)?;
    acked.insert(joined.clone());
    for node in [&a, &b] {
        eventually(
            Duration::from_secs(15),
            &format!("{} joined", node.name),
            || Ok((heads(node)? == vec![joined.clone()]).then_some(())),
        )?;
    }
    let all = readings(&b)?;
    let top = all
        .iter()
        .find(|r| r.1 == joined)
        .context("the joining reading")?;
    assert_eq!(top.0, 4, "one above the highest parent (a's third reading)");
    let mut parents: Vec<String> = top.3.clone();
    parents.push(top.2.clone());
    parents.sort();
    assert_eq!(parents, before, "it links to both former heads");
    let have: BTreeSet<String> = all.iter().map(|r| r.1.clone()).collect();
    assert_eq!(have, acked, "nothing acknowledged is missing or extra on b");
    let have: BTreeSet<String> = readings(&a)?.into_iter().map(|r| r.1).collect();
    assert_eq!(have, acked, "nothing acknowledged is missing or extra on a");
    // dag/get walks the join like any link.
    let (st, v) = b.post(&format!("dag/get?arg={joined}/joins/0"))?;
    assert_eq!(st, 200, "{v}");
    assert!(before.iter().any(|h| v.contains(h.as_str())), "{v}");
    Ok(())
}
