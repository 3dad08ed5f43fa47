//! The pod as Kubernetes runs it, in real containers: the image built here from scratch
//! (`scripts/build-image.sh`, checked against the Dockerfile), the rendered chart's pod run by
//! rootful podman with runc (securityContext and resources enforced by the kernel: uid,
//! read-only root, no capabilities, seccomp, CFS quota, memory limit), three pods finding each
//! other through the headless Service's DNS name, healing after SIGKILL, and the HPA's CPU rule
//! fed from each container's cgroup. See docs/kubernetes.md ("Real containers").

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use sensornet_tests::containers::{render_chart, root, unique, Cluster, Hpa, Image, Pod, PodSpec};
use sensornet_tests::{eventually, http};
use serde_json::Value;

/// The Dockerfile's runtime settings (last stage), instructions joined across `\` lines.
#[derive(Debug, Default)]
struct DockerfileConfig {
    user: String,
    env: Vec<String>,
    expose: Vec<String>,
    volumes: Vec<String>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
}

fn parse_dockerfile(text: &str) -> Result<DockerfileConfig> {
    let joined = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("\\\n", " ");
    let mut c = DockerfileConfig::default();
    for line in joined.lines() {
        let Some((op, rest)) = line.trim().split_once(char::is_whitespace) else {
            continue;
        };
        let rest = rest.trim();
        let json = || -> Result<Vec<String>> { Ok(serde_json::from_str(rest)?) };
        match op {
            // A new stage resets what the image carries.
            "FROM" => c = DockerfileConfig::default(),
            "USER" => c.user = rest.to_string(),
            "ENV" => c.env.extend(rest.split_whitespace().map(String::from)),
            "EXPOSE" => c.expose.extend(rest.split_whitespace().map(String::from)),
            "VOLUME" => c.volumes = json()?,
            "ENTRYPOINT" => c.entrypoint = json()?,
            "CMD" => c.cmd = json()?,
            _ => {}
        }
    }
    Ok(c)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    k.sort();
    k
}

#[test]
fn image_built_here_agrees_with_the_dockerfile() -> Result<()> {
    let t0 = Instant::now();
    let image = Image::build()?;
    // With the other tests of this file running, this includes waiting for their build.
    let built_in = t0.elapsed();
    let docker = parse_dockerfile(&std::fs::read_to_string(root().join("Dockerfile"))?)?;
    let inspect = image.inspect()?;
    let cfg = &inspect["Config"];

    assert_eq!(cfg["User"], docker.user.as_str(), "USER");
    assert_eq!(strings(&cfg["Entrypoint"]), docker.entrypoint, "ENTRYPOINT");
    assert_eq!(strings(&cfg["Cmd"]), docker.cmd, "CMD");
    assert_eq!(keys(&cfg["Volumes"]), docker.volumes, "VOLUME");
    let mut expose = docker.expose.clone();
    expose.sort();
    assert_eq!(keys(&cfg["ExposedPorts"]), expose, "EXPOSE");
    // distroless sets PATH as well; beyond it, exactly the Dockerfile's ENV.
    let mut env: Vec<String> = strings(&cfg["Env"])
        .into_iter()
        .filter(|e| !e.starts_with("PATH="))
        .collect();
    env.sort();
    let mut want = docker.env.clone();
    want.sort();
    assert_eq!(env, want, "ENV");

    // The three binaries the Dockerfile copies run in the image (no shell, no libc beyond
    // what was copied in).
    for bin in ["node", "sensornet", "sensor"] {
        let out = sensornet_tests::containers::podman_out(&[
            "run",
            "--rm",
            "--entrypoint",
            bin,
            &image.name,
            "--help",
        ])
        .with_context(|| format!("{bin} --help in the image"))?;
        ensure!(out.contains("Usage"), "{bin} --help: {out}");
    }
    let size = inspect["Size"].as_u64().context("Size")?;
    println!(
        "image {}: {:.0} MB, built in {built_in:.1?} ({})",
        image.name,
        size as f64 / 1e6,
        image.build_log.trim()
    );
    Ok(())
}

