//! Real containers for the pod as Kubernetes runs it: the image built by
//! `scripts/build-image.sh`, the chart rendered by real Helm, and podman (rootful, runc, a
//! netavark network with aardvark-dns) running the rendered StatefulSet's container with its
//! args, env, securityContext, resources and volume. No control plane runs here, so the test is
//! the kubelet (it polls the probes' HTTP paths) and the StatefulSet controller (names, volumes).
//!
//! Everything created has a unique name and is removed on drop, even when a test fails; the
//! image, shared by the process's tests, is removed by the next run (see [`Image`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::{eventually, http, output_within, wait_output};

/// The repository's root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// A name no other test run on this machine uses (pid + counter).
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A podman command with the repo's containers.conf (runc, no default ulimits).
pub fn podman() -> Command {
    let mut c = Command::new("podman");
    c.env("CONTAINERS_CONF", root().join("scripts/containers.conf"));
    c
}

/// Runs podman with `args`; its stdout, trimmed, or an error with its stderr.
pub fn podman_out(args: &[&str]) -> Result<String> {
    let out = output_within(
        podman().args(args),
        Duration::from_secs(120),
        &format!("podman {}", args.join(" ")),
    )?;
    if !out.status.success() {
        bail!(
            "podman {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn run_script(script: &str, args: &[&str]) -> Result<String> {
    let out = output_within(
        Command::new(root().join(script))
            .args(args)
            .current_dir(root()),
        Duration::from_secs(900),
        script,
    )?;
    if !out.status.success() {
        bail!("{script} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into())
}

/// Runs an installer once per test process: tests run in parallel, and two apt-get or venv
/// installs at once would fight over dpkg's lock or the venv.
fn install_once(cell: &'static OnceLock<Result<(), String>>, script: &str) -> Result<()> {
    cell.get_or_init(|| {
        run_script(script, &[])
            .map(drop)
            .map_err(|e| format!("{e:#}"))
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// Installs podman, buildah, runc and skopeo (quick when present), as CI's clean machine needs.
pub fn install() -> Result<()> {
    static CELL: OnceLock<Result<(), String>> = OnceLock::new();
    install_once(&CELL, "scripts/install-containers.sh")
}

/// The image built from this checkout, shared by every test of the process.
///
/// One build per test process rather than one per test: podman resolves image names by
/// listing every image, and an `rmi` of one test's image while another test's build or run was
/// listing made that listing fail ("locating item named manifest for image with ID …": seen in
/// CI). Nothing is removed while tests run; the tags of finished test processes are removed
/// before the next build.
pub struct Image {
    /// NAME:TAG.
    pub name: String,
    /// What build-image.sh printed.
    pub build_log: String,
}

impl Image {
    /// Builds the image with `scripts/build-image.sh` under a tag of this process, once.
    pub fn build() -> Result<&'static Image> {
        static CELL: OnceLock<Result<Image, String>> = OnceLock::new();
        CELL.get_or_init(|| {
            install().map_err(|e| format!("{e:#}"))?;
            remove_images_of_finished_runs();
            let name = format!("localhost/{}:test", unique("sensornet"));
            let build_log = run_script("scripts/build-image.sh", &["--image", &name])
                .map_err(|e| format!("{e:#}"))?;
            Ok(Image { name, build_log })
        })
        .as_ref()
        .map_err(|e| anyhow!("{e}"))
    }

    /// `podman image inspect` of the image (the first and only element).
    pub fn inspect(&self) -> Result<Value> {
        let v: Value = serde_json::from_str(&podman_out(&["image", "inspect", &self.name])?)?;
        Ok(v[0].clone())
    }
}

/// Removes `localhost/sensornet-PID-N:test` images whose test process PID is gone (statics are
/// never dropped, so each run's image outlives it until the next run looks).
fn remove_images_of_finished_runs() {
    let Ok(list) = podman_out(&["images", "--format", "{{.Repository}}:{{.Tag}}"]) else {
        return;
    };
    for name in list.lines() {
        let pid = name
            .strip_prefix("localhost/sensornet-")
            .and_then(|rest| rest.strip_suffix(":test"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = pid {
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = podman_out(&["rmi", "--force", name]);
            }
        }
    }
}

/// Installs Helm and the tools venv (`scripts/install-k8s-tools.sh`) once per test process;
/// the `.tools` directory.
pub fn k8s_tools() -> Result<PathBuf> {
    static CELL: OnceLock<Result<(), String>> = OnceLock::new();
    install_once(&CELL, "scripts/install-k8s-tools.sh")?;
    Ok(root().join(".tools"))
}

/// `helm template sensornet charts/sensornet --namespace default` with `--set`s: the YAML.
pub fn render_chart_yaml(sets: &[&str]) -> Result<String> {
    let tools = k8s_tools()?;
    let mut args = vec![
        "template",
        "sensornet",
        "charts/sensornet",
        "--namespace",
        "default",
    ];
    for s in sets {
        args.extend(["--set", s]);
    }
    let out = output_within(
        Command::new(tools.join("bin/helm"))
            .args(&args)
            .current_dir(root()),
        Duration::from_secs(120),
        "helm template",
    )?;
    if !out.status.success() {
        bail!(
            "helm template {sets:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Every document of a YAML stream, as JSON (PyYAML from the tools venv).
pub fn yaml_docs(yaml: &str) -> Result<Vec<Value>> {
    let mut py = Command::new(k8s_tools()?.join("venv/bin/python"))
        .args([
            "-c",
            "import json,sys,yaml; print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d]))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    std::io::Write::write_all(py.stdin.as_mut().context("stdin")?, yaml.as_bytes())?;
    drop(py.stdin.take());
    let out = wait_output(&mut py, Duration::from_secs(60), "yaml to json")?;
    if !out.status.success() {
        bail!("yaml to json: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The chart rendered with `--set`s, as JSON documents.
pub fn render_chart(sets: &[&str]) -> Result<Vec<Value>> {
    yaml_docs(&render_chart_yaml(sets)?)
}

/// The document of `kind` in a rendered stream.
pub fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Result<&'a Value> {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .with_context(|| format!("no {kind} rendered"))
}

/// Kubernetes CPU quantity ("1", "500m", "0.5") in cores.
pub fn cpu_cores(q: &str) -> Result<f64> {
    Ok(match q.strip_suffix('m') {
        Some(m) => m.parse::<f64>()? / 1000.0,
        None => q.parse()?,
    })
}

/// Kubernetes memory quantity ("256Mi", "1Gi", "64M", "1000") in bytes.
pub fn memory_bytes(q: &str) -> Result<u64> {
    const UNITS: [(&str, u64); 6] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("k", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ];
    for (suffix, mul) in UNITS {
        if let Some(n) = q.strip_suffix(suffix) {
            return Ok(n.parse::<u64>()? * mul);
        }
    }
    Ok(q.parse()?)
}

/// The rendered StatefulSet's pod, as the kubelet would run it, mapped onto podman flags.
#[derive(Clone, Debug)]
pub struct PodSpec {
    /// StatefulSet name: pods are NAME-0, NAME-1, ...
    pub statefulset: String,
    /// `serviceName`: the headless Service whose DNS name the bootstrap env points at.
    pub service: String,
    /// The release namespace (the bootstrap name is SERVICE.NAMESPACE.svc.cluster.local).
    pub namespace: String,
    /// The container's args (appended to the image's entrypoint, as Kubernetes does).
    pub args: Vec<String>,
    /// Env, with `secretKeyRef`s resolved from the secrets given to [`PodSpec::from_chart`].
    pub env: Vec<(String, String)>,
    /// Pod or container `runAsUser`:`runAsGroup`.
    pub user: String,
    /// `readOnlyRootFilesystem`.
    pub read_only: bool,
    /// `capabilities.drop`.
    pub cap_drop: Vec<String>,
    /// `allowPrivilegeEscalation: false`.
    pub no_new_privileges: bool,
    /// `seccompProfile.type` (RuntimeDefault = podman's default profile).
    pub seccomp: String,
    /// `resources.limits.cpu`, in cores.
    pub cpu_limit: f64,
    /// `resources.requests.cpu`, in cores (the HPA's utilisation is relative to it).
    pub cpu_request: f64,
    /// `resources.limits.memory`, in bytes.
    pub memory_limit: u64,
    /// The data volume's `mountPath`.
    pub data_path: String,
    /// Port of the probes (`metrics`), and their paths.
    pub probe_port: u16,
    /// readinessProbe path.
    pub readiness_path: String,
    /// livenessProbe path.
    pub liveness_path: String,
    /// `terminationGracePeriodSeconds`: podman stop's timeout before SIGKILL.
    pub grace: u64,
}

fn str_of<'a>(v: &'a Value, what: &str) -> Result<&'a str> {
    v.as_str().with_context(|| format!("{what} missing in {v}"))
}

impl PodSpec {
    /// Reads the pod from the rendered StatefulSet; `secrets` maps SECRET/KEY to its value.
    pub fn from_chart(docs: &[Value], secrets: &BTreeMap<String, String>) -> Result<PodSpec> {
        let sts = of_kind(docs, "StatefulSet")?;
        let pod = &sts["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        let sc = &c["securityContext"];
        let psc = &pod["securityContext"];
        let env = c["env"]
            .as_array()
            .context("env")?
            .iter()
            .map(|e| {
                let name = str_of(&e["name"], "env name")?.to_string();
                let value = match e["value"].as_str() {
                    Some(v) => v.to_string(),
                    None => {
                        let r = &e["valueFrom"]["secretKeyRef"];
                        let key = format!(
                            "{}/{}",
                            str_of(&r["name"], "secret")?,
                            str_of(&r["key"], "key")?
                        );
                        secrets
                            .get(&key)
                            .cloned()
                            .with_context(|| format!("env {name} needs secret {key}, not given"))?
                    }
                };
                Ok((name, value))
            })
            .collect::<Result<_>>()?;
        let uid = sc["runAsUser"].as_u64().or(psc["runAsUser"].as_u64());
        let gid = sc["runAsGroup"].as_u64().or(psc["runAsGroup"].as_u64());
        let probe_port_name = str_of(&c["readinessProbe"]["httpGet"]["port"], "probe port")?;
        let probe_port = c["ports"]
            .as_array()
            .context("ports")?
            .iter()
            .find(|p| p["name"] == probe_port_name)
            .and_then(|p| p["containerPort"].as_u64())
            .context("probe port")? as u16;
        let mount = c["volumeMounts"]
            .as_array()
            .context("volumeMounts")?
            .iter()
            .find(|m| m["name"] == "data")
            .context("data volumeMount")?;
        Ok(PodSpec {
            statefulset: str_of(&sts["metadata"]["name"], "name")?.to_string(),
            service: str_of(&sts["spec"]["serviceName"], "serviceName")?.to_string(),
            namespace: "default".to_string(),
            args: c["args"]
                .as_array()
                .context("args")?
                .iter()
                .map(|a| str_of(a, "arg").map(String::from))
                .collect::<Result<_>>()?,
            env,
            user: format!(
                "{}:{}",
                uid.context("runAsUser")?,
                gid.context("runAsGroup")?
            ),
            read_only: sc["readOnlyRootFilesystem"] == true,
            cap_drop: sc["capabilities"]["drop"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|c| c.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
            no_new_privileges: sc["allowPrivilegeEscalation"] == false,
            seccomp: psc["seccompProfile"]["type"]
                .as_str()
                .or(sc["seccompProfile"]["type"].as_str())
                .unwrap_or("Unconfined")
                .to_string(),
            cpu_limit: cpu_cores(str_of(&c["resources"]["limits"]["cpu"], "cpu limit")?)?,
            cpu_request: cpu_cores(str_of(&c["resources"]["requests"]["cpu"], "cpu request")?)?,
            memory_limit: memory_bytes(str_of(
                &c["resources"]["limits"]["memory"],
                "memory limit",
            )?)?,
            data_path: str_of(&mount["mountPath"], "mountPath")?.to_string(),
            probe_port,
            readiness_path: str_of(&c["readinessProbe"]["httpGet"]["path"], "readiness")?
                .to_string(),
            liveness_path: str_of(&c["livenessProbe"]["httpGet"]["path"], "liveness")?.to_string(),
            grace: pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30),
        })
    }

    /// The headless Service's cluster DNS name, as the rendered bootstrap env spells it (the
    /// name the node resolves), else SERVICE.NAMESPACE.svc.cluster.local.
    pub fn service_dns(&self) -> String {
        self.env("SENSORNET_BOOTSTRAP")
            .and_then(|b| b.strip_prefix("/dns4/").or(b.strip_prefix("/dns/")))
            .and_then(|rest| rest.split('/').next())
            .map(String::from)
            .unwrap_or_else(|| format!("{}.{}.svc.cluster.local", self.service, self.namespace))
    }

    /// Env value by name.
    pub fn env(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// podman flags for the securityContext and resources (see docs/kubernetes.md for the map).
    fn podman_flags(&self) -> Result<Vec<String>> {
        let mut f = vec!["--user".to_string(), self.user.clone()];
        if self.read_only {
            // Kubernetes mounts no tmpfs on a read-only root; podman would on /tmp, /run.
            f.extend(["--read-only".into(), "--read-only-tmpfs=false".into()]);
        }
        for c in &self.cap_drop {
            f.extend(["--cap-drop".into(), c.clone()]);
        }
        if self.no_new_privileges {
            f.extend(["--security-opt".into(), "no-new-privileges".into()]);
        }
        match self.seccomp.as_str() {
            "RuntimeDefault" => {} // podman's default profile is the runtime's default.
            "Unconfined" => f.extend(["--security-opt".into(), "seccomp=unconfined".into()]),
            other => bail!("seccomp profile {other} has no podman mapping here"),
        }
        // The kubelet turns the CPU request into cpu.shares (milliCPU × 1024 / 1000, at least
        // 2) and the limit into the CFS quota.
        let shares = ((self.cpu_request * 1024.0).round() as u64).max(2);
        f.extend([
            "--cpu-shares".into(),
            shares.to_string(),
            "--cpus".into(),
            format!("{}", self.cpu_limit),
            "--memory".into(),
            format!("{}b", self.memory_limit),
        ]);
        Ok(f)
    }
}

/// A container network standing in for the cluster network and the headless Service:
/// every pod joins with the Service's DNS name as a network alias, so aardvark-dns answers it
/// with every pod's address, as cluster DNS answers a headless Service.
pub struct Cluster {
    /// Network name.
    pub network: String,
    /// The pod every container runs.
    pub spec: PodSpec,
    /// The image.
    pub image: String,
    /// Prefix of container and volume names (unique per cluster).
    pub prefix: String,
}

impl Cluster {
    /// Creates the network.
    pub fn new(spec: PodSpec, image: &Image) -> Result<Cluster> {
        let prefix = unique("sn");
        let network = format!("{prefix}-net");
        podman_out(&["network", "create", &network])?;
        Ok(Cluster {
            network,
            spec,
            image: image.name.clone(),
            prefix,
        })
    }

    /// Starts pod `ordinal` on a new volume (a new PVC).
    pub fn start(&self, ordinal: usize) -> Result<Pod> {
        let volume = format!("{}-data-{ordinal}-{}", self.prefix, unique("v"));
        podman_out(&["volume", "create", &volume])?;
        let mut pod = Pod {
            name: format!("{}-{}-{ordinal}", self.prefix, self.spec.statefulset),
            volume,
            spec: self.spec.clone(),
            ip: String::new(),
        };
        self.run(&mut pod)?;
        Ok(pod)
    }

    /// Replaces `pod` with a new container of the same name (the StatefulSet's replacement)
    /// and, when `new_volume`, a new empty volume (a deleted PVC); the old one is removed.
    pub fn replace(&self, pod: &mut Pod, new_volume: bool) -> Result<()> {
        podman_out(&["rm", "--force", "--time", "0", &pod.name])?;
        if new_volume {
            let old = std::mem::replace(
                &mut pod.volume,
                format!("{}-data-{}", self.prefix, unique("v")),
            );
            podman_out(&["volume", "rm", "--force", &old])?;
            podman_out(&["volume", "create", &pod.volume])?;
        }
        self.run(pod)
    }

    fn run(&self, pod: &mut Pod) -> Result<()> {
        let s = &self.spec;
        let mut args: Vec<String> = [
            "run",
            "--detach",
            "--name",
            &pod.name,
            "--hostname",
            &pod.name,
            "--network",
            &self.network,
            "--network-alias",
            &s.service_dns(),
            // The kubelet restarts a StatefulSet pod's container whatever its exit status.
            "--restart",
            "always",
            "--stop-timeout",
            &s.grace.to_string(),
            "--volume",
            &format!("{}:{}", pod.volume, s.data_path),
        ]
        .map(String::from)
        .to_vec();
        args.extend(s.podman_flags()?);
        for (k, v) in &s.env {
            args.extend(["--env".into(), format!("{k}={v}")]);
        }
        args.push(self.image.clone());
        args.extend(s.args.iter().cloned());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        podman_out(&refs)?;
        pod.ip = podman_out(&[
            "inspect",
            "--format",
            &format!(
                "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
                self.network
            ),
            &pod.name,
        ])?;
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = podman_out(&["network", "rm", "--force", &self.network]);
    }
}

/// One pod's container and its volume, removed on drop.
pub struct Pod {
    /// Container name (= pod name, NAME-ORDINAL).
    pub name: String,
    /// Volume name (its PVC).
    pub volume: String,
    /// What it runs.
    pub spec: PodSpec,
    /// Its address on the cluster network.
    pub ip: String,
}

impl Pod {
    /// `podman inspect` of the container.
    pub fn inspect(&self) -> Result<Value> {
        let v: Value = serde_json::from_str(&podman_out(&["inspect", &self.name])?)?;
        Ok(v[0].clone())
    }

    /// The container's main process on the host (0 when not running).
    pub fn pid(&self) -> Result<u32> {
        Ok(podman_out(&["inspect", "--format", "{{.State.Pid}}", &self.name])?.parse()?)
    }

    /// GET of a probe path on the probe port, from the node's side of the network, as the
    /// kubelet probes (the scratch image has no shell or curl for an exec health check, and
    /// `node` has no health subcommand).
    pub fn probe(&self, path: &str) -> bool {
        let url = format!("http://{}:{}{path}", self.ip, self.spec.probe_port);
        matches!(
            reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .and_then(|c| c.get(url).send()),
            Ok(r) if r.status().is_success()
        )
    }

    /// Whether the readiness probe passes.
    pub fn ready(&self) -> bool {
        self.probe(&self.spec.readiness_path)
    }

    /// Waits for the readiness probe.
    pub fn wait_ready(&self, timeout: Duration) -> Result<()> {
        eventually(timeout, &format!("{} ready", self.name), || {
            Ok(self.ready().then_some(()))
        })
        .map_err(|e| anyhow!("{e}\nlog of {}:\n{}", self.name, self.logs()))
    }

    /// The container's log (stdout and stderr), last 40 lines.
    pub fn logs(&self) -> String {
        match podman().args(["logs", "--tail", "40", &self.name]).output() {
            Ok(o) => format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => format!("(no log: {e})"),
        }
    }

    /// Runs `args` inside the container (`kubectl exec`); its output, success or not.
    pub fn exec(&self, args: &[&str]) -> Result<std::process::Output> {
        let mut a = vec!["exec", &self.name];
        a.extend(args);
        output_within(
            podman().args(&a),
            Duration::from_secs(60),
            &format!("podman exec {}", args.join(" ")),
        )
    }

    /// The API's URL base, when the chart exposes the API (`api.expose=true`).
    pub fn api(&self, path_and_query: &str) -> String {
        let port = self
            .spec
            .env("SENSORNET_API_ADDR")
            .and_then(|a| a.rsplit(':').next())
            .unwrap_or("5001");
        format!("http://{}:{port}/api/v0/{path_and_query}", self.ip)
    }

    /// POST to the exposed API with the token; the JSON body.
    pub fn post(&self, path_and_query: &str) -> Result<reqwest::blocking::Response> {
        let mut r = http().post(self.api(path_and_query));
        if let Some(t) = self.spec.env("SENSORNET_API_TOKEN") {
            r = r.bearer_auth(t);
        }
        Ok(r.send()?)
    }

    /// Publishes a durable reading; its CID.
    pub fn publish(&self, topic: &str, value: f64, source: &str) -> Result<String> {
        let r = self.post(&format!(
            "reading/pub?topic={topic}&value={value}&source={source}"
        ))?;
        let st = r.status();
        let v: Value =
            serde_json::from_str(&r.text()?).with_context(|| format!("reading/pub: HTTP {st}"))?;
        Ok(str_of(&v["Cid"], "Cid")?.to_string())
    }

    /// CIDs of a topic's stored readings.
    pub fn cids(&self, topic: &str) -> Result<std::collections::HashSet<String>> {
        let r = self.post(&format!("reading/history?topic={topic}"))?;
        if !r.status().is_success() {
            bail!("history: HTTP {}", r.status());
        }
        r.text()?
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let v: Value = serde_json::from_str(l)?;
                Ok(str_of(&v["cid"], "cid")?.to_string())
            })
            .collect()
    }

    /// The container's cgroup directory under the v1 controller `controller` (or the unified
    /// v2 directory), from `podman inspect`'s CgroupPath.
    pub fn cgroup_dir(&self, controller: &str) -> Result<PathBuf> {
        let rel = podman_out(&["inspect", "--format", "{{.State.CgroupPath}}", &self.name])?;
        let rel = rel.trim_start_matches('/');
        let v1 = Path::new("/sys/fs/cgroup").join(controller).join(rel);
        if v1.exists() {
            return Ok(v1);
        }
        let v2 = Path::new("/sys/fs/cgroup").join(rel);
        if v2.join("cgroup.controllers").exists() {
            return Ok(v2);
        }
        bail!("no cgroup directory for {} ({rel})", self.name)
    }

    /// CPU time the container's cgroup has used, as metrics-server reads it from the kubelet
    /// (cAdvisor: `cpuacct.usage` on cgroup v1, `cpu.stat` usage_usec on v2).
    pub fn cpu_usage(&self) -> Result<Duration> {
        let v1 = self.cgroup_dir("cpuacct")?.join("cpuacct.usage");
        if v1.exists() {
            let ns: u64 = std::fs::read_to_string(&v1)?.trim().parse()?;
            return Ok(Duration::from_nanos(ns));
        }
        let stat = std::fs::read_to_string(self.cgroup_dir("cpu")?.join("cpu.stat"))?;
        let us: u64 = stat
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .context("usage_usec")?
            .trim()
            .parse()?;
        Ok(Duration::from_micros(us))
    }

    /// The CPU limit the kernel enforces (CFS quota / period), in cores.
    pub fn cgroup_cpu_limit(&self) -> Result<f64> {
        let d = self.cgroup_dir("cpu")?;
        if d.join("cpu.cfs_quota_us").exists() {
            let q: f64 = std::fs::read_to_string(d.join("cpu.cfs_quota_us"))?
                .trim()
                .parse()?;
            let p: f64 = std::fs::read_to_string(d.join("cpu.cfs_period_us"))?
                .trim()
                .parse()?;
            return Ok(q / p);
        }
        let max = std::fs::read_to_string(d.join("cpu.max"))?;
        let mut it = max.split_whitespace();
        let q: f64 = it.next().context("quota")?.parse()?;
        let p: f64 = it.next().context("period")?.parse()?;
        Ok(q / p)
    }

    /// A number from the container's cgroup: `v1` under the v1 controller, else `v2`.
    fn cgroup_u64(&self, controller: &str, v1: &str, v2: &str) -> Result<u64> {
        let d = self.cgroup_dir(controller)?;
        let f = if d.join(v1).exists() {
            d.join(v1)
        } else {
            d.join(v2)
        };
        let text = std::fs::read_to_string(&f).with_context(|| f.display().to_string())?;
        Ok(text.trim().parse()?)
    }

    /// The CPU weight under contention: cpu.shares on cgroup v1, cpu.weight on v2.
    pub fn cgroup_cpu_shares(&self) -> Result<u64> {
        self.cgroup_u64("cpu", "cpu.shares", "cpu.weight")
    }

    /// The memory limit the kernel enforces, in bytes.
    pub fn cgroup_memory_limit(&self) -> Result<u64> {
        self.cgroup_u64("memory", "memory.limit_in_bytes", "memory.max")
    }

    /// A `/proc/PID/status` field of the container's main process.
    pub fn proc_status(&self, field: &str) -> Result<String> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .map(|v| v.trim().to_string())
            .with_context(|| format!("{field} not in /proc/PID/status"))
    }

    /// SIGKILLs the container's main process from outside (an OOM kill or a crash), not
    /// through podman, so the restart policy is what brings it back.
    pub fn sigkill(&self) -> Result<u32> {
        let pid = self.pid()?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )?;
        Ok(pid)
    }

    /// How often the restart policy has restarted the container.
    pub fn restart_count(&self) -> Result<u64> {
        Ok(podman_out(&["inspect", "--format", "{{.RestartCount}}", &self.name])?.parse()?)
    }

    /// Scale-down: SIGTERM, SIGKILL after the grace period (`podman stop`); the exit code.
    pub fn terminate(&self) -> Result<i64> {
        podman_out(&["stop", "--time", &self.spec.grace.to_string(), &self.name])?;
        Ok(podman_out(&["inspect", "--format", "{{.State.ExitCode}}", &self.name])?.parse()?)
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = podman_out(&["rm", "--force", "--time", "0", &self.name]);
        let _ = podman_out(&["volume", "rm", "--force", &self.volume]);
    }
}

/// The rendered HorizontalPodAutoscaler's CPU rule, applied as kube-controller-manager's
/// podautoscaler does (pkg/controller/podautoscaler/replica_calculator.go, horizontal.go).
#[derive(Clone, Debug)]
pub struct Hpa {
    /// `minReplicas`.
    pub min: usize,
    /// `maxReplicas`.
    pub max: usize,
    /// `averageUtilization` of the CPU request, in percent.
    pub target: f64,
    /// `behavior.scaleDown.stabilizationWindowSeconds` (Kubernetes' default 300 s if absent).
    pub scale_down_window: Duration,
    /// `--horizontal-pod-autoscaler-tolerance`: no change while |usage/target − 1| ≤ this.
    pub tolerance: f64,
    /// Past recommendations, for the scale-down stabilisation window.
    recommendations: Vec<(std::time::Instant, usize)>,
}

impl Hpa {
    /// Reads min, max, the CPU target and the scale-down window from the rendered HPA.
    pub fn from_chart(docs: &[Value]) -> Result<Hpa> {
        let hpa = of_kind(docs, "HorizontalPodAutoscaler")?;
        let spec = &hpa["spec"];
        let cpu = spec["metrics"]
            .as_array()
            .context("metrics")?
            .iter()
            .find(|m| m["resource"]["name"] == "cpu")
            .context("no CPU metric")?;
        let window = spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"]
            .as_u64()
            .unwrap_or(300);
        Ok(Hpa {
            min: spec["minReplicas"].as_u64().unwrap_or(1) as usize,
            max: spec["maxReplicas"].as_u64().context("maxReplicas")? as usize,
            target: cpu["resource"]["target"]["averageUtilization"]
                .as_f64()
                .context("averageUtilization")?,
            scale_down_window: Duration::from_secs(window),
            // The controller manager's default; not a field of the HPA object.
            tolerance: 0.1,
            recommendations: Vec::new(),
        })
    }

    /// One sync: from the current replica count and each pod's utilisation (percent of its
    /// CPU request), the replica count to set.
    pub fn decide(
        &mut self,
        now: std::time::Instant,
        current: usize,
        utilization: &[f64],
    ) -> usize {
        let raw = self.recommend(current, utilization);
        self.recommendations.push((now, raw));
        self.recommendations
            .retain(|(t, _)| now.duration_since(*t) <= self.scale_down_window);
        // Scale-down stabilisation: the highest recommendation of the window.
        let stabilized = self
            .recommendations
            .iter()
            .map(|(_, r)| *r)
            .max()
            .unwrap_or(raw);
        // The default scale-up policies: at most double, or +4 pods, per period.
        let up_limit = (current * 2).max(current + 4);
        stabilized.min(up_limit).clamp(self.min, self.max)
    }

    /// desired = ceil(current × average utilisation / target), unless within the tolerance.
    pub fn recommend(&self, current: usize, utilization: &[f64]) -> usize {
        if utilization.is_empty() {
            return current;
        }
        let avg = utilization.iter().sum::<f64>() / utilization.len() as f64;
        let ratio = avg / self.target;
        if (ratio - 1.0).abs() <= self.tolerance {
            return current;
        }
        ((utilization.len() as f64 * ratio).ceil() as usize).clamp(self.min, self.max)
    }
}
