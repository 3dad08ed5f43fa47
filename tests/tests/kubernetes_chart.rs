//! The Helm chart, the plain manifests and the Dockerfile, checked with real tools (Helm,
//! Kubernetes' own schemas via kubernetes-validate, hadolint) and against a running node.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sensornet_tests::containers::{k8s_tools, render_chart_yaml, root, yaml_docs};
use sensornet_tests::{bin, eventually, http, wait_output, CommandExt, KillOnDrop};
use serde_json::Value;

fn tools() -> PathBuf {
    k8s_tools().unwrap()
}

fn run(cmd: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut child = Command::new(cmd)
        .args(args)
        .current_dir(root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", cmd.display()));
    if let Some(s) = stdin {
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), s.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    let out = wait_output(
        &mut child,
        Duration::from_secs(300),
        &format!("{} {}", cmd.display(), args.join(" ")),
    )
    .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn render(sets: &[&str]) -> String {
    render_chart_yaml(sets).unwrap()
}

/// Every document of a rendered YAML stream, as JSON.
fn docs(yaml: &str) -> Vec<Value> {
    yaml_docs(yaml).unwrap()
}

fn kind<'a>(docs: &'a [Value], k: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == k).collect()
}

const VALUE_SETS: [&[&str]; 8] = [
    &[],
    &[
        "sensor.kinds={temperature,humidity}",
        "sensor.source=sim:7",
        "sensor.interval=5s",
    ],
    &["api.expose=true", "api.existingSecret=my-token"],
    &["swarmKey.existingSecret=sensornet-swarm-key"],
    &[
        "serviceMonitor.enabled=true",
        "prometheusRule.enabled=true",
        "dashboard.enabled=false",
    ],
    &[
        "autoscaling.enabled=false",
        "replicaCount=5",
        "podDisruptionBudget.enabled=false",
        "sensor.kinds=null",
    ],
    &["mqtt.expose=true"],
    &["mqtt.enabled=false"],
];

