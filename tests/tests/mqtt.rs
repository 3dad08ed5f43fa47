//! The MQTT listener with real clients: mosquitto_pub/mosquitto_sub (3.1.1 and 5.0) and
//! paho-mqtt (5.0) against real `node` daemons. `scripts/install-mqtt-clients.sh` installs them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use sensornet_tests::{bin, eventually, CommandExt, Daemon, Opts};
use serde_json::Value;

const T: Duration = Duration::from_secs(30);
const CMD: Duration = Duration::from_secs(30);

fn host_port(d: &Daemon) -> (String, String) {
    let a = d.mqtt.clone().expect("the daemon has an MQTT listener");
    let (h, p) = a.rsplit_once(':').unwrap();
    (h.to_string(), p.to_string())
}

/// `mosquitto_pub` against `d`; returns (success, stderr).
fn mpub(d: &Daemon, args: &[&str]) -> (bool, String) {
    let (h, p) = host_port(d);
    let out = Command::new("mosquitto_pub")
        .args(["-h", &h, "-p", &p])
        .args(args)
        .output_within(CMD)
        .expect("mosquitto_pub runs (scripts/install-mqtt-clients.sh)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `mosquitto_sub` run to its end (`-C`/`-W`/`-E` bound it); returns (success, stdout lines).
fn msub(d: &Daemon, args: &[&str]) -> (bool, Vec<String>) {
    let (h, p) = host_port(d);
    let out = Command::new("mosquitto_sub")
        .args(["-h", &h, "-p", &p])
        .args(args)
        .output_within(CMD)
        .expect("mosquitto_sub runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect(),
    )
}

/// A `mosquitto_sub` left running; its lines arrive on a channel; killed when dropped.
struct Sub {
    child: Child,
    lines: Receiver<String>,
}

impl Sub {
    fn start(d: &Daemon, args: &[&str]) -> Sub {
        let (h, p) = host_port(d);
        let mut child = Command::new("mosquitto_sub")
            .args(["-h", &h, "-p", &p])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub runs");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Sub { child, lines }
    }

    fn take(&self, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => got.push(l),
                Err(_) => break,
            }
        }
        got
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `d` has at least `n` local subscribers of `topic` (an MQTT SUBSCRIBE joins the
/// bus before its SUBACK).
fn wait_subscribers(d: &Daemon, topic: &str, n: u64) {
    let needle = format!("sensornet_subscribers{{topic=\"{topic}\"}} ");
    eventually(T, &format!("{n} subscribers of {topic}"), || {
        let (_, body) = d.get_metrics("/metrics")?;
        let count = body
            .lines()
            .find_map(|l| l.strip_prefix(&needle))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        Ok((count as u64 >= n).then_some(()))
    })
    .unwrap();
}

fn metric(d: &Daemon, line_start: &str) -> f64 {
    let (_, body) = d.get_metrics("/metrics").unwrap();
    body.lines()
        .filter_map(|l| l.strip_prefix(line_start))
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .sum()
}

fn values(history: &[Value], source: &str) -> Vec<f64> {
    history
        .iter()
        .filter(|r| r["source"] == source)
        .map(|r| r["value"].as_f64().unwrap())
        .collect()
}

fn payload_values(lines: &[String]) -> Vec<f64> {
    lines
        .iter()
        .map(|l| {
            let json = l.split_once(' ').map_or(l.as_str(), |(_, p)| p);
            let v: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{l:?}: {e}"));
            v["value"].as_f64().unwrap()
        })
        .collect()
}

fn python() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/mqtt-venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run scripts/install-mqtt-clients.sh",
        p.display()
    );
    p
}

fn paho(args: &[&str]) -> Vec<String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("mqtt/paho_client.py");
    let out = Command::new(python())
        .arg(script)
        .args(args)
        .output_within(CMD)
        .unwrap();
    assert!(
        out.status.success(),
        "paho {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn a_publish_on_one_node_reaches_the_other_nodes_history_and_mqtt_subscribers() {
    let dir = tempfile::tempdir().unwrap();
    let a = Daemon::start(dir.path(), "a", Opts::default()).unwrap();
    let b = Daemon::start(
        dir.path(),
        "b",
        Opts {
            bootstrap: vec![a.swarm.clone()],
            ..Opts::default()
        },
    )
    .unwrap();
    a.wait_ready(T).unwrap();
    b.wait_ready(T).unwrap();
    // On B: every topic of source mq1 (wildcards), 3.1.1 and 5.0 subscribers.
    let sub4 = Sub::start(&b, &["-q", "1", "-v", "-t", "sensornet/+/mq1"]);
    let sub5 = Sub::start(&b, &["-V", "mqttv5", "-q", "1", "-t", "sensornet/#"]);
    wait_subscribers(&b, "temperature", 2);

    // Decimal on an alias topic, QoS 1: when mosquitto_pub returns, the PUBACK came, and the
    // reading is durable (in A's history) by then.
    let (ok, err) = mpub(&a, &["-q", "1", "-t", "sensornet/temp/mq1", "-m", "21.5"]);
    assert!(ok, "{err}");
    assert_eq!(
        values(&a.history("temperature").unwrap(), "mq1"),
        vec![21.5]
    );
    // JSON with unit and time, MQTT 5.
    let (ok, err) = mpub(
        &a,
        &[
            "-V",
            "mqttv5",
            "-q",
            "1",
            "-t",
            "sensornet/temperature/mq1",
            "-m",
            r#"{"value":22.5,"unit":"°C","time":1764000000000}"#,
        ],
    );
    assert!(ok, "{err}");
    let hist = a.history("temperature").unwrap();
    let json_reading = hist
        .iter()
        .find(|r| r["value"] == 22.5)
        .expect("JSON reading");
    assert_eq!(json_reading["time"], 1_764_000_000_000u64);
    // QoS 0 humidity through its alias.
    let (ok, err) = mpub(&a, &["-t", "sensornet/rh/mq1", "-m", "40"]);
    assert!(ok, "{err}");

    // B's history has them (gossip), and B's MQTT subscribers got them as reading/sub lines.
    eventually(T, "B's history", || {
        let t = values(&b.history("temperature")?, "mq1");
        let h = values(&b.history("humidity")?, "mq1");
        Ok((t.len() == 2 && h == vec![40.0]).then_some(()))
    })
    .unwrap();
    let got = sub4.take(3, T);
    assert_eq!(got.len(), 3, "3.1.1 subscriber on B: {got:?}");
    assert!(got[0].starts_with("sensornet/temperature/mq1 {"), "{got:?}");
    assert!(got.iter().any(|l| l.starts_with("sensornet/humidity/mq1 ")));
    let mut vals = payload_values(&got);
    vals.sort_by(f64::total_cmp);
    assert_eq!(vals, vec![21.5, 22.5, 40.0]);
    let line: Value = serde_json::from_str(got[0].split_once(' ').unwrap().1).unwrap();
    for k in [
        "cid",
        "topic",
        "source",
        "seq",
        "time",
        "unit",
        "prev",
        "backfilled",
    ] {
        assert!(line.get(k).is_some(), "{k} in {line}");
    }
    let got5 = sub5.take(3, T);
    assert_eq!(got5.len(), 3, "5.0 subscriber on B: {got5:?}");
    assert!(metric(&a, "sensornet_mqtt_messages_in_total") >= 3.0);
    assert!(metric(&b, "sensornet_mqtt_messages_out_total") >= 6.0);
}

#[test]
fn retained_latest_reading_and_bad_input_is_refused_while_the_node_serves() {
    let dir = tempfile::tempdir().unwrap();
    let a = Daemon::start(dir.path(), "a", Opts::default()).unwrap();
    a.wait_ready(T).unwrap();
    a.publish("temperature", 10.0, "r1").unwrap();
    a.publish("temperature", 11.0, "r1").unwrap();
    a.publish("temperature", 30.0, "r2").unwrap();
    // Retained: the latest reading of the source, flagged retained.
    let (ok, lines) = msub(
        &a,
        &[
            "-C",
            "1",
            "-W",
            "10",
            "-F",
            "%r %t %p",
            "-t",
            "sensornet/temperature/r1",
        ],
    );
    assert!(ok, "{lines:?}");
    assert_eq!(lines.len(), 1);
    let (flag, rest) = lines[0].split_once(' ').unwrap();
    assert_eq!(flag, "1", "retained flag: {lines:?}");
    assert_eq!(payload_values(&[rest.to_string()]), vec![11.0]);
    // A wildcard gets every source's latest.
    let (_, lines) = msub(
        &a,
        &["-C", "2", "-W", "10", "-t", "sensornet/temperature/+"],
    );
    let mut v = payload_values(&lines);
    v.sort_by(f64::total_cmp);
    assert_eq!(v, vec![11.0, 30.0]);

    // Out of range and not a number: refused as `node pub` refuses them.
    let (ok, _) = mpub(
        &a,
        &["-q", "1", "-t", "sensornet/temperature/bad", "-m", "500"],
    );
    assert!(
        !ok,
        "3.1.1: the connection closes, the message is not acknowledged"
    );
    let (ok, err) = mpub(
        &a,
        &[
            "-V",
            "mqttv5",
            "-q",
            "1",
            "-t",
            "sensornet/temperature/bad",
            "-m",
            "warm",
        ],
    );
    assert!(
        ok && err.contains("Payload format invalid") && err.contains("not a number"),
        "5.0: a PUBACK with reason 0x99 and a reason string: {err}"
    );
    let (ok, _) = mpub(&a, &["-t", "sensornet/temperature/bad", "-m", "1e9"]);
    assert!(ok, "QoS 0 has no answer: the message is dropped");
    // No source level.
    let (ok, _) = mpub(&a, &["-q", "1", "-t", "sensornet/temperature", "-m", "20"]);
    assert!(!ok);
    // Garbage bytes on the port: the connection is closed.
    let mut s = TcpStream::connect(a.mqtt.as_ref().unwrap()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut rest = Vec::new();
    let n = s.read_to_end(&mut rest).expect("closed, not timed out");
    assert_eq!(n, 0, "nothing is answered to garbage");
    // A 5.0 client sending a malformed packet gets DISCONNECT 0x81.
    let mut s = TcpStream::connect(a.mqtt.as_ref().unwrap()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&[
        0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 0, 0, 1, b'x',
    ])
    .unwrap();
    let mut connack = [0u8; 2];
    s.read_exact(&mut connack).unwrap();
    assert_eq!(connack[0], 0x20, "CONNACK");
    let mut body = vec![0u8; connack[1] as usize];
    s.read_exact(&mut body).unwrap();
    assert_eq!(body[1], 0, "accepted");
    s.write_all(&[0x36, 3, 0, 1, b't']).unwrap(); // PUBLISH with QoS 3
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert_eq!(rest.first(), Some(&0xE0), "DISCONNECT: {rest:?}");
    assert_eq!(
        rest.get(2),
        Some(&0x81),
        "reason: malformed packet: {rest:?}"
    );
    // Oversized payload (300 KiB > the 256 KiB packet limit): refused.
    let big = std::env::temp_dir().join(format!("mqtt-big-{}", std::process::id()));
    std::fs::write(&big, vec![b'7'; 300 * 1024]).unwrap();
    let (ok, _) = mpub(
        &a,
        &[
            "-q",
            "1",
            "-t",
            "sensornet/temperature/big",
            "-f",
            big.to_str().unwrap(),
        ],
    );
    std::fs::remove_file(&big).ok();
    assert!(!ok, "oversized publish acknowledged");
    // Too many subscriptions: 32 granted, the 33rd refused with 0x97 (quota exceeded).
    let out = paho(&["subs", &host_port(&a).0, &host_port(&a).1, "33"]);
    let codes: Value = serde_json::from_str(&out[0]).unwrap();
    let codes = codes["codes"].as_array().unwrap();
    assert_eq!(codes.len(), 33);
    assert!(codes[..32].iter().all(|c| c == 1), "{codes:?}");
    assert_eq!(codes[32], 0x97);

    // Nothing bad was stored, the good readings are all there, and the node still serves.
    let hist = a.history("temperature").unwrap();
    assert!(values(&hist, "bad").is_empty(), "{hist:?}");
    assert!(values(&hist, "big").is_empty());
    assert_eq!(values(&hist, "r1"), vec![10.0, 11.0]);
    let (ok, err) = mpub(
        &a,
        &["-q", "1", "-t", "sensornet/temperature/r1", "-m", "12"],
    );
    assert!(ok, "{err}");
    assert_eq!(
        values(&a.history("temperature").unwrap(), "r1"),
        vec![10.0, 11.0, 12.0]
    );
    for reason in [
        "bad-reading",
        "malformed",
        "too-large",
        "too-many-subscriptions",
    ] {
        assert!(
            metric(
                &a,
                &format!("sensornet_mqtt_rejects_total{{reason=\"{reason}\"}}")
            ) >= 1.0,
            "{reason} counted"
        );
    }
}

#[test]
fn a_persistent_session_gets_what_it_missed_in_order_also_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Daemon::start(dir.path(), "a", Opts::default()).unwrap();
    a.wait_ready(T).unwrap();
    let sub = [
        "-c",
        "-i",
        "sess-311",
        "-q",
        "1",
        "-t",
        "sensornet/temperature/p1",
    ];
    // Subscribe (persistent) and leave.
    let (ok, _) = msub(&a, &[&sub[..], &["-E"]].concat());
    assert!(ok);
    // MQTT 5 twin: session expiry 300 s.
    let (h, p) = host_port(&a);
    paho(&["subscribe", &h, &p, "sess-5", "sensornet/temperature/p1"]);
    for v in ["1", "2", "3"] {
        let (ok, err) = mpub(&a, &["-q", "1", "-t", "sensornet/temperature/p1", "-m", v]);
        assert!(ok, "{err}");
    }
    let (_, lines) = msub(&a, &[&sub[..], &["-C", "3", "-W", "15"]].concat());
    assert_eq!(
        payload_values(&lines),
        vec![1.0, 2.0, 3.0],
        "missed, in order"
    );
    let out = paho(&["collect", &h, &p, "sess-5", "3", "15"]);
    let info: Value = serde_json::from_str(&out[0]).unwrap();
    assert_eq!(info["present"], true, "{out:?}");
    assert_eq!(payload_values(&out[1..]), vec![1.0, 2.0, 3.0], "{out:?}");

    // Missed while away, then the node restarts: still served, from the store.
    for v in ["4", "5"] {
        let (ok, err) = mpub(&a, &["-q", "1", "-t", "sensornet/temperature/p1", "-m", v]);
        assert!(ok, "{err}");
    }
    // A client still connected when the node stops: the node stops cleanly, in time.
    let live = Sub::start(&a, &["-q", "1", "-t", "sensornet/humidity/+"]);
    wait_subscribers(&a, "humidity", 1);
    let t0 = Instant::now();
    let st = a
        .stop_with(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(15))
        .expect("stopped");
    assert!(
        st.success(),
        "clean exit with an MQTT client connected: {st}"
    );
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    drop(live);
    a.spawn().unwrap();
    a.wait_ready(T).unwrap();
    let (_, lines) = msub(&a, &[&sub[..], &["-C", "2", "-W", "15"]].concat());
    assert_eq!(payload_values(&lines), vec![4.0, 5.0], "after the restart");
    let (h, p) = host_port(&a);
    let out = paho(&["collect", &h, &p, "sess-5", "2", "15"]);
    assert_eq!(payload_values(&out[1..]), vec![4.0, 5.0], "{out:?}");
    // Nothing more is owed: a short wait gets nothing new.
    let (_, lines) = msub(&a, &[&sub[..], &["-W", "2"]].concat());
    assert!(lines.is_empty(), "already delivered: {lines:?}");
}

#[test]
fn credentials_addresses_and_off() {
    let dir = tempfile::tempdir().unwrap();
    // With a token the password is required.
    let a = Daemon::start(
        dir.path(),
        "a",
        Opts {
            extra: vec!["--api-token".into(), "s3cret".into()],
            ..Opts::default()
        },
    );
    let a = match a {
        Ok(a) => a,
        Err(e) => panic!("{e:#}"),
    };
    let (ok, err) = mpub(&a, &["-t", "chat", "-m", "hi", "-u", "x", "-P", "wrong"]);
    assert!(!ok && err.to_lowercase().contains("password"), "{err}");
    let (ok, _) = mpub(&a, &["-t", "chat", "-m", "hi"]);
    assert!(!ok, "no password");
    let (ok, err) = mpub(&a, &["-t", "chat", "-m", "hi", "-u", "x", "-P", "s3cret"]);
    assert!(ok, "{err}");
    assert!(
        metric(
            &a,
            "sensornet_mqtt_rejects_total{reason=\"bad-credentials\"}"
        ) >= 2.0
    );

    // The port taken: a clear error naming the flag.
    let taken = a.mqtt.clone().unwrap();
    let err = Daemon::start(
        dir.path(),
        "busy",
        Opts {
            extra: vec!["--mqtt-addr".into(), taken],
            ..Opts::default()
        },
    )
    .err()
    .expect("a busy MQTT port fails the start");
    assert!(format!("{err:#}").contains("--mqtt-addr"), "{err:#}");

    // Off loopback without a token: refused as the API is.
    let out = Command::new(bin("node"))
        .arg("--repo")
        .arg(dir.path().join("open"))
        .args([
            "daemon",
            "--init",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--api-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
            "--mqtt-addr",
            "0.0.0.0:0",
        ])
        .output_within(CMD)
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("MQTT") && err.contains("--api-token"), "{err}");

    // Off: no listener, nothing in daemon.json, the node works.
    let off = Daemon::start(
        dir.path(),
        "off",
        Opts {
            extra: vec!["--mqtt-addr".into(), "off".into()],
            ..Opts::default()
        },
    )
    .unwrap();
    assert!(off.mqtt.is_none());
    let info = std::fs::read_to_string(off.daemon_file()).unwrap();
    assert!(!info.contains("MQTT"), "{info}");
    off.wait_ready(T).unwrap();
    off.publish("temperature", 20.0, "x").unwrap();
}

