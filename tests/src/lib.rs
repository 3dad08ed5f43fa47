//! Test harness: real `node` daemons on loopback, each with its own repo in a temporary
//! directory, killed when dropped; its log is printed when a test fails.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

pub mod lazyfs;
pub mod netns;

/// Path of a binary built by `cargo build --workspace --bins` (target/debug/NAME).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // Tests run from target/debug/deps/, the demo from target/debug/.
    let mut dir = exe.parent().expect("target dir");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("target dir");
    }
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        p.display()
    );
    p
}

/// Polls `f` until it returns Ok(Some) or the timeout passes.
pub fn eventually<T>(
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let start = Instant::now();
    let mut last_err = None;
    loop {
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what} (last error: {last_err:?})");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Options of one daemon.
#[derive(Clone, Debug, Default)]
pub struct Opts {
    /// Bootstrap multiaddrs.
    pub bootstrap: Vec<String>,
    /// Extra daemon arguments.
    pub extra: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Listen address (default /ip4/127.0.0.1/tcp/0).
    pub listen: Option<String>,
    /// Run inside this network namespace.
    pub netns: Option<String>,
    /// API address (default 127.0.0.1:0).
    pub api_addr: Option<String>,
}

/// One daemon process and its repo.
pub struct Daemon {
    /// Name in logs.
    pub name: String,
    /// Repo directory.
    pub repo: PathBuf,
    child: Option<Child>,
    /// Swarm address (first listen address).
    pub swarm: String,
    /// API HOST:PORT.
    pub api: String,
    /// Metrics HOST:PORT.
    pub metrics: String,
    /// Peer id.
    pub peer_id: String,
    log: Arc<Mutex<Vec<String>>>,
    opts: Opts,
    /// Time from spawn to the API line.
    pub started_in: Duration,
}

impl Daemon {
    /// Starts a daemon with a new repo under `dir`.
    pub fn start(dir: &Path, name: &str, opts: Opts) -> Result<Daemon> {
        let repo = dir.join(name);
        let mut d = Daemon {
            name: name.to_string(),
            repo,
            child: None,
            swarm: String::new(),
            api: String::new(),
            metrics: String::new(),
            peer_id: String::new(),
            log: Default::default(),
            opts,
            started_in: Duration::ZERO,
        };
        d.spawn()?;
        Ok(d)
    }

    /// (Re)starts the process on the same repo.
    pub fn spawn(&mut self) -> Result<()> {
        let listen = self
            .opts
            .listen
            .clone()
            .unwrap_or_else(|| "/ip4/127.0.0.1/tcp/0".into());
        let mut args: Vec<String> = vec![
            "--repo".into(),
            self.repo.display().to_string(),
            "daemon".into(),
            "--init".into(),
            "--listen".into(),
            listen,
            "--api-addr".into(),
            self.opts
                .api_addr
                .clone()
                .unwrap_or_else(|| "127.0.0.1:0".into()),
            "--metrics-addr".into(),
            "127.0.0.1:0".into(),
        ];
        for b in &self.opts.bootstrap {
            args.push("--bootstrap".into());
            args.push(b.clone());
        }
        args.extend(self.opts.extra.iter().cloned());
        let mut cmd = match &self.opts.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin("node"));
                c
            }
            None => Command::new(bin("node")),
        };
        cmd.args(&args)
            .env("RUST_LOG", "info,libp2p_gossipsub=warn,libp2p_swarm=warn")
            .env_remove("SENSORNET_PATH")
            .env_remove("SENSORNET_API")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.opts.env {
            cmd.env(k, v);
        }
        let t0 = Instant::now();
        let mut child = cmd.spawn().context("spawning node daemon")?;
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = self.log.clone();
        let name = self.name.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log.lock().unwrap().push(format!("[{name} err] {line}"));
            }
        });
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let log = self.log.clone();
        let name = self.name.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                log.lock().unwrap().push(format!("[{name}] {line}"));
                let _ = tx.send(line);
            }
        });
        self.child = Some(child);
        let mut swarm = String::new();
        loop {
            let line = rx.recv_timeout(Duration::from_secs(30)).map_err(|_| {
                anyhow::anyhow!("{} did not start; log:\n{}", self.name, self.log_text())
            })?;
            if let Some(a) = line.strip_prefix("Swarm listening on ") {
                if swarm.is_empty() {
                    swarm = a.to_string();
                }
            } else if let Some(id) = line.strip_prefix("PeerID: ") {
                self.peer_id = id.to_string();
            } else if let Some(a) = line.strip_prefix("RPC API server listening on ") {
                self.api = sensornet::repo::multiaddr_to_host_port(a).context("api addr")?;
            } else if let Some(a) = line.strip_prefix("Metrics server listening on ") {
                self.metrics =
                    sensornet::repo::multiaddr_to_host_port(a).context("metrics addr")?;
                break;
            }
        }
        self.started_in = t0.elapsed();
        self.swarm = format!("{swarm}/p2p/{}", self.peer_id);
        Ok(())
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends a signal and waits for the exit (SIGKILL after `grace`); returns the exit status.
    pub fn stop_with(
        &mut self,
        sig: nix::sys::signal::Signal,
        grace: Duration,
    ) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig);
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            if start.elapsed() > grace {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        self.stop_with(nix::sys::signal::Signal::SIGKILL, Duration::from_secs(5));
    }

    /// POSTs to the API and returns status and body.
    pub fn post(&self, path_and_query: &str) -> Result<(u16, String)> {
        let url = format!("http://{}/api/v0/{path_and_query}", self.api);
        if let Some(ns) = &self.opts.netns {
            return netns::curl(ns, "POST", &url);
        }
        let r = http().post(url).send()?;
        Ok((r.status().as_u16(), r.text()?))
    }

    /// POSTs and parses JSON (must be 200).
    pub fn post_json(&self, path_and_query: &str) -> Result<Value> {
        let (st, body) = self.post(path_and_query)?;
        if st != 200 {
            bail!("{path_and_query}: HTTP {st}: {body}");
        }
        Ok(serde_json::from_str(&body)?)
    }

    /// Publishes a reading through the API; returns its CID.
    pub fn publish(&self, topic: &str, value: f64, source: &str) -> Result<String> {
        let v = self.post_json(&format!(
            "reading/pub?topic={topic}&value={value}&source={source}"
        ))?;
        Ok(v["Cid"].as_str().context("Cid")?.to_string())
    }

    /// Stored readings of a topic (JSON lines), oldest first.
    pub fn history(&self, topic: &str) -> Result<Vec<Value>> {
        let (st, body) = self.post(&format!("reading/history?topic={topic}"))?;
        if st != 200 {
            bail!("history: HTTP {st}: {body}");
        }
        body.lines()
            .filter(|l| !l.is_empty())
            .map(|l| Ok(serde_json::from_str(l)?))
            .collect()
    }

    /// GET on the metrics address.
    pub fn get_metrics(&self, path: &str) -> Result<(u16, String)> {
        let url = format!("http://{}{path}", self.metrics);
        if let Some(ns) = &self.opts.netns {
            return netns::curl(ns, "GET", &url);
        }
        let r = http().get(url).send()?;
        Ok((r.status().as_u16(), r.text()?))
    }

    /// Whether /readyz answers 200.
    pub fn is_ready(&self) -> bool {
        matches!(self.get_metrics("/readyz"), Ok((200, _)))
    }

    /// Waits for readiness.
    pub fn wait_ready(&self, timeout: Duration) -> Result<()> {
        eventually(timeout, &format!("{} ready", self.name), || {
            Ok(self.is_ready().then_some(()))
        })
    }

    /// Number of connected peers.
    pub fn peer_count(&self) -> Result<usize> {
        let v = self.post_json("swarm/peers")?;
        Ok(v["Peers"].as_array().map(Vec::len).unwrap_or(0))
    }

    /// Runs the CLI against this daemon's repo.
    pub fn cli(&self, args: &[&str]) -> Result<Output> {
        Ok(Command::new(bin("node"))
            .arg("--repo")
            .arg(&self.repo)
            .args(args)
            .env_remove("SENSORNET_API")
            .output()?)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // SENSORNET_TEST_LOGS=1 shows every daemon's log, also for tests that pass.
        if std::thread::panicking() || std::env::var_os("SENSORNET_TEST_LOGS").is_some() {
            eprintln!("----- log of {} -----\n{}", self.name, self.log_text());
        }
    }
}