#[test]
fn chart_lints_renders_and_validates_for_every_value_set() {
    let t = tools();
    for sets in VALUE_SETS {
        let mut args = vec!["lint", "--strict", "charts/sensornet"];
        for s in sets {
            args.push("--set");
            args.push(s);
        }
        let (ok, out, err) = run(&t.join("bin/helm"), &args, None);
        assert!(ok, "helm lint {sets:?}: {out}{err}");
        let yaml = render(sets);
        // ServiceMonitor and PrometheusRule are CRDs, not in Kubernetes' schemas: validated by
        // promtool (the rules) and by shape below.
        let core: Vec<Value> = docs(&yaml)
            .into_iter()
            .filter(|d| d["apiVersion"] != "monitoring.coreos.com/v1")
            .collect();
        let core_yaml: String = core.iter().map(|d| format!("---\n{}\n", d)).collect();
        let (ok, out, err) = run(
            &t.join("venv/bin/kubernetes-validate"),
            &["--strict", "-k", "1.34.0", "-"],
            Some(&core_yaml),
        );
        assert!(ok, "kubernetes-validate {sets:?}: {out}{err}");

        let all = docs(&yaml);
        let sts = kind(&all, "StatefulSet");
        assert_eq!(sts.len(), 1);
        let pod = &sts[0]["spec"]["template"]["spec"];
        let containers = pod["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 1, "exactly one container per pod");
        assert!(pod.get("initContainers").is_none());
        let c = &containers[0];
        assert!(
            c["resources"]["requests"]["cpu"].is_string(),
            "CPU request (the HPA needs it)"
        );
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        let metrics_port = c["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "metrics")
            .unwrap()["containerPort"]
            .as_u64()
            .unwrap();
        for (probe, path) in [
            ("startupProbe", "/healthz"),
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
        ] {
            assert_eq!(c[probe]["httpGet"]["path"], path, "{probe}");
            assert_eq!(c[probe]["httpGet"]["port"], "metrics", "{probe}");
        }
        let env = |name: &str| {
            c["env"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == name)
                .map(|e| e["value"].clone())
        };
        assert!(env("SENSORNET_METRICS_ADDR")
            .unwrap()
            .as_str()
            .unwrap()
            .ends_with(&format!(":{metrics_port}")));
        assert!(env("SENSORNET_BOOTSTRAP")
            .unwrap()
            .as_str()
            .unwrap()
            .starts_with("/dns4/sensornet-headless.default.svc"));
        let sensors = if sets.contains(&"sensor.kinds=null") {
            None
        } else if sets.contains(&"sensor.kinds={temperature,humidity}") {
            Some("temperature,humidity")
        } else {
            Some("temperature")
        };
        assert_eq!(
            env("SENSORNET_SENSOR").as_ref().and_then(Value::as_str),
            sensors,
            "{sets:?}: the in-pod sensors"
        );
        let hpa = kind(&all, "HorizontalPodAutoscaler");
        if sets.contains(&"autoscaling.enabled=false") {
            assert!(hpa.is_empty());
            assert_eq!(sts[0]["spec"]["replicas"], 5);
        } else {
            assert_eq!(hpa.len(), 1);
            assert_eq!(hpa[0]["spec"]["scaleTargetRef"]["kind"], "StatefulSet");
            assert_eq!(
                hpa[0]["spec"]["scaleTargetRef"]["name"],
                sts[0]["metadata"]["name"]
            );
            assert_eq!(hpa[0]["spec"]["metrics"][0]["resource"]["name"], "cpu");
            assert_eq!(
                hpa[0]["spec"]["metrics"][0]["resource"]["target"]["type"],
                "Utilization"
            );
        }
        let headless = kind(&all, "Service")
            .into_iter()
            .find(|s| s["spec"]["clusterIP"] == "None")
            .expect("headless service");
        assert_eq!(headless["spec"]["publishNotReadyAddresses"], true);
        if sets.contains(&"prometheusRule.enabled=true") {
            let rule = kind(&all, "PrometheusRule");
            assert_eq!(
                rule[0]["spec"]["groups"][0]["rules"]
                    .as_array()
                    .unwrap()
                    .len(),
                7
            );
            assert_eq!(
                kind(&all, "ServiceMonitor")[0]["spec"]["endpoints"][0]["port"],
                "metrics"
            );
        }
        if sets.contains(&"swarmKey.existingSecret=sensornet-swarm-key") {
            assert!(
                env("SENSORNET_LISTEN")
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .find("quic")
                    .is_none(),
                "no QUIC with pnet"
            );
        }
        let mqtt_addr = env("SENSORNET_MQTT_ADDR").unwrap();
        let service_ports: Vec<Value> = kind(&all, "Service")
            .into_iter()
            .filter(|s| s["spec"]["clusterIP"] != "None")
            .flat_map(|s| s["spec"]["ports"].as_array().unwrap().clone())
            .collect();
        let mqtt_on_service = service_ports.iter().any(|p| p["name"] == "mqtt");
        if sets.contains(&"mqtt.expose=true") {
            assert_eq!(mqtt_addr, "0.0.0.0:1883");
            assert!(mqtt_on_service, "exposed MQTT has a Service port");
            assert!(
                env("SENSORNET_API_TOKEN").is_some()
                    || c["env"].to_string().contains("SENSORNET_API_TOKEN"),
                "exposed MQTT requires the token"
            );
            assert_eq!(kind(&all, "Secret").len(), 1, "a token Secret is made");
        } else if sets.contains(&"mqtt.enabled=false") {
            assert_eq!(mqtt_addr, "off");
            assert!(!mqtt_on_service);
        } else {
            assert_eq!(
                mqtt_addr, "127.0.0.1:1883",
                "MQTT on the pod's loopback by default"
            );
            assert!(!mqtt_on_service);
        }
        if sets.contains(&"api.expose=true") {
            assert!(c["env"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["name"] == "SENSORNET_API_TOKEN"));
        }
    }
}

#[test]
fn bad_values_fail_with_a_schema_message() {
    let t = tools();
    for (set, expect) in [
        ("replicaCount=x", "/replicaCount"),
        ("sensor.kinds={pressure}", "/sensor/kinds/0"),
        ("sensor.kinds={humidity,humidity}", "/sensor/kinds"),
        ("autoscaling.minReplicas=0", "/autoscaling/minReplicas"),
        ("logFormat=xml", "/logFormat"),
        ("retention=forever", "/retention"),
        ("unknownKey=1", "unknownKey"),
    ] {
        let (ok, _, err) = run(
            &t.join("bin/helm"),
            &["template", "x", "charts/sensornet", "--set", set],
            None,
        );
        assert!(!ok, "{set} must be refused");
        assert!(err.contains(expect), "{set}: {err}");
    }
}

#[test]
fn plain_manifests_equal_the_chart_and_dockerfile_lints() {
    let t = tools();
    let fresh = render(&[]);
    let committed = std::fs::read_to_string(root().join("k8s/sensornet.yaml")).unwrap();
    let body: String = committed
        .lines()
        .filter(|l| !l.starts_with("# Rendered") && !l.starts_with("# kubectl"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(body, fresh, "k8s/ is stale: run scripts/render-k8s.sh");
    let (ok, out, err) = run(&t.join("venv/bin/hadolint"), &["Dockerfile"], None);
    assert!(ok, "hadolint: {out}{err}");
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    assert!(
        dockerfile.contains("RUN scripts/build-release.sh"),
        "the image builds with the shared script"
    );
    assert!(dockerfile.contains("USER 10001"));
    for port in ["4001/tcp", "4001/udp", "5001/tcp", "1883/tcp", "9401/tcp"] {
        assert!(dockerfile.contains(port), "EXPOSE {port}");
    }
}

#[test]
fn a_node_configured_like_the_pod_serves_the_probes_and_stops_in_the_grace_period() {
    let all = docs(&render(&[]));
    let sts = kind(&all, "StatefulSet")[0].clone();
    let pod = &sts["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin("node"));
    for a in c["args"].as_array().unwrap() {
        cmd.arg(a.as_str().unwrap());
    }
    // The pod's environment, with the volume and the addresses mapped onto this machine.
    let mut metrics_port = String::new();
    for e in c["env"].as_array().unwrap() {
        let (name, mut value) = (
            e["name"].as_str().unwrap(),
            e["value"].as_str().unwrap_or("").to_string(),
        );
        match name {
            "SENSORNET_PATH" => value = dir.path().join("data").display().to_string(),
            "SENSORNET_LISTEN" => value = "/ip4/127.0.0.1/tcp/0".into(),
            "SENSORNET_API_ADDR" | "SENSORNET_MQTT_ADDR" => value = "127.0.0.1:0".into(),
            "SENSORNET_METRICS_ADDR" => {
                metrics_port = value.rsplit(':').next().unwrap().to_string();
                value = format!("127.0.0.1:{metrics_port}");
            }
            _ => {}
        }
        cmd.env(name, value);
    }
    let start = Instant::now();
    let mut child = KillOnDrop(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{metrics_port}");
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let path = c[probe]["httpGet"]["path"].as_str().unwrap();
        eventually(Duration::from_secs(30), probe, || {
            Ok(http()
                .get(format!("{base}{path}"))
                .send()
                .ok()
                .filter(|r| r.status().as_u16() == 200)
                .map(|_| ()))
        })
        .unwrap();
    }
    println!("pod-configured node: start→ready {:?}", start.elapsed());
    // `kubectl exec … -- node pub temp 25` finds the API through the pod's SENSORNET_PATH.
    let out = Command::new(bin("node"))
        .env("SENSORNET_PATH", dir.path().join("data"))
        .args(["pub", "temp", "25"])
        .output_within(Duration::from_secs(60))
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    let t0 = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(grace),
            "still running after the {grace}s grace period"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(st.success());
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "SIGTERM→exit took {:?}",
        t0.elapsed()
    );
}