/// The rendered chart with the API exposed (token from a Secret the test provides), so the
/// test reaches each pod's API over the container network as a client in the cluster would.
fn chart(extra: &[&str]) -> Result<(Vec<Value>, PodSpec)> {
    let secret = "sensornet-test-token";
    let token = unique("token");
    let mut sets = vec![
        "api.expose=true".to_string(),
        format!("api.existingSecret={secret}"),
    ];
    sets.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = sets.iter().map(String::as_str).collect();
    let docs = render_chart(&refs)?;
    let secrets = BTreeMap::from([(format!("{secret}/token"), token)]);
    let spec = PodSpec::from_chart(&docs, &secrets)?;
    Ok((docs, spec))
}

fn peer_id(p: &Pod) -> Result<String> {
    let v: Value = p.post("id")?.json()?;
    Ok(v["ID"].as_str().context("ID")?.to_string())
}

fn peer_count(p: &Pod) -> Result<usize> {
    let v: Value = p.post("swarm/peers")?.json()?;
    Ok(v["Peers"].as_array().map(Vec::len).unwrap_or(0))
}

/// Waits until `pod` holds every reading of `topic` in `want`; how long that took.
fn caught_up(pod: &Pod, topic: &str, want: &HashSet<String>) -> Result<Duration> {
    let t0 = Instant::now();
    eventually(Duration::from_secs(60), "caught up", || {
        Ok(want.is_subset(&pod.cids(topic)?).then_some(()))
    })?;
    Ok(t0.elapsed())
}

fn assert_limits_enforced(pod: &Pod) -> Result<()> {
    let s = &pod.spec;
    let cpu = pod.cgroup_cpu_limit()?;
    ensure!(
        (cpu - s.cpu_limit).abs() < 1e-6,
        "CFS quota {cpu} cores, chart limit {}",
        s.cpu_limit
    );
    if pod.cgroup_dir("cpu")?.join("cpu.shares").exists() {
        let shares = pod.cgroup_cpu_shares()?;
        let want = ((s.cpu_request * 1024.0).round() as u64).max(2);
        ensure!(
            shares == want,
            "cpu.shares {shares}, request {} → {want}",
            s.cpu_request
        );
    }
    let mem = pod.cgroup_memory_limit()?;
    ensure!(
        mem == s.memory_limit,
        "memory limit {mem}, chart {}",
        s.memory_limit
    );
    let uid = pod.proc_status("Uid")?;
    let want_uid = s.user.split(':').next().unwrap_or_default();
    ensure!(
        uid.split_whitespace().all(|u| u == want_uid),
        "Uid {uid}, chart {want_uid}"
    );
    for caps in ["CapEff", "CapPrm", "CapBnd"] {
        let v = pod.proc_status(caps)?;
        ensure!(v.chars().all(|c| c == '0'), "{caps} {v}");
    }
    ensure!(pod.proc_status("NoNewPrivs")? == "1", "no_new_privs");
    // 2 = filter mode: podman's default seccomp profile (RuntimeDefault).
    ensure!(pod.proc_status("Seccomp")? == "2", "seccomp");
    // The read-only root: `node init` of a repo outside the volume must fail with EROFS.
    let out = pod.exec(&["node", "init", "--repo", "/probe"])?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        !out.status.success() && text.contains("Read-only file system"),
        "write outside the volume: {text}"
    );
    Ok(())
}

