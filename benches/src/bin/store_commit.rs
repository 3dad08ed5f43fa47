//! What one durable store commit costs per reading as the store grows: the block store alone,
//! no network, no HTTP. Each node of a cluster pays this for every reading it holds, so it
//! bounds the durable throughput of a machine that runs several nodes.
//!
//! `store-commit [--up-to N] [--secs S]` fills a store in a temporary directory under the current one
//! with 500 sources' readings and prints, at each size, the time per commit and per reading
//! for batches of 10 (an MQTT client's in-flight window) and 250 (a `reading/pub-batch`).

use std::collections::HashMap;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use sensornet::reading::Reading;
use sensornet::store::{Batch, Store};

/// Times durable block-store commits of 10 and 250 readings as the store grows (no network).
#[derive(Parser)]
struct Args {
    /// Largest store size measured, in readings.
    #[arg(long, default_value_t = 200_000)]
    up_to: u64,
    /// Seconds of commits timed per batch size and store size; the checkpoints (a durable
    /// redb commit each second) that fall in them count.
    #[arg(long, default_value_t = 3.0)]
    secs: f64,
}

/// Makes batches of readings of 500 sources, each chained to its source's previous one.
#[derive(Default)]
struct Readings {
    made: u64,
    last: HashMap<u64, (u64, cid::Cid)>,
}

impl Readings {
    fn batch(&mut self, n: usize) -> Batch {
        let mut b = Batch::default();
        for _ in 0..n {
            self.made += 1;
            let source = self.made % 500;
            let prev = self.last.get(&source).copied();
            let r = Reading {
                aqi: None,
                seq: prev.map_or(1, |(seq, _)| seq + 1),
                prev: prev.map(|(_, cid)| cid),
                joins: Vec::new(),
                time: 1_700_000_000_000 + self.made,
                unit: "°C".into(),
                topic: "temperature".into(),
                value: 20.0 + (self.made % 100) as f64 / 10.0,
                source: format!("bench-{source}"),
            };
            let (cid, bytes) = r.encode();
            self.last.insert(source, (r.seq, cid));
            b.linked.push((cid, r, bytes.len() as u64));
            b.blocks.push((cid, bytes));
        }
        b
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir_in(".").context("a temporary directory here")?;
    let path = dir.path().join("blocks.redb");
    let mut store = Store::open(&path)?;
    let mut readings = Readings::default();
    println!("| readings in the store | batch | ms per commit | µs per reading |");
    println!("|---:|---:|---:|---:|");
    let mut size = 0;
    while size <= args.up_to {
        while readings.made < size {
            let left = (size - readings.made).min(2_000) as usize;
            store.write(readings.batch(left)).await?;
        }
        // The fill's own checkpoint is not the timed commits' cost: a clean stop takes it.
        store.shutdown();
        drop(store);
        store = Store::open(&path)?;
        for batch in [10usize, 250] {
            let t = Instant::now();
            let mut commits = 0u32;
            while t.elapsed().as_secs_f64() < args.secs {
                store.write(readings.batch(batch)).await?;
                commits += 1;
            }
            let per = t.elapsed().as_secs_f64() / f64::from(commits);
            println!(
                "| {size} | {batch} | {:.2} | {:.1} |",
                per * 1e3,
                per * 1e6 / batch as f64
            );
        }
        size = if size == 0 { 50_000 } else { size * 2 };
    }
    store.shutdown();
    Ok(())
}
