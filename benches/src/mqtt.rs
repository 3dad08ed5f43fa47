//! The MQTT rows, the same clients for sensornet and Mosquitto: QoS 1 throughput
//! (`mosquitto_pub -l -q 1` → `mosquitto_sub -q 1`: sent, received, lost, acknowledged/s, CPU µs
//! per message) and QoS 0 latency at a steady rate (an MQTT client on node A to one on node B;
//! client → broker → client for Mosquitto).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use sensornet_tests::{eventually, free_port};
use serde_json::{json, Value};

use crate::cpu::Meter;
use crate::{now_ns, percentiles, Proc};

/// A Mosquitto broker on a free loopback port, persistence on or off; returns it and its port.
pub fn broker(dir: &std::path::Path, persist: bool, name: &str) -> anyhow::Result<(Proc, u16)> {
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

fn split(a: &str) -> (String, String) {
    let (h, p) = a.rsplit_once(':').expect("HOST:PORT");
    (h.to_string(), p.to_string())
}

/// A `mosquitto_sub` whose lines a thread hands to `each` with their arrival time.
fn subscriber(
    at: &str,
    filter: &str,
    qos: u8,
    mut each: impl FnMut(&str, u64) + Send + 'static,
) -> anyhow::Result<(Proc, std::thread::JoinHandle<()>)> {
    let (h, p) = split(at);
    let mut sub = Proc(
        Command::new("mosquitto_sub")
            .args(["-h", &h, "-p", &p, "-t", filter, "-q", &qos.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .context("mosquitto_sub missing: scripts/install-bench-tools.sh")?,
    );
    let out = sub.0.stdout.take().context("stdout")?;
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            each(&line, now_ns());
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    Ok((sub, reader))
}

/// QoS 1 through the same clients: `count` messages into `pub_at` as fast as they are
/// acknowledged, received on `sub_at`; CPU of `pids` per message.
pub fn qos1(
    pub_at: &str,
    sub_at: &str,
    topic: &str,
    filter: &str,
    count: u64,
    pids: Vec<(String, u32)>,
) -> anyhow::Result<Value> {
    let received = Arc::new(AtomicU64::new(0));
    let r2 = received.clone();
    let (sub, reader) = subscriber(sub_at, filter, 1, move |_, _| {
        r2.fetch_add(1, Ordering::Relaxed);
    })?;
    let (ph, pp) = split(pub_at);
    let cpu = Meter::start(pids);
    let mut publ = Proc(
        Command::new("mosquitto_pub")
            .args(["-h", &ph, "-p", &pp, "-t", topic, "-q", "1", "-l"])
            .stdin(Stdio::piped())
            .spawn()?,
    );
    let mut stdin = publ.0.stdin.take().context("stdin")?;
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
        Duration::from_secs(30),
        "the subscriber's last message",
        || Ok((received.load(Ordering::Relaxed) >= sent).then_some(())),
    );
    let cpu = cpu.per_item(sent);
    std::thread::sleep(Duration::from_millis(300));
    drop(sub);
    let _ = reader.join();
    let got = received.load(Ordering::Relaxed);
    Ok(json!({
        "sent": sent, "received": got, "lost": sent.saturating_sub(got),
        "publisher_ok": status.is_some_and(|s| s.success()), "acked_per_s": sent as f64 / elapsed,
        "cpu": cpu,
    }))
}

/// QoS 0 latency through the same clients at `rate`/s for `secs` on `topic`: the publisher's stdin line
/// is stamped as it is written, the subscriber's line as it is read. `index_of` finds which
/// message a received line is (Mosquitto: the payload is its index; sensornet: the reading's
/// seq − 1, its source being new). `payload` is what line `i` carries.
pub fn latency(
    pub_at: &str,
    sub_at: &str,
    topic: &str,
    rate: u64,
    secs: u64,
    payload: fn(u64) -> String,
    index_of: fn(&str) -> Option<u64>,
) -> anyhow::Result<Value> {
    let got: Arc<Mutex<HashMap<u64, u64>>> = Default::default();
    let g2 = got.clone();
    let (sub, reader) = subscriber(sub_at, topic, 0, move |line, at| {
        if let Some(i) = index_of(line) {
            g2.lock().unwrap().entry(i).or_insert(at);
        }
    })?;
    let (ph, pp) = split(pub_at);
    let mut publ = Proc(
        Command::new("mosquitto_pub")
            .args(["-h", &ph, "-p", &pp, "-t", topic, "-q", "0", "-l"])
            .stdin(Stdio::piped())
            .spawn()?,
    );
    let mut stdin = publ.0.stdin.take().context("stdin")?;
    // Its connection is up before the clock starts.
    std::thread::sleep(Duration::from_millis(500));
    let step = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let start = Instant::now();
    let mut sent_at = Vec::new();
    while start.elapsed() < Duration::from_secs(secs) {
        let due = start + step * sent_at.len() as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let i = sent_at.len() as u64;
        sent_at.push(now_ns());
        writeln!(stdin, "{}", payload(i))?;
        stdin.flush()?;
    }
    drop(stdin);
    let _ = publ.0.wait();
    let sent = sent_at.len() as u64;
    let _ = eventually(Duration::from_secs(10), "the last message", || {
        Ok((got.lock().unwrap().len() as u64 >= sent).then_some(()))
    });
    drop(sub);
    let _ = reader.join();
    let got = got.lock().unwrap();
    let delays: Vec<f64> = sent_at
        .iter()
        .enumerate()
        .filter_map(|(i, t)| Some(got.get(&(i as u64))?.saturating_sub(*t) as f64 / 1e6))
        .collect();
    let received = delays.len() as u64;
    let mut v = percentiles(delays);
    v["sent"] = json!(sent);
    v["received"] = json!(received);
    v["lost"] = json!(sent.saturating_sub(received));
    Ok(v)
}

/// A sensornet reading line's index: its seq − 1.
pub fn sensornet_index(line: &str) -> Option<u64> {
    let v: Value = serde_json::from_str(line).ok()?;
    v["seq"].as_u64()?.checked_sub(1)
}

/// A Mosquitto line's index: the payload.
pub fn mosquitto_index(line: &str) -> Option<u64> {
    line.split_whitespace().next()?.parse().ok()
}

/// sensornet payloads: a plain temperature.
pub fn sensornet_payload(i: u64) -> String {
    format!("{}", 20 + i % 10)
}

/// Mosquitto payloads: the index, padded to a reading's JSON size as sensornet's subscriber
/// receives it.
pub fn mosquitto_payload(i: u64) -> String {
    format!("{i} {}", "x".repeat(200))
}