#[test]
fn three_pods_with_the_charts_limits_find_each_other_and_heal() -> Result<()> {
    let image = Image::build()?;
    let (_, spec) = chart(&[])?;
    let cluster = Cluster::new(spec, image)?;
    let t0 = Instant::now();
    let mut pods: Vec<Pod> = (0..3).map(|i| cluster.start(i)).collect::<Result<_>>()?;
    for p in &pods {
        p.wait_ready(Duration::from_secs(60))?;
        ensure!(p.probe(&p.spec.liveness_path), "{} not live", p.name);
    }
    println!("3 pods: start→all ready {:.1?}", t0.elapsed());

    for p in &pods {
        assert_limits_enforced(p).with_context(|| p.name.clone())?;
    }
    println!(
        "limits enforced: CFS quota {} cores, cpu.shares for {} cores, memory {} MiB, uid {}, read-only root, no caps, seccomp filter",
        cluster.spec.cpu_limit,
        cluster.spec.cpu_request,
        cluster.spec.memory_limit >> 20,
        cluster.spec.user
    );

    // Found each other through the Service name (bootstrap env), and a reading crosses.
    for p in &pods {
        eventually(Duration::from_secs(30), "a peer through DNS", || {
            Ok((peer_count(p)? >= 1).then_some(()))
        })?;
    }
    let cid = pods[0].publish("containers", 21.5, "test")?;
    for p in &pods[1..] {
        eventually(Duration::from_secs(30), "the reading on every pod", || {
            Ok(p.cids("containers")?.contains(&cid).then_some(()))
        })
        .with_context(|| p.name.clone())?;
    }

    // Each pod's own sensor (the chart's default: simulated temperature, 1 s) keeps readings
    // flowing. The victim is caught up first, so what it misses is what it was down for.
    let topic = cluster
        .spec
        .env("SENSORNET_SENSOR")
        .context("the chart runs a sensor")?
        .to_string();
    let all = pods[0].cids(&topic)?;
    caught_up(&pods[2], &topic, &all)?;
    let id_before = peer_id(&pods[2])?;

    // Case 1: SIGKILL; the restart policy restarts the container on the same volume.
    let killed = pods[2].sigkill()?;
    let t_kill = Instant::now();
    eventually(Duration::from_secs(30), "restarted by the policy", || {
        let pid = pods[2].pid()?;
        Ok((pid != 0 && pid != killed).then_some(()))
    })?;
    let restart_delay = t_kill.elapsed();
    let t_start = Instant::now();
    let before = pods[0].cids(&topic)?;
    pods[2].wait_ready(Duration::from_secs(60))?;
    let ready = t_start.elapsed();
    caught_up(&pods[2], &topic, &before)?;
    let same_volume = t_start.elapsed();
    ensure!(pods[2].restart_count()? >= 1, "restart count");
    ensure!(
        peer_id(&pods[2])? == id_before,
        "same volume, same identity"
    );
    println!(
        "SIGKILL → restarted by policy in {restart_delay:.1?}; same volume: start→ready {ready:.1?}, →caught up ({} readings) {same_volume:.1?}",
        before.len()
    );

    // Case 2: the pod and its PVC are gone; a new container of the same name, empty volume.
    let _ = pods[2].sigkill();
    let t_start = Instant::now();
    cluster.replace(&mut pods[2], true)?;
    let before = pods[0].cids(&topic)?;
    pods[2].wait_ready(Duration::from_secs(60))?;
    let ready = t_start.elapsed();
    caught_up(&pods[2], &topic, &before)?;
    let new_volume = t_start.elapsed();
    ensure!(peer_id(&pods[2])? != id_before, "new volume, new identity");
    println!(
        "new volume: start→ready {ready:.1?}, →caught up ({} readings) {new_volume:.1?}",
        before.len()
    );
    ensure!(
        same_volume < Duration::from_secs(30) && new_volume < Duration::from_secs(30),
        "replacement beyond go-ipfs pods' 30 s window"
    );
    pods.clear();
    Ok(())
}

/// What the flood clients reach: each ready pod's API, like a Service's endpoints.
type Endpoints = Arc<Mutex<Vec<(String, String, String)>>>;

fn endpoint(p: &Pod) -> (String, String, String) {
    (
        p.name.clone(),
        p.api(""),
        p.spec
            .env("SENSORNET_API_TOKEN")
            .unwrap_or_default()
            .to_string(),
    )
}

