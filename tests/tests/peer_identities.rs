//! Peers with every identity go-libp2p peers carry (Ed25519, RSA 2048, secp256k1, ECDSA P-256)
//! join a real daemon over TCP+Noise+Yamux, and their signed gossip passes strict validation:
//! a reading one of them publishes reaches `node sub` and the store with the same CID, and a
//! reading the daemon publishes reaches the peer.

use std::io::{BufRead, BufReader, Lines};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sensornet_tests::{bin, eventually, Daemon, Opts};
use serde_json::Value;

/// Lines of a child's stdout, read on a thread so every wait can time out.
fn line_channel(lines: Lines<BufReader<ChildStdout>>) -> mpsc::Receiver<Value> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in lines.map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&l) {
                if tx.send(v).is_err() {
                    break;
                }
            }
        }
    });
    rx
}

/// The next line that has `key`, within `timeout`.
fn next_with(rx: &mpsc::Receiver<Value>, key: &str, timeout: Duration) -> Value {
    let end = Instant::now() + timeout;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(v) if v.get(key).is_some() => return v,
            Ok(_) => {}
            Err(_) => panic!("no line with {key:?} within {timeout:?}"),
        }
    }
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn peers_with_rsa_secp256k1_ecdsa_and_ed25519_identities_exchange_signed_readings() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), "n0", Opts::default()).unwrap();
    daemon.wait_ready(Duration::from_secs(30)).unwrap();
    for kind in ["ed25519", "rsa", "secp256k1", "ecdsa"] {
        let t0 = Instant::now();
        let mut sub = Command::new(bin("node"))
            .arg("--repo")
            .arg(&daemon.repo)
            .args(["sub", "temperature", "--json", "-n", "1"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let sub_rx = line_channel(BufReader::new(sub.stdout.take().unwrap()).lines());
        let _sub = Killed(sub);
        std::thread::sleep(Duration::from_millis(700)); // the subscription opens

        let mut child = Command::new(bin("keyed-peer"))
            .args([kind, daemon.swarm.as_str(), "60"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let peer_rx = line_channel(BufReader::new(child.stdout.take().unwrap()).lines());
        let _peer = Killed(child);
        let peer_id = next_with(&peer_rx, "peer", Duration::from_secs(20))["peer"]
            .as_str()
            .unwrap()
            .to_string();
        let published = next_with(&peer_rx, "published", Duration::from_secs(20));
        let cid = published["published"].as_str().unwrap().to_string();

        // The peer's signed reading passed strict validation: `node sub` prints it, same CID.
        let got = next_with(&sub_rx, "cid", Duration::from_secs(10));
        assert_eq!(got["cid"], cid.as_str(), "{kind}: node sub line {got}");
        assert_eq!(got["source"], format!("keyed-peer-{kind}").as_str());
        eventually(Duration::from_secs(10), "reading in history", || {
            Ok(daemon
                .history("temperature")?
                .iter()
                .any(|r| r["cid"] == cid.as_str())
                .then_some(()))
        })
        .unwrap();
        // The daemon knows the peer by the id its key type gives.
        let peers = daemon.post_json("swarm/peers").unwrap();
        assert!(
            peers["Peers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["Peer"] == peer_id.as_str()),
            "{kind}: {peer_id} not among {peers}"
        );

        // And the other way: a reading published on the daemon reaches the peer.
        let back = daemon
            .publish("temperature", 19.25, &format!("daemon-to-{kind}"))
            .unwrap();
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let v = next_with(
                &peer_rx,
                "received",
                end.saturating_duration_since(Instant::now()),
            );
            if v["received"] == back.as_str() {
                assert_eq!(v["from"], daemon.peer_id.as_str());
                break;
            }
        }
        println!(
            "{kind}: peer {peer_id} joined, reading both ways in {:?}",
            t0.elapsed()
        );
    }
}
