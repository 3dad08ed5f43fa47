//! The node under the pod lifecycle, driven as the kubelet and the HPA would drive it (no
//! orchestrator in the product): replacement pods with the same or an empty volume, and a
//! CPU-driven scale-up computed with the HPA's rule from the rendered chart's HPA (target,
//! min, max) and CPU request, then scale-down with SIGTERM. Host processes; the same in real
//! containers, with the CPU read from their cgroups, is tests/tests/containers.rs.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sensornet_tests::containers::{render_chart, Hpa, PodSpec};
use sensornet_tests::{eventually, http, Daemon, Opts};

/// The HPA and the CPU request (what utilisation is relative to) of the chart as Helm renders
/// it with default values.
fn rendered_hpa() -> (Hpa, f64) {
    let docs = render_chart(&[]).unwrap();
    let spec = PodSpec::from_chart(&docs, &Default::default()).unwrap();
    (Hpa::from_chart(&docs).unwrap(), spec.cpu_request)
}

fn metric(node: &Daemon, name: &str) -> f64 {
    let (_, text) = node.get_metrics("/metrics").unwrap();
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

fn cids(node: &Daemon, topic: &str) -> HashSet<String> {
    node.history(topic)
        .unwrap()
        .iter()
        .map(|r| r["cid"].as_str().unwrap().to_string())
        .collect()
}

fn pod(dir: &std::path::Path, name: &str, boot: &str, sensor: Option<&str>) -> Daemon {
    let extra = match sensor {
        Some(k) => ["--sensor", k, "--sensor-interval", "50ms"]
            .map(String::from)
            .to_vec(),
        None => vec![],
    };
    Daemon::start(
        dir,
        name,
        Opts {
            bootstrap: vec![boot.to_string()],
            extra,
            ..Opts::default()
        },
    )
    .unwrap()
}

#[test]
fn replacement_pods_turn_ready_caught_up_with_same_or_empty_volume() {
    let dir = tempfile::tempdir().unwrap();
    let seed = Daemon::start(dir.path(), "sensornet-0", Opts::default()).unwrap();
    let boot = seed.swarm.clone();
    let _sensor = pod(dir.path(), "sensornet-1", &boot, Some("temperature"));
    let mut victim = pod(dir.path(), "sensornet-2", &boot, None);
    victim.wait_ready(Duration::from_secs(20)).unwrap();
    std::thread::sleep(Duration::from_secs(2));

    // Same volume: the StatefulSet's replacement pod mounts the old PVC.
    victim.kill9();
    std::thread::sleep(Duration::from_secs(2)); // readings keep flowing meanwhile
                                                // What the cluster held when the replacement started is what readiness promises.
    let before = cids(&seed, "temperature");
    let t0 = Instant::now();
    victim.spawn().unwrap();
    victim.wait_ready(Duration::from_secs(60)).unwrap();
    let same_volume = t0.elapsed();
    let have = cids(&victim, "temperature");
    let missing = before.difference(&have).count();
    assert_eq!(missing, 0, "ready but {missing} readings behind");

    // Empty volume: a new PVC, a new identity.
    victim.kill9();
    std::thread::sleep(Duration::from_secs(1));
    let before = cids(&seed, "temperature");
    let t0 = Instant::now();
    let fresh = pod(dir.path(), "sensornet-2-new", &boot, None);
    fresh.wait_ready(Duration::from_secs(60)).unwrap();
    let empty_volume = t0.elapsed();
    let have = cids(&fresh, "temperature");
    assert!(before.len() > 50);
    let missing = before.difference(&have).count();
    assert_eq!(missing, 0, "fresh pod ready {missing} readings behind");
    eventually(Duration::from_secs(10), "fully converged", || {
        let s = cids(&seed, "temperature");
        Ok(s.is_subset(&cids(&fresh, "temperature")).then_some(()))
    })
    .unwrap();
    println!(
        "healing: same volume start→ready {same_volume:?}, empty volume start→ready {empty_volume:?} ({} readings caught up)",
        have.len()
    );
}

#[test]
fn cpu_flood_scales_up_by_the_hpa_formula_and_back_down_without_loss() {
    let (hpa, cpu_request) = rendered_hpa();
    let dir = tempfile::tempdir().unwrap();
    let seed = Daemon::start(dir.path(), "sensornet-0", Opts::default()).unwrap();
    let boot = seed.swarm.clone();
    let mut pods = vec![
        seed,
        pod(dir.path(), "sensornet-1", &boot, None),
        pod(dir.path(), "sensornet-2", &boot, None),
    ];
    for p in &pods {
        p.wait_ready(Duration::from_secs(20)).unwrap();
    }

    // Flood pod 0 with durable publishes from 4 clients.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let api = pods[0].api.clone();
    let flood: Vec<_> = (0..4)
        .map(|w| {
            let (stop, acked, api) = (stop.clone(), acked.clone(), api.clone());
            std::thread::spawn(move || {
                let c = http();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let url = format!(
                        "http://{api}/api/v0/reading/pub?topic=humidity&value={}&source=flood{w}",
                        30 + i % 40
                    );
                    if let Ok(r) = c.post(url).send() {
                        if let Ok(v) = r.json::<serde_json::Value>() {
                            if let Some(cid) = v["Cid"].as_str() {
                                acked.lock().unwrap().push(cid.to_string());
                            }
                        }
                    }
                    i += 1;
                }
            })
        })
        .collect();

    // The HPA's view: CPU per pod over a window, as utilisation of the request.
    let window = Duration::from_secs(3);
    let before: Vec<f64> = pods
        .iter()
        .map(|p| metric(p, "process_cpu_seconds_total"))
        .collect();
    std::thread::sleep(window);
    let after: Vec<f64> = pods
        .iter()
        .map(|p| metric(p, "process_cpu_seconds_total"))
        .collect();
    let util: Vec<f64> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| (a - b) / window.as_secs_f64() / cpu_request * 100.0)
        .collect();
    let avg = util.iter().sum::<f64>() / util.len() as f64;
    assert!(
        util[0] > hpa.target,
        "flooded pod at {:.0}% of its CPU request",
        util[0]
    );
    // desiredReplicas = ceil(currentReplicas × currentUtilization / targetUtilization), clamped
    // to the rendered min/max, unchanged within the 0.1 tolerance.
    let desired = hpa.recommend(pods.len(), &util);
    println!(
        "HPA: utilisation per pod {util:.0?} %, average {avg:.0} % → desired {desired} replicas"
    );
    assert!(desired > pods.len());
    let t0 = Instant::now();
    for i in pods.len()..desired {
        pods.push(pod(dir.path(), &format!("sensornet-{i}"), &boot, None));
    }
    for p in &pods {
        p.wait_ready(Duration::from_secs(60)).unwrap();
        eventually(Duration::from_secs(30), "joined the mesh", || {
            Ok((p.peer_count()? >= 1).then_some(()))
        })
        .unwrap();
    }
    let scale_up = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    for f in flood {
        f.join().unwrap();
    }
    let acked: Vec<String> = acked.lock().unwrap().clone();
    assert!(acked.len() > 100);

    // Scale down: the StatefulSet removes the highest ordinals, with SIGTERM.
    while pods.len() > hpa.min {
        let mut p = pods.pop().unwrap();
        let st = p
            .stop_with(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(30))
            .unwrap();
        assert!(st.success(), "{} exited with {st:?}", p.name);
    }
    for p in &pods {
        eventually(
            Duration::from_secs(60),
            "every acknowledged reading",
            || {
                let have = cids(p, "humidity");
                Ok(acked.iter().all(|c| have.contains(c)).then_some(()))
            },
        )
        .unwrap();
    }
    println!("scaled 3→{desired} in {scale_up:?} (start→all ready), back to 3 with SIGTERM; {} readings, none lost", acked.len());
}