/// Durable publishes spread over the endpoints, each worker at most one per `pace` (a fixed
/// offered load: unbounded, it saturates this 2-core machine and new pods never catch up);
/// every acknowledged CID with the pod that took it.
fn flood(
    workers: usize,
    pace: Duration,
    endpoints: Endpoints,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(String, String)>>>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..workers)
        .map(|w| {
            let (endpoints, stop, acked) = (endpoints.clone(), stop.clone(), acked.clone());
            std::thread::spawn(move || {
                let c = http();
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(pace);
                    let eps = endpoints.lock().unwrap().clone();
                    let Some((name, base, token)) = eps.get((i + w) % eps.len().max(1)).cloned()
                    else {
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    };
                    let url = format!(
                        "{base}reading/pub?topic=humidity&value={}&source=flood{w}",
                        30 + i % 40
                    );
                    if let Ok(r) = c.post(url).bearer_auth(&token).send() {
                        if let Ok(v) = r.json::<Value>() {
                            if let Some(cid) = v["Cid"].as_str() {
                                acked.lock().unwrap().push((cid.to_string(), name));
                            }
                        }
                    }
                    i += 1;
                }
            })
        })
        .collect()
}

/// Stops the flood when the test ends, also by an error.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// One row of the HPA trace.
struct TraceRow {
    at: Duration,
    utilization: Vec<f64>,
    current: usize,
    desired: usize,
}

/// Each pod's CPU use over the last period as a percentage of its request (metrics-server's
/// view: the cgroup's usage counter, differenced).
fn utilization(pods: &[Pod], last: &mut BTreeMap<String, (Instant, Duration)>) -> Result<Vec<f64>> {
    let mut out = Vec::new();
    for p in pods {
        let now = Instant::now();
        let used = p.cpu_usage()?;
        if let Some((t, u)) = last.insert(p.name.clone(), (now, used)) {
            let cores = used.saturating_sub(u).as_secs_f64() / now.duration_since(t).as_secs_f64();
            out.push(cores / p.spec.cpu_request * 100.0);
        }
    }
    Ok(out)
}