/// A TCP port free on loopback right now (for programs that cannot report the one they bound).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding a loopback port")
}

/// A blocking HTTP client with sane timeouts.
pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

/// Starts `n` daemons; every one after the first bootstraps from the first.
pub fn cluster(dir: &Path, n: usize) -> Result<Vec<Daemon>> {
    let first = Daemon::start(dir, "n0", Opts::default())?;
    let boot = first.swarm.clone();
    let mut nodes = vec![first];
    for i in 1..n {
        nodes.push(Daemon::start(
            dir,
            &format!("n{i}"),
            Opts {
                bootstrap: vec![boot.clone()],
                ..Opts::default()
            },
        )?);
    }
    for n in &nodes {
        n.wait_ready(Duration::from_secs(30))?;
    }
    // Meshes form on the gossipsub heartbeat.
    for n in &nodes {
        eventually(Duration::from_secs(15), "gossip peers", || {
            let v = n.post_json("pubsub/peers?arg=udGVtcGVyYXR1cmU")?;
            Ok((v["Strings"].as_array().map(Vec::len).unwrap_or(0) >= 1).then_some(()))
        })?;
    }
    Ok(nodes)
}

/// Checks that a block fetched from a node hashes to its CID.
pub fn block_matches(node: &Daemon, cid: &str) -> Result<bool> {
    let r = http()
        .post(format!("http://{}/api/v0/block/get?arg={cid}", node.api))
        .send()?;
    if !r.status().is_success() {
        return Ok(false);
    }
    let bytes = r.bytes()?;
    let cid: cid::Cid = cid.parse()?;
    Ok(sensornet::reading::verify_cid(&cid, &bytes))
}
