//! Load past what gossip can carry: a burst through `reading/pub-batch` overflows gossipsub's
//! per-peer queues (the node logs "gossip publish failed"); every acknowledged reading must
//! still reach every node (catch-up by CID), and live gossip must keep flowing afterwards.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sensornet_tests::{bin, cluster, eventually, http, KillOnDrop, LineReader};

#[test]
fn after_a_burst_that_overflows_gossip_every_reading_arrives_and_live_gossip_still_flows() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path(), 3).unwrap();
    let acked = AtomicU64::new(0);
    let until = Instant::now() + Duration::from_secs(5);
    std::thread::scope(|s| {
        for c in 0..16 {
            let (api, acked) = (nodes[0].api.clone(), &acked);
            s.spawn(move || {
                let client = http();
                let mut i = 0;
                while Instant::now() < until {
                    let body: String = (0..100)
                        .map(|k| {
                            format!(
                                "{{\"topic\":\"humidity\",\"value\":{},\"source\":\"burst{c}\"}}\n",
                                30 + (i + k) % 40
                            )
                        })
                        .collect();
                    let r = client
                        .post(format!("http://{api}/api/v0/reading/pub-batch"))
                        .body(body)
                        .send()
                        .unwrap();
                    assert!(r.status().is_success(), "{}", r.text().unwrap());
                    acked.fetch_add(100, Ordering::Relaxed);
                    i += 100;
                }
            });
        }
    });
    let acked = acked.load(Ordering::Relaxed);
    let overflowed = nodes[0].log_text().matches("gossip publish failed").count();
    println!("burst: {acked} readings acknowledged by n0; {overflowed} gossip publishes refused by full queues");
    assert_eq!(nodes[0].linked("humidity", "burst"), acked);
    for n in &nodes[1..] {
        let t0 = Instant::now();
        eventually(
            Duration::from_secs(60),
            &format!("{} has the burst", n.name),
            || Ok((n.linked("humidity", "burst") == acked).then_some(())),
        )
        .unwrap();
        println!("{} had all {acked} after {:?}", n.name, t0.elapsed());
    }

    // Live gossip, not catch-up: a reading published now reaches a subscriber on each other
    // node within 2 s, not backfilled.
    let mut subs: Vec<(KillOnDrop, LineReader)> = nodes[1..]
        .iter()
        .map(|n| {
            let mut child = KillOnDrop(
                Command::new(bin("node"))
                    .arg("--repo")
                    .arg(&n.repo)
                    .args(["sub", "temp", "--json", "-n", "1"])
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap(),
            );
            let lines = LineReader::stdout_of(format!("`node sub temp` on {}", n.name), &mut child);
            (child, lines)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    let t0 = Instant::now();
    let cid = nodes[0]
        .publish("temperature", 21.0, "after-burst")
        .unwrap();
    for (_, lines) in &mut subs {
        let line = lines.next_line(Duration::from_secs(10)).unwrap();
        let elapsed = t0.elapsed();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["cid"], cid.as_str());
        assert_eq!(v["backfilled"], false, "came by catch-up, not gossip: {v}");
        assert!(
            elapsed < Duration::from_secs(2),
            "live gossip took {elapsed:?}"
        );
    }
}