#[test]
fn hpa_from_cgroup_cpu_scales_up_under_a_flood_and_down_after_the_window() -> Result<()> {
    let image = Image::build()?;
    // The chart's HPA, its window shortened from the default 300 s so the test ends, and its
    // ceiling from 10 to 5 (SENSORNET_HPA_MAX) so the pods fit on 2 shared cores. The test
    // reads both back from the rendered manifest, like every other HPA field.
    let window = std::env::var("SENSORNET_HPA_WINDOW").unwrap_or_else(|_| "30".into());
    let max = std::env::var("SENSORNET_HPA_MAX").unwrap_or_else(|_| "5".into());
    let (docs, spec) = chart(&[
        &format!("autoscaling.scaleDownStabilizationWindowSeconds={window}"),
        &format!("autoscaling.maxReplicas={max}"),
    ])?;
    let mut hpa = Hpa::from_chart(&docs)?;
    println!(
        "HPA from the rendered manifest: min {}, max {}, target {} % of {} cores, tolerance {}, scale-down window {:?}",
        hpa.min, hpa.max, hpa.target, spec.cpu_request, hpa.tolerance, hpa.scale_down_window
    );
    let cluster = Cluster::new(spec, image)?;
    let mut pods: Vec<Pod> = (0..hpa.min)
        .map(|i| cluster.start(i))
        .collect::<Result<_>>()?;
    for p in &pods {
        p.wait_ready(Duration::from_secs(60))?;
    }
    let endpoints: Endpoints = Arc::new(Mutex::new(pods.iter().map(endpoint).collect()));
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_drop = StopOnDrop(stop.clone());
    let acked = Arc::new(Mutex::new(Vec::new()));
    // 4 × 40/s = 160 durable publishes/s offered.
    let mut flooders = flood(
        4,
        Duration::from_millis(25),
        endpoints.clone(),
        stop.clone(),
        acked.clone(),
    );

    // The controller loop (kube-controller-manager syncs every 15 s; 5 s here).
    let period = Duration::from_secs(5);
    let t0 = Instant::now();
    let mut last = BTreeMap::new();
    let mut trace = Vec::new();
    let mut peak = pods.len();
    let mut flood_stopped_at = None;
    let mut at_max_since = None;
    let mut joined = Vec::new();
    utilization(&pods, &mut last)?;
    let deadline = t0 + Duration::from_secs(120) + hpa.scale_down_window * 2;
    loop {
        std::thread::sleep(period);
        let util = utilization(&pods, &mut last)?;
        let current = pods.len();
        let desired = hpa.decide(Instant::now(), current, &util);
        trace.push(TraceRow {
            at: t0.elapsed(),
            utilization: util,
            current,
            desired,
        });
        let row = trace.last().unwrap();
        println!(
            "t={:>5.1}s replicas {} cpu/request {:?} % → desired {}",
            row.at.as_secs_f64(),
            row.current,
            row.utilization
                .iter()
                .map(|u| u.round() as i64)
                .collect::<Vec<_>>(),
            row.desired
        );
        // Scale up: new ordinals, each on a new volume, started together (podManagementPolicy
        // Parallel); each joins the endpoints once ready and caught up.
        let acked_before: HashSet<String> = acked
            .lock()
            .unwrap()
            .iter()
            .map(|(c, _)| c.clone())
            .collect();
        let t = Instant::now();
        let new: Vec<Pod> = (pods.len()..desired)
            .map(|i| cluster.start(i))
            .collect::<Result<_>>()?;
        for p in new {
            p.wait_ready(Duration::from_secs(120))?;
            let ready = t.elapsed();
            ensure!(peer_count(&p)? >= 1, "{} joined no peer", p.name);
            caught_up(&p, "humidity", &acked_before)?;
            joined.push((p.name.clone(), ready, t.elapsed(), acked_before.len()));
            endpoints.lock().unwrap().push(endpoint(&p));
            pods.push(p);
        }
        peak = peak.max(pods.len());
        // The flood runs on for 20 s at the HPA's ceiling (so the pods the scale-down will
        // remove take readings of their own), or ends after 90 s.
        if pods.len() == hpa.max && at_max_since.is_none() {
            at_max_since = Some(Instant::now());
        }
        let held = at_max_since.is_some_and(|t| t.elapsed() >= Duration::from_secs(20));
        if flood_stopped_at.is_none() && (held || t0.elapsed() > Duration::from_secs(90)) {
            stop.store(true, Ordering::Relaxed);
            for f in flooders.drain(..) {
                f.join().expect("flood thread");
            }
            flood_stopped_at = Some(t0.elapsed());
            println!("flood stopped at {:.1?}", t0.elapsed());
        }
        // Scale down: the StatefulSet removes the highest ordinals, with SIGTERM.
        while pods.len() > desired {
            let p = pods.pop().unwrap();
            endpoints.lock().unwrap().retain(|(n, _, _)| *n != p.name);
            let code = p.terminate()?;
            ensure!(code == 0, "{} exited {code} on SIGTERM", p.name);
            last.remove(&p.name);
        }
        if flood_stopped_at.is_some() && pods.len() == hpa.min {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "HPA did not settle back to {}",
            hpa.min
        );
    }
    let stopped = flood_stopped_at.context("flood stopped")?;
    let scaled_down = trace.last().unwrap().at;
    ensure!(peak > hpa.min, "the flood never scaled up");
    ensure!(
        scaled_down >= stopped + hpa.scale_down_window.saturating_sub(period),
        "scaled down {scaled_down:?}, before the window after the flood stopped at {stopped:?}"
    );
    for (name, ready, caught, had) in &joined {
        println!("{name} joined: start→ready {ready:.1?}, caught up ({had} readings) {caught:.1?}");
    }

    // Nothing acknowledged is lost, including what only the removed pods had taken.
    let acked = acked.lock().unwrap().clone();
    let removed: HashSet<String> = (hpa.min..peak)
        .map(|i| format!("{}-{}-{i}", cluster.prefix, cluster.spec.statefulset))
        .collect();
    let by_removed = acked.iter().filter(|(_, n)| removed.contains(n)).count();
    ensure!(by_removed > 0, "the removed pods took no readings");
    let want: HashSet<String> = acked.iter().map(|(c, _)| c.clone()).collect();
    for p in &pods {
        caught_up(p, "humidity", &want).with_context(|| format!("{} missing readings", p.name))?;
        let found = p.cids("humidity")?.intersection(&want).count();
        println!(
            "{}: {found} of {} acknowledged readings found ({by_removed} acknowledged by the removed pods)",
            p.name,
            want.len()
        );
    }
    Ok(())
}