#[test]
fn keepalive_closes_a_silent_client_and_a_lost_client_leaves_its_will() {
    let dir = tempfile::tempdir().unwrap();
    let a = Daemon::start(dir.path(), "a", Opts::default()).unwrap();
    a.wait_ready(T).unwrap();
    // 3.1.1 CONNECT, keepalive 1 s, then silence: closed after 1.5 s.
    let mut s = TcpStream::connect(a.mqtt.as_ref().unwrap()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&[
        0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 1, 0, 1, b'k',
    ])
    .unwrap();
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0], "accepted");
    let t0 = Instant::now();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)
        .expect("closed before the read timeout");
    let silent = t0.elapsed();
    assert!(
        silent >= Duration::from_millis(1200) && silent < Duration::from_secs(5),
        "closed after {silent:?}"
    );
    assert!(metric(&a, "sensornet_mqtt_rejects_total{reason=\"keepalive\"}") >= 1.0);

    // A clean DISCONNECT: no will.
    let (ok, _) = msub(
        &a,
        &[
            "-E",
            "-t",
            "chat",
            "--will-topic",
            "sensornet/temperature/will-clean",
            "--will-payload",
            "6",
        ],
    );
    assert!(ok);
    // A lost connection (the client is killed): its will becomes a reading.
    let sub = Sub::start(
        &a,
        &[
            "-t",
            "chat",
            "--will-topic",
            "sensornet/temperature/will-lost",
            "--will-payload",
            "5",
            "--will-qos",
            "1",
        ],
    );
    eventually(T, "the client connected", || {
        Ok((metric(&a, "sensornet_mqtt_connections ") >= 1.0).then_some(()))
    })
    .unwrap();
    drop(sub);
    eventually(T, "the will as a reading", || {
        Ok((values(&a.history("temperature")?, "will-lost") == vec![5.0]).then_some(()))
    })
    .unwrap();
    assert!(values(&a.history("temperature").unwrap(), "will-clean").is_empty());
    eventually(T, "connections closed", || {
        Ok((metric(&a, "sensornet_mqtt_connections ") == 0.0).then_some(()))
    })
    .unwrap();
}

