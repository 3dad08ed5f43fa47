//! The embedded default (`scripts/demo.sh`): a local cluster on loopback, the three sensors
//! spread over the nodes, and one subscriber node printing every reading live with its
//! pub→deliver delay, plus a summary every few seconds. Ctrl-C stops every process.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use sensornet_tests::{eventually, Daemon, Opts};
use serde_json::Value;

/// Starts a local sensornet cluster and prints readings as one node receives them.
#[derive(Parser, Debug)]
#[command(name = "sensornet-demo")]
struct Args {
    /// Number of nodes (node 0 subscribes; the sensors run on the others).
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Stop after this long (e.g. 30s); runs until Ctrl-C when absent.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Seed of the simulated sensors (same seed, same readings).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Time between readings of each sensor.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Seconds between summary lines.
    #[arg(long, default_value_t = 5)]
    summary_every: u64,
}

#[derive(Default)]
struct Stats {
    per_topic: BTreeMap<String, u64>,
    last_seq: HashMap<String, u64>,
    missing: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.nodes >= 2,
        "--nodes must be at least 2 (a subscriber and a sensor node)"
    );
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))?;
    }
    let dir = tempfile::Builder::new()
        .prefix("sensornet-demo-")
        .tempdir()?;
    println!("repos in {}", dir.path().display());
    let kinds = ["temperature", "humidity", "air-quality"];
    let mut nodes: Vec<Daemon> = Vec::new();
    let first = Daemon::start(dir.path(), "node0", Opts::default())?;
    println!(
        "started node0 (pid {}) subscriber, API {}, metrics {}",
        first.pid().unwrap_or(0),
        first.api,
        first.metrics
    );
    let boot = first.swarm.clone();
    nodes.push(first);
    for i in 1..args.nodes {
        // Sensors on nodes 1..=3; more nodes carry more sensors in turn.
        let kind = kinds[(i - 1) % 3];
        let extra = vec![
            "--sensor".into(),
            kind.into(),
            "--sensor-interval".into(),
            humantime::format_duration(args.interval).to_string(),
            "--sensor-id".into(),
            format!("node{i}-{kind}"),
            "--seed".into(),
            (args.seed * 1000 + i as u64).to_string(),
        ];
        let d = Daemon::start(
            dir.path(),
            &format!("node{i}"),
            Opts {
                bootstrap: vec![boot.clone()],
                extra,
                ..Opts::default()
            },
        )?;
        println!(
            "started node{i} (pid {}) with the {kind} sensor",
            d.pid().unwrap_or(0)
        );
        nodes.push(d);
    }
    for n in &nodes {
        n.wait_ready(Duration::from_secs(30))?;
    }
    let sub = &nodes[0];
    eventually(Duration::from_secs(20), "peers", || {
        Ok((sub.peer_count()? + 1 >= args.nodes.min(2)).then_some(()))
    })?;
    println!("dashboard of node0: http://{}/webui", sub.api);
    println!(
        "cluster ready: {} nodes; readings as node0 receives them (Ctrl-C stops):",
        args.nodes
    );

    let stats = Arc::new(Mutex::new(Stats::default()));
    // Whether readings may still be printed: a reader prints while holding this lock, and the
    // main thread clears it (under the lock) before saying it is stopping, so nothing is
    // printed after that line.
    let printing = Arc::new(Mutex::new(true));
    for topic in kinds {
        let (api, stats, printing) = (sub.api.clone(), stats.clone(), printing.clone());
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::builder()
                .timeout(None)
                .build()
                .expect("http client");
            let Ok(resp) = client
                .post(format!("http://{api}/api/v0/reading/sub?topic={topic}"))
                .send()
            else {
                return;
            };
            for line in BufReader::new(resp).lines().map_while(Result::ok) {
                let printing = printing.lock().unwrap();
                if !*printing {
                    return;
                }
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if v.get("cid").is_none() {
                    continue;
                }
                let src = v["source"].as_str().unwrap_or("").to_string();
                let seq = v["seq"].as_u64().unwrap_or(0);
                {
                    let mut s = stats.lock().unwrap();
                    *s.per_topic.entry(topic.to_string()).or_default() += 1;
                    if let Some(last) = s.last_seq.insert(src.clone(), seq) {
                        s.missing += seq.saturating_sub(last + 1);
                    }
                }
                let aqi = v
                    .get("aqi")
                    .map(|a| format!("  AQI {a}"))
                    .unwrap_or_default();
                println!(
                    "{:<12} {:<24} {:>8.2} {:<6}{}  pub→deliver {} ms",
                    topic,
                    src,
                    v["value"].as_f64().unwrap_or(f64::NAN),
                    v["unit"].as_str().unwrap_or(""),
                    aqi,
                    v["delay_ms"]
                );
            }
        });
    }

    let start = Instant::now();
    let mut last_summary = Instant::now();
    let mut last_counts: BTreeMap<String, u64> = BTreeMap::new();
    while !stop.load(Ordering::SeqCst) && args.duration.is_none_or(|d| start.elapsed() < d) {
        std::thread::sleep(Duration::from_millis(100));
        if last_summary.elapsed() >= Duration::from_secs(args.summary_every) {
            let secs = last_summary.elapsed().as_secs_f64();
            last_summary = Instant::now();
            let s = stats.lock().unwrap();
            let rates: Vec<String> = kinds
                .iter()
                .map(|t| {
                    let now = s.per_topic.get(*t).copied().unwrap_or(0);
                    let before = last_counts.insert(t.to_string(), now).unwrap_or(0);
                    format!("{t} {:.1}/s", (now - before) as f64 / secs)
                })
                .collect();
            let missing = if s.missing == 0 {
                "nothing missing".to_string()
            } else {
                format!("{} missing", s.missing)
            };
            println!(
                "-- {} | node0 peers {} | {}",
                rates.join(", "),
                sub.peer_count().unwrap_or(0),
                missing
            );
        }
    }
    {
        let mut printing = printing.lock().unwrap();
        *printing = false;
        println!("stopping {} nodes...", nodes.len());
    }
    for n in nodes.iter_mut() {
        n.stop_with(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10));
    }
    println!("all nodes stopped");
    Ok(())
}
