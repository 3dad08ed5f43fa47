//! Hostile environments: a full disk, a damaged store file, the API off loopback (token), and a
//! private swarm (pnet) that refuses outsiders.

use std::process::Command;
use std::time::Duration;

use sensornet_tests::{bin, eventually, http, CommandExt, Daemon, Opts};

/// How long a command (a `node` CLI call, a daemon expected to refuse to start) may run.
const CMD_TIMEOUT: Duration = Duration::from_secs(60);

struct Tmpfs(std::path::PathBuf);
impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .output_within(CMD_TIMEOUT);
    }
}

#[test]
fn full_disk_refuses_with_507_keeps_serving_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3M", "tmpfs"])
        .arg(&mnt)
        .output_within(CMD_TIMEOUT)
        .unwrap()
        .status;
    assert!(st.success(), "mounting a small tmpfs needs root");
    let _guard = Tmpfs(mnt.clone());
    let node = Daemon::start(&mnt, "r", Opts::default()).unwrap();
    node.wait_ready(Duration::from_secs(10)).unwrap();
    let before = node.publish("temperature", 20.0, "s").unwrap();
    // Fill the file system, leaving the store no room.
    let filler = mnt.join("filler");
    let _ = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", filler.display()))
        .args(["bs=64k", "count=100"])
        .output_within(CMD_TIMEOUT);
    let mut refused = None;
    for i in 0..20_000 {
        let (st, body) = node
            .post(&format!(
                "reading/pub?topic=temperature&value=21&source=s{}",
                i % 10
            ))
            .unwrap();
        // While the store replaces a handle that saw the disk error, a request may hear it is
        // reopening (503, retry): the refusal that counts is the one that names the full disk.
        if st == 503 && body.contains("reopening") {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        if st != 200 {
            refused = Some((st, body));
            break;
        }
    }
    let (st, body) = refused.expect("a full disk refuses writes");
    assert_eq!(st, 507, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["Type"], "error");
    assert!(
        v["Message"]
            .as_str()
            .unwrap()
            .contains("disk holding the block store is full"),
        "{body}"
    );
    assert!(
        node.is_ready() && matches!(node.get_metrics("/healthz"), Ok((200, _))),
        "the node stays up"
    );
    assert_eq!(
        node.history("temperature").unwrap()[0]["cid"],
        before.as_str(),
        "reads still work"
    );
    std::fs::remove_file(&filler).unwrap();
    let after = eventually(Duration::from_secs(10), "publishing resumes", || {
        Ok(node.publish("temperature", 22.0, "after").ok())
    })
    .unwrap();
    assert!(sensornet_tests::block_matches(&node, &after).unwrap());
    assert!(sensornet_tests::block_matches(&node, &before).unwrap());
}

#[test]
fn damaged_store_is_reported_at_open_with_advice() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("r");
    let out = Command::new(bin("node"))
        .arg("--repo")
        .arg(&repo)
        .arg("init")
        .output_within(CMD_TIMEOUT)
        .unwrap();
    assert!(out.status.success());
    std::fs::write(repo.join("blocks.redb"), vec![0xa5u8; 65536]).unwrap();
    let out = Command::new(bin("node"))
        .arg("--repo")
        .arg(&repo)
        .args([
            "daemon",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--api-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
            "--mqtt-addr",
            "127.0.0.1:0",
        ])
        .output_within(CMD_TIMEOUT)
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("damaged") && err.contains("move it aside"),
        "{err}"
    );
}

#[test]
fn api_off_loopback_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin("node"))
        .arg("--repo")
        .arg(dir.path().join("x"))
        .args([
            "daemon",
            "--init",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--api-addr",
            "0.0.0.0:0",
            "--metrics-addr",
            "127.0.0.1:0",
            "--mqtt-addr",
            "127.0.0.1:0",
        ])
        .output_within(CMD_TIMEOUT)
        .unwrap();
    assert!(!out.status.success(), "refuses to expose an open API");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--api-token"));

    let node = Daemon::start(
        dir.path(),
        "t",
        Opts {
            api_addr: Some("0.0.0.0:0".into()),
            env: vec![("SENSORNET_API_TOKEN".into(), "s3cret".into())],
            ..Opts::default()
        },
    )
    .unwrap();
    let port = node.api.rsplit(':').next().unwrap();
    let url = format!("http://127.0.0.1:{port}/api/v0/id");
    let r = http().post(&url).send().unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(
        (v["Type"].as_str(), v["Code"].as_i64()),
        (Some("error"), Some(4))
    );
    assert_eq!(
        http()
            .post(&url)
            .bearer_auth("wrong")
            .send()
            .unwrap()
            .status()
            .as_u16(),
        403
    );
    assert_eq!(
        http()
            .post(&url)
            .bearer_auth("s3cret")
            .send()
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    // The CLI passes the token along.
    let out = Command::new(bin("node"))
        .args([
            "--api",
            &format!("127.0.0.1:{port}"),
            "--api-token",
            "s3cret",
            "pub",
            "temp",
            "19",
        ])
        .output_within(CMD_TIMEOUT)
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn private_swarm_admits_key_holders_only() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("swarm.key");
    let out = Command::new(bin("node"))
        .arg("swarm-key")
        .output_within(CMD_TIMEOUT)
        .unwrap();
    std::fs::write(&key, &out.stdout).unwrap();
    let with_key = |boot: Vec<String>| Opts {
        bootstrap: boot,
        env: vec![("SENSORNET_SWARM_KEY_FILE".into(), key.display().to_string())],
        ..Opts::default()
    };
    let a = Daemon::start(dir.path(), "a", with_key(vec![])).unwrap();
    assert!(a.log_text().contains("QUIC is off"), "{}", a.log_text());
    let b = Daemon::start(dir.path(), "b", with_key(vec![a.swarm.clone()])).unwrap();
    eventually(Duration::from_secs(10), "key holders connect", || {
        Ok((b.peer_count()? == 1).then_some(()))
    })
    .unwrap();
    let outsider = Daemon::start(
        dir.path(),
        "c",
        Opts {
            bootstrap: vec![a.swarm.clone()],
            ..Opts::default()
        },
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(outsider.peer_count().unwrap(), 0, "no key, no connection");
    assert_eq!(a.peer_count().unwrap(), 1);
    eventually(
        Duration::from_secs(10),
        "the refusal is logged with its likely cause",
        || {
            Ok(a.log_text()
                .contains("refused an incoming connection")
                .then_some(()))
        },
    )
    .unwrap();
    // Readings flow inside the private swarm.
    let cid = a.publish("humidity", 45.0, "p").unwrap();
    eventually(Duration::from_secs(10), "reading inside", || {
        Ok(b.history("humidity")?
            .iter()
            .any(|r| r["cid"] == cid.as_str())
            .then_some(()))
    })
    .unwrap();
}