#[test]
fn other_topics_are_raw_pubsub_topics() {
    let dir = tempfile::tempdir().unwrap();
    let a = Daemon::start(dir.path(), "a", Opts::default()).unwrap();
    a.wait_ready(T).unwrap();
    let sub = Sub::start(&a, &["-q", "1", "-v", "-t", "chat/room1"]);
    wait_subscribers(&a, "chat/room1", 1);
    let (ok, err) = mpub(&a, &["-q", "1", "-t", "chat/room1", "-m", "hello"]);
    assert!(ok, "{err}");
    assert_eq!(sub.take(1, T), vec!["chat/room1 hello".to_string()]);
    // A raw topic is no reading: nothing in the store's sensor topics.
    assert!(a.history("chat/room1").unwrap().is_empty());
    // Wildcards over raw topics are refused in SUBACK.
    msub(&a, &["-W", "2", "-t", "chat/+"]);
    assert!(metric(&a, "sensornet_mqtt_rejects_total{reason=\"bad-filter\"}") >= 1.0);
}

/// A source's values in seq order on `d`.
fn in_seq_order(d: &Daemon, topic: &str, source: &str) -> Vec<(u64, f64)> {
    let mut h: Vec<(u64, f64)> = d
        .history(topic)
        .unwrap()
        .iter()
        .filter(|r| r["source"] == source)
        .map(|r| (r["seq"].as_u64().unwrap(), r["value"].as_f64().unwrap()))
        .collect();
    h.sort_by_key(|(seq, _)| *seq);
    h
}

