//! `sensor`: one sensor as its own process, publishing to a node's API. Readings wait in a
//! bounded on-disk buffer while the node is unreachable and go out in order when it is back.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use sensornet_sensors::buffer::DiskQueue;
use sensornet_sensors::{open_source, SensorError, SensorKind, SourceSpec};
use serde_json::{json, Value};

/// Runs one sensor against a sensornet node's HTTP API.
#[derive(Parser, Debug)]
#[command(name = "sensor", version)]
struct Args {
    /// temperature, humidity or air-quality.
    #[arg(long)]
    kind: SensorKind,
    /// sim, sim:SEED, hwmon, hwmon:PATH or csv:PATH.
    #[arg(long, default_value = "sim")]
    source: String,
    /// Time between readings (CSV replays one row per tick).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Sensor id [default: HOSTNAME-KIND].
    #[arg(long)]
    id: Option<String>,
    /// Seed for the simulation (same seed, same readings).
    #[arg(long)]
    seed: Option<u64>,
    /// The node's API address.
    #[arg(long, env = "SENSORNET_API", default_value = "127.0.0.1:5001")]
    api: String,
    /// Bearer token, if the node's API requires one.
    #[arg(long, env = "SENSORNET_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// Directory of the on-disk buffer [default: ./sensor-buffer-ID].
    #[arg(long)]
    buffer_dir: Option<PathBuf>,
    /// Most readings buffered; the oldest are dropped (and counted) beyond it.
    #[arg(long, default_value_t = 100_000)]
    buffer_max: usize,
    /// Stop after this many readings were delivered.
    #[arg(long)]
    count: Option<u64>,
    /// Print nothing per reading.
    #[arg(long)]
    quiet: bool,
}

enum Delivery {
    Done(Value),
    Refused(String),
    Unreachable(String),
}

async fn deliver(http: &reqwest::Client, args: &Args, item: &Value) -> Delivery {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for k in ["topic", "value", "unit", "source", "time", "aqi"] {
        match &item[k] {
            Value::Null => {}
            Value::String(s) => {
                q.append_pair(k, s);
            }
            v => {
                q.append_pair(k, &v.to_string());
            }
        }
    }
    let url = format!("http://{}/api/v0/reading/pub?{}", args.api, q.finish());
    let mut req = http.post(url);
    if let Some(t) = &args.api_token {
        req = req.bearer_auth(t);
    }
    match req.send().await {
        Err(e) => Delivery::Unreachable(e.to_string()),
        Ok(r) if r.status().is_success() => Delivery::Done(r.json().await.unwrap_or(Value::Null)),
        // A full disk (507) or a stopping node (503) is temporary: keep the reading.
        Ok(r) if r.status().is_server_error() => {
            Delivery::Unreachable(format!("HTTP {}", r.status()))
        }
        Ok(r) => Delivery::Refused(r.text().await.unwrap_or_default()),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut spec: SourceSpec = args.source.parse()?;
    if let (SourceSpec::Simulated { seed }, Some(s)) = (&mut spec, args.seed) {
        *seed = s;
    }
    let mut source = open_source(args.kind, &spec)?;
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "sensor".into());
    let id = args
        .id
        .clone()
        .unwrap_or_else(|| format!("{host}-{}", args.kind.topic()));
    let dir = args
        .buffer_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("sensor-buffer-{id}")));
    let mut queue = DiskQueue::open(&dir, args.buffer_max)?;
    if !queue.is_empty() {
        eprintln!(
            "sensor {id}: {} buffered readings from an earlier run will be sent first",
            queue.len()
        );
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("HTTP client")?;
    let mut tick = tokio::time::interval(args.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut delivered: u64 = 0;
    let mut exhausted = false;
    let mut warned = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
        if !exhausted {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis() as u64;
            match source.sample(now) {
                Ok(Some(s)) => {
                    let item = json!({"topic": args.kind.topic(), "value": s.value, "unit": args.kind.unit(),
                                      "source": id, "time": s.time_ms, "aqi": s.aqi});
                    queue.push(&item.to_string())?;
                }
                Ok(None) => {}
                Err(SensorError::Exhausted) => exhausted = true,
                Err(e) => return Err(e.into()),
            }
        }
        while let Some(front) = queue.front() {
            let item: Value = serde_json::from_str(front).unwrap_or(Value::Null);
            match deliver(&http, &args, &item).await {
                Delivery::Done(ack) => {
                    queue.pop()?;
                    delivered += 1;
                    warned = false;
                    if !args.quiet {
                        println!(
                            "{} {} {} {} seq={} cid={}",
                            item["topic"].as_str().unwrap_or(""),
                            id,
                            item["value"],
                            args.kind.unit(),
                            ack["Seq"],
                            ack["Cid"].as_str().unwrap_or("")
                        );
                    }
                    if args.count.is_some_and(|c| delivered >= c) {
                        return Ok(());
                    }
                }
                Delivery::Refused(why) => {
                    eprintln!("sensor {id}: the node refused a reading, dropping it: {why}");
                    queue.pop()?;
                }
                Delivery::Unreachable(why) => {
                    if !warned {
                        eprintln!("sensor {id}: node at {} unreachable ({why}); buffering on disk in {} ({} waiting)", args.api, dir.display(), queue.len());
                        warned = true;
                    }
                    break;
                }
            }
        }
        if queue.dropped > 0 {
            eprintln!(
                "sensor {id}: buffer full, dropped {} oldest readings",
                queue.dropped
            );
            queue.dropped = 0;
        }
        if exhausted && queue.is_empty() {
            eprintln!("sensor {id}: replay finished");
            return Ok(());
        }
    }
    eprintln!(
        "sensor {id}: stopping; {} readings stay buffered in {}",
        queue.len(),
        dir.display()
    );
    Ok(())
}
