//! Test harness: real `node` daemons on loopback, each with its own repo in a temporary
//! directory, killed when dropped; its log is printed when a test fails.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use sensornet::repo::{multiaddr_to_host_port, DaemonInfo, Repo};
use serde_json::Value;

pub mod browser;
pub mod containers;
pub mod kubo;
pub mod lazyfs;
pub mod netns;

/// Path of a binary built by `cargo build --workspace --bins` (target/debug/NAME), or in
/// `$SENSORNET_BIN_DIR` when set (binaries copied aside while a shared target dir gets rebuilt).
pub fn bin(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("SENSORNET_BIN_DIR") {
        let p = PathBuf::from(dir).join(name);
        assert!(p.exists(), "{} is missing", p.display());
        return p;
    }
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

/// How long a daemon may take from spawn to its `daemon.json` and `api` files.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a CLI command ([`Daemon::cli`]) may run before it is killed.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(60);

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
    /// MQTT HOST:PORT, from `daemon.json` (`None` with `--mqtt-addr off`).
    pub mqtt: Option<String>,
    /// Peer id.
    pub peer_id: String,
    log: Arc<Mutex<Vec<String>>>,
    opts: Opts,
    /// Time from spawn to `daemon.json` and `api` present.
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
            mqtt: None,
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
        // Many daemons share a machine here: each MQTT listener gets a free port (read back
        // from daemon.json) unless the test picks one.
        if !self.opts.extra.iter().any(|a| a.starts_with("--mqtt-addr")) {
            args.extend(["--mqtt-addr".into(), "127.0.0.1:0".into()]);
        }
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
        // Stale files of an earlier run (killed, so it could not remove them) must not be taken
        // for this run's.
        for f in [self.daemon_file(), self.api_file()] {
            match std::fs::remove_file(&f) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => bail!("cannot remove the stale {}: {e}", f.display()),
            }
        }
        let t0 = Instant::now();
        let mut child = cmd.spawn().context("spawning node daemon")?;
        // `ip netns exec` execs the daemon in place: the pid is the daemon's in both cases.
        let pid = child.id();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = self.log.clone();
        let name = self.name.clone();
        let err_thread = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log.lock().unwrap().push(format!("[{name} err] {line}"));
            }
        });
        let log = self.log.clone();
        let name = self.name.clone();
        let out_thread = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                log.lock().unwrap().push(format!("[{name}] {line}"));
            }
        });
        self.child = Some(child);
        let deadline = t0 + START_TIMEOUT;
        let info = loop {
            if let Some(info) = self.started_info(pid) {
                break info;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                // The log threads end at the pipes' EOF: wait (briefly) for the last lines.
                let wait = Instant::now();
                while !(out_thread.is_finished() && err_thread.is_finished())
                    && wait.elapsed() < Duration::from_secs(2)
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                self.child = None;
                bail!(
                    "{} exited ({status}) before writing {} and {}; log:\n{}",
                    self.name,
                    self.daemon_file().display(),
                    self.api_file().display(),
                    self.log_text()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not write {} (with pid {pid}) and {} within {START_TIMEOUT:?}; log:\n{}",
                    self.name,
                    self.daemon_file().display(),
                    self.api_file().display(),
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.started_in = t0.elapsed();
        let (api, info) = info;
        let swarm = info.swarm.first().with_context(|| {
            format!(
                "{}: no swarm address in {}; log:\n{}",
                self.name,
                self.daemon_file().display(),
                self.log_text()
            )
        })?;
        self.api = api;
        self.metrics = multiaddr_to_host_port(&info.metrics).with_context(|| {
            format!(
                "{}: metrics address {:?} in daemon.json",
                self.name, info.metrics
            )
        })?;
        self.mqtt = info.mqtt.as_deref().and_then(multiaddr_to_host_port);
        self.peer_id = info.id.clone();
        self.swarm = format!("{swarm}/p2p/{}", info.id);
        Ok(())
    }

    /// The API address from the `api` file and the rest from `daemon.json`, once both exist
    /// and `daemon.json` is the one of process `pid`.
    fn started_info(&self, pid: u32) -> Option<(String, DaemonInfo)> {
        let repo = Repo::at(&self.repo);
        let info = DaemonInfo::read(&repo)?;
        if info.pid != pid {
            return None;
        }
        // The daemon writes daemon.json before the api file: both present means both complete.
        let api = repo.read_api_file()?;
        Some((api, info))
    }

    /// `REPO/daemon.json`.
    pub fn daemon_file(&self) -> PathBuf {
        Repo::at(&self.repo).daemon_file()
    }

    /// `REPO/api`.
    pub fn api_file(&self) -> PathBuf {
        Repo::at(&self.repo).api_file()
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

    /// `reading/pub-batch` of NDJSON lines; returns the answer's lines (one per reading).
    pub fn publish_batch(&self, ndjson: String) -> Result<Vec<Value>> {
        let r = http()
            .post(format!("http://{}/api/v0/reading/pub-batch", self.api))
            .header("content-type", "application/x-ndjson")
            .body(ndjson)
            .send()?;
        let (status, body) = (r.status(), r.text()?);
        if !status.is_success() {
            bail!("reading/pub-batch on {}: HTTP {status}: {body}", self.name);
        }
        body.lines().map(|l| Ok(serde_json::from_str(l)?)).collect()
    }

    /// Readings of the sources named `{prefix}*` of `topic` held linked here: each head's seq
    /// less the holes below it. 0 while the node does not answer.
    pub fn linked(&self, topic: &str, prefix: &str) -> u64 {
        let Ok(v) = self.post_json(&format!("reading/heads?topic={topic}")) else {
            return 0;
        };
        v["Heads"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|h| h["source"].as_str().is_some_and(|s| s.starts_with(prefix)))
            .map(|h| {
                h["seq"]
                    .as_u64()
                    .unwrap_or(0)
                    .saturating_sub(h["holes"].as_u64().unwrap_or(0))
            })
            .sum()
    }

    /// `pubsub/pub` of raw bytes on a topic, as a Kubo client sends them (multibase topic,
    /// multipart body).
    pub fn pubsub_pub(&self, topic: &str, data: &[u8]) -> Result<()> {
        let form = reqwest::blocking::multipart::Form::new().part(
            "file",
            reqwest::blocking::multipart::Part::bytes(data.to_vec()).file_name("data"),
        );
        let r = http()
            .post(format!(
                "http://{}/api/v0/pubsub/pub?arg={}",
                self.api,
                multibase_topic(topic)
            ))
            .multipart(form)
            .send()?;
        if !r.status().is_success() {
            bail!("pubsub/pub on {}: {}", self.name, r.text()?);
        }
        Ok(())
    }

    /// A streaming `pubsub/sub` of a topic: its messages (JSON objects), read on a thread so
    /// that waits on the receiver can time out.
    pub fn pubsub_sub(&self, topic: &str) -> Result<Receiver<Value>> {
        let resp = reqwest::blocking::Client::builder()
            .timeout(None)
            .build()?
            .post(format!(
                "http://{}/api/v0/pubsub/sub?arg={}",
                self.api,
                multibase_topic(topic)
            ))
            .send()?;
        if resp.status() != 200 {
            bail!("pubsub/sub on {}: HTTP {}", self.name, resp.status());
        }
        let (tx, rx) = mpsc::channel::<Value>();
        std::thread::spawn(move || {
            for l in BufReader::new(resp).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&l) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
            }
        });
        Ok(rx)
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

    /// Runs the CLI against this daemon's repo; killed after [`CLI_TIMEOUT`] (an error
    /// with the daemon's log).
    pub fn cli(&self, args: &[&str]) -> Result<Output> {
        let mut cmd = Command::new(bin("node"));
        cmd.arg("--repo")
            .arg(&self.repo)
            .args(args)
            .env_remove("SENSORNET_API");
        output_within(&mut cmd, CLI_TIMEOUT, &format!("`node {}`", args.join(" ")))
            .map_err(|e| anyhow!("{e:#}\nlog of {}:\n{}", self.name, self.log_text()))
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
            // Not `eprintln!`: it panics when stderr is a closed pipe (a run piped into
            // `head`), and a second panic while unwinding aborts the test process, leaving the
            // daemons not dropped yet running.
            let _ = writeln!(
                std::io::stderr(),
                "----- log of {} -----\n{}",
                self.name,
                self.log_text()
            );
        }
    }
}