#[test]
fn publishes_in_flight_together_share_a_commit_and_are_acknowledged_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let a = Daemon::start(dir.path(), "a", Opts::default()).unwrap();
    a.wait_ready(T).unwrap();
    let (h, p) = host_port(&a);

    // mosquitto_pub -l (3.1.1) keeps several QoS 1 publishes in flight: 3,000 lines, every
    // one stored in order, in far fewer commits than readings.
    let before = metric(&a, "sensornet_store_commits_total");
    let mut child = Command::new("mosquitto_pub")
        .args([
            "-h",
            &h,
            "-p",
            &p,
            "-q",
            "1",
            "-l",
            "-t",
            "sensornet/temp/pipe4",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let sent: Vec<f64> = (0..3000).map(|i| f64::from(i % 100) / 4.0).collect();
    for v in &sent {
        writeln!(stdin, "{v}").unwrap();
    }
    drop(stdin);
    let out =
        sensornet_tests::wait_output(&mut child, Duration::from_secs(120), "mosquitto_pub -l")
            .unwrap();
    assert!(out.status.success(), "mosquitto_pub -l failed");
    let commits = metric(&a, "sensornet_store_commits_total") - before;
    let got = in_seq_order(&a, "temperature", "pipe4");
    assert_eq!(got.len(), 3000, "every acknowledged reading stored");
    assert!(got.iter().map(|(s, _)| *s).eq(1..=3000), "seqs 1..=3000");
    assert_eq!(
        got.iter().map(|(_, v)| *v).collect::<Vec<_>>(),
        sent,
        "in the order sent"
    );
    println!("3,000 QoS 1 publishes from one mosquitto_pub -l: {commits} commits");
    assert!(
        commits <= 1000.0,
        "{commits} commits for 3,000 pipelined readings: in-flight publishes are not folded"
    );

    // MQTT 5 (paho): the node announces its Receive Maximum; 200 publishes in flight, one of
    // them not a number: that one gets 0x99 at its place, the other 199 succeed, in order.
    let out = paho(&["pipeline", &h, &p, "sensornet/humidity/pipe5", "200", "57"]);
    let v: Value = serde_json::from_str(out.last().expect("paho output")).unwrap();
    assert_eq!(v["receive_maximum"], 256, "{v}");
    let codes: Vec<u64> = v["codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().expect("every publish acknowledged"))
        .collect();
    assert_eq!(codes.len(), 200);
    for (i, c) in codes.iter().enumerate() {
        let want = if i == 57 { 0x99 } else { 0 };
        assert_eq!(*c, want, "PUBACK of publish {i}: {codes:?}");
    }
    let got = in_seq_order(&a, "humidity", "pipe5");
    let want: Vec<f64> = (0..200)
        .filter(|i| *i != 57)
        .map(|i| f64::from(10 + i % 50))
        .collect();
    assert_eq!(got.iter().map(|(_, v)| *v).collect::<Vec<_>>(), want);
    assert!(got.iter().map(|(s, _)| *s).eq(1..=199));
    assert!(metric(&a, "sensornet_mqtt_rejects_total{reason=\"bad-reading\"}") >= 1.0);
}