/// A pubsub topic as Kubo's RPC takes it since 0.11: multibase base64url.
pub fn multibase_topic(topic: &str) -> String {
    multibase::encode(multibase::Base::Base64Url, topic)
}

/// The payload of a `pubsub/sub` message.
pub fn pubsub_data(msg: &Value) -> Result<Vec<u8>> {
    let text = msg["data"].as_str().context("a pubsub message has data")?;
    Ok(multibase::decode(text)?.1)
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

/// The lines a process writes, read on a thread into a channel, so that every wait for one
/// has a deadline (a silent or hung process gives an error, not a hung test).
pub struct LineReader {
    what: String,
    rx: Receiver<std::io::Result<String>>,
    seen: Vec<String>,
}

impl LineReader {
    /// Reads the lines of `r` (a child's stdout, say); `what` names it in errors.
    pub fn new(what: impl Into<String>, r: impl Read + Send + 'static) -> LineReader {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines() {
                let stop = line.is_err();
                if tx.send(line).is_err() || stop {
                    return;
                }
            }
        });
        LineReader {
            what: what.into(),
            rx,
            seen: Vec::new(),
        }
    }

    /// Takes the stdout of `child` (which must be piped).
    pub fn stdout_of(what: impl Into<String>, child: &mut Child) -> LineReader {
        let out = child.stdout.take().expect("the child's stdout is piped");
        LineReader::new(what, out)
    }

    /// The next line, or an error when none comes within `timeout` or the output ends.
    pub fn next_line(&mut self, timeout: Duration) -> Result<String> {
        self.next_line_for(timeout, "the next line")
    }

    fn next_line_for(&mut self, timeout: Duration, awaited: &str) -> Result<String> {
        match self.rx.recv_timeout(timeout) {
            Ok(Ok(line)) => {
                self.seen.push(line.clone());
                Ok(line)
            }
            Ok(Err(e)) => bail!(
                "reading {} while waiting for {awaited}: {e}; {}",
                self.what,
                self.so_far()
            ),
            Err(RecvTimeoutError::Timeout) => bail!(
                "timed out after {timeout:?} waiting for {awaited} from {}; {}",
                self.what,
                self.so_far()
            ),
            Err(RecvTimeoutError::Disconnected) => bail!(
                "{} ended its output while we waited for {awaited}; {}",
                self.what,
                self.so_far()
            ),
        }
    }

    /// Skips lines until one satisfies `pred` and returns it; `timeout` bounds the whole wait,
    /// `awaited` says in the error what was awaited.
    pub fn wait_for_line(
        &mut self,
        timeout: Duration,
        awaited: &str,
        mut pred: impl FnMut(&str) -> bool,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .next_line_for(left, awaited)
                .with_context(|| format!("(within {timeout:?})"))?;
            if pred(&line) {
                return Ok(line);
            }
        }
    }

    /// The remaining lines up to the end of the output, which must come within `timeout`.
    pub fn rest(&mut self, timeout: Duration) -> Result<Vec<String>> {
        let deadline = Instant::now() + timeout;
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Ok(line)) => {
                    self.seen.push(line.clone());
                    lines.push(line);
                }
                Ok(Err(e)) => bail!("reading {}: {e}; {}", self.what, self.so_far()),
                Err(RecvTimeoutError::Disconnected) => return Ok(lines),
                Err(RecvTimeoutError::Timeout) => bail!(
                    "timed out after {timeout:?} waiting for the end of {}'s output; {}",
                    self.what,
                    self.so_far()
                ),
            }
        }
    }

    /// Every line read so far.
    pub fn seen(&self) -> &[String] {
        &self.seen
    }

    fn so_far(&self) -> String {
        if self.seen.is_empty() {
            "it printed nothing before".to_string()
        } else {
            format!("its lines so far:\n{}", self.seen.join("\n"))
        }
    }
}

/// A child process killed (and reaped) when dropped, so a failing test leaves none behind.
pub struct KillOnDrop(pub Child);

impl KillOnDrop {
    /// Waits for the exit within `timeout` and collects the output not taken yet (see
    /// [`wait_output`]).
    pub fn wait_output(mut self, timeout: Duration, what: &str) -> Result<Output> {
        wait_output(&mut self.0, timeout, what)
    }
}

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Reads `r` to its end on a thread; the buffer fills as bytes come, the receiver hears
/// of the end.
fn read_all_on_thread(
    r: Option<impl Read + Send + 'static>,
) -> (Arc<Mutex<Vec<u8>>>, Receiver<()>) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    match r {
        Some(mut r) => {
            let buf = buf.clone();
            std::thread::spawn(move || {
                let mut chunk = [0u8; 8192];
                while let Ok(n @ 1..) = r.read(&mut chunk) {
                    buf.lock().unwrap().extend_from_slice(&chunk[..n]);
                }
                let _ = tx.send(());
            });
        }
        None => {
            let _ = tx.send(());
        }
    }
    (buf, rx)
}

/// Waits for `child` to exit within `timeout` and returns its status and the stdout and
/// stderr it still has piped (empty when not piped or taken). On timeout the child is killed
/// and the error shows `what` and the output so far.
pub fn wait_output(child: &mut Child, timeout: Duration, what: &str) -> Result<Output> {
    let out = read_all_on_thread(child.stdout.take());
    let err = read_all_on_thread(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child
            .try_wait()
            .with_context(|| format!("waiting for {what}"))?
        {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // The pipes end with the process (a grandchild holding them open delays that).
    let grace = Instant::now() + Duration::from_secs(2);
    for (_, done) in [&out, &err] {
        let _ = done.recv_timeout(grace.saturating_duration_since(Instant::now()));
    }
    let stdout = std::mem::take(&mut *out.0.lock().unwrap());
    let stderr = std::mem::take(&mut *err.0.lock().unwrap());
    match status {
        Some(status) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        None => bail!(
            "{what} did not exit within {timeout:?} and was killed; stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        ),
    }
}

/// `cmd.output()` with a deadline: stdout and stderr are piped (stdin is null unless set);
/// the process is killed after `timeout`, which is an error showing its output so far.
pub fn output_within(cmd: &mut Command, timeout: Duration, what: &str) -> Result<Output> {
    let mut child = KillOnDrop(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawning {what}"))?,
    );
    wait_output(&mut child, timeout, what)
}

/// [`output_within`] as a method of [`Command`], named in errors by its program and arguments.
pub trait CommandExt {
    /// `self.output()` with a deadline (see [`output_within`]).
    fn output_within(&mut self, timeout: Duration) -> Result<Output>;
}

impl CommandExt for Command {
    fn output_within(&mut self, timeout: Duration) -> Result<Output> {
        let what = std::iter::once(self.get_program())
            .chain(self.get_args())
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        output_within(self, timeout, &format!("`{what}`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_line_times_out_on_a_silent_process() {
        let mut child = KillOnDrop(
            Command::new("sleep")
                .arg("5")
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut lines = LineReader::stdout_of("sleep 5", &mut child);
        let t0 = Instant::now();
        let err = lines.next_line(Duration::from_millis(300)).unwrap_err();
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(2),
            "{took:?}"
        );
        let msg = format!("{err:#}");
        assert!(
            msg.contains("timed out") && msg.contains("sleep 5"),
            "{msg}"
        );
        let err = lines
            .wait_for_line(Duration::from_millis(200), "a greeting", |_| true)
            .unwrap_err();
        assert!(format!("{err:#}").contains("a greeting"), "{err:#}");
    }

    #[test]
    fn next_line_returns_the_lines_then_reports_the_end() {
        let mut child = KillOnDrop(
            Command::new("printf")
                .arg("a\\nb\\n")
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut lines = LineReader::stdout_of("printf", &mut child);
        assert_eq!(lines.next_line(Duration::from_secs(5)).unwrap(), "a");
        assert_eq!(lines.next_line(Duration::from_secs(5)).unwrap(), "b");
        let err = lines.next_line(Duration::from_secs(5)).unwrap_err();
        assert!(format!("{err:#}").contains("ended its output"), "{err:#}");
        assert_eq!(lines.seen(), ["a", "b"]);
    }

    #[test]
    fn a_daemon_that_exits_at_start_is_an_error_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Instant::now();
        let err = Daemon::start(
            dir.path(),
            "bad",
            Opts {
                extra: vec!["--no-such-flag".into()],
                ..Opts::default()
            },
        )
        .err()
        .expect("a daemon with an unknown flag does not start");
        assert!(t0.elapsed() < START_TIMEOUT, "{:?}", t0.elapsed());
        let msg = format!("{err:#}");
        assert!(
            msg.contains("bad exited") && msg.contains("no-such-flag"),
            "{msg}"
        );
    }

    #[test]
    fn output_within_kills_a_process_that_overstays() {
        let t0 = Instant::now();
        let err = output_within(
            Command::new("sh").args(["-c", "echo started; exec sleep 5"]),
            Duration::from_millis(300),
            "a sleeper",
        )
        .unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
        let msg = format!("{err:#}");
        assert!(
            msg.contains("a sleeper") && msg.contains("started"),
            "{msg}"
        );
        let out = output_within(
            Command::new("sh").args(["-c", "echo hi"]),
            Duration::from_secs(5),
            "echo",
        )
        .unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, b"hi\n");
    }
}
