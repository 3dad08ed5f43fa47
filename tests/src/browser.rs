//! A real headless Chromium (Debian's `chromium`, scripts/install-chromium.sh) driven over
//! the DevTools protocol through `--remote-debugging-pipe`: no WebSocket client needed. A
//! shell moves the child's stdin/stdout to fds 3/4, where Chromium reads commands and writes
//! answers, each a JSON message ended by a NUL byte.

use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use crate::KillOnDrop;

/// Whether `chromium` is on PATH.
pub fn available() -> bool {
    Command::new("sh")
        .args(["-c", "command -v chromium"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// One browser with one page.
pub struct Browser {
    _child: KillOnDrop,
    stdin: ChildStdin,
    answers: Receiver<Value>,
    next_id: u64,
    session: String,
    /// Console messages, exceptions and log entries (errors and warnings) seen so far.
    pub problems: Arc<Mutex<Vec<String>>>,
    /// Every URL the page requested.
    pub requests: Arc<Mutex<Vec<String>>>,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium with a page of `width`×`height` CSS pixels at about:blank.
    pub fn start(width: u32, height: u32) -> Result<Browser> {
        let profile = tempfile::tempdir()?;
        let script = format!(
            "exec 3<&0 4>&1 </dev/null >/dev/null; exec chromium --headless --no-sandbox --disable-gpu \
             --no-first-run --no-default-browser-check --disable-extensions --disable-background-networking \
             --disable-component-update --disable-sync --metrics-recording-only --remote-debugging-pipe \
             --user-data-dir={} --window-size={width},{height} about:blank",
            profile.path().display()
        );
        let mut child = KillOnDrop(
            Command::new("sh")
                .args(["-c", &script])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .context("starting chromium (run scripts/install-chromium.sh)")?,
        );
        let stdin = child.stdin.take().context("chromium stdin")?;
        let stdout = child.stdout.take().context("chromium stdout")?;
        let (tx, answers) = mpsc::channel();
        let problems: Arc<Mutex<Vec<String>>> = Default::default();
        let requests: Arc<Mutex<Vec<String>>> = Default::default();
        let (p, r) = (problems.clone(), requests.clone());
        std::thread::spawn(move || {
            let mut rd = BufReader::new(stdout);
            let mut buf = Vec::new();
            while rd.read_until(0, &mut buf).is_ok_and(|n| n > 0) {
                buf.pop();
                if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
                    note_event(&v, &p, &r);
                    if v.get("id").is_some() && tx.send(v).is_err() {
                        return;
                    }
                }
                buf.clear();
            }
        });
        let mut b = Browser {
            _child: child,
            stdin,
            answers,
            next_id: 0,
            session: String::new(),
            problems,
            requests,
            _profile: profile,
        };
        let target = b.call("Target.createTarget", json!({"url": "about:blank"}))?;
        let target_id = target["targetId"].as_str().context("targetId")?.to_string();
        let attached = b.call(
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        )?;
        b.session = attached["sessionId"]
            .as_str()
            .context("sessionId")?
            .to_string();
        for m in [
            "Runtime.enable",
            "Log.enable",
            "Network.enable",
            "Page.enable",
        ] {
            b.call(m, json!({}))?;
        }
        b.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 700}),
        )?;
        Ok(b)
    }

    /// Sends one command (to the page once attached) and waits for its answer.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&msg)?;
        bytes.push(0);
        self.stdin
            .write_all(&bytes)
            .and_then(|_| self.stdin.flush())
            .with_context(|| format!("sending {method} to chromium"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self
                .answers
                .recv_timeout(left)
                .map_err(|_| anyhow!("chromium did not answer {method} within 30 s"))?;
            if v["id"].as_u64() == Some(id) {
                if let Some(e) = v.get("error") {
                    bail!("{method}: {e}");
                }
                return Ok(v["result"].clone());
            }
        }
    }

    /// Loads a URL.
    pub fn goto(&mut self, url: &str) -> Result<()> {
        self.call("Page.navigate", json!({"url": url}))?;
        Ok(())
    }

    /// Evaluates a JavaScript expression in the page and returns its value.
    pub fn eval(&mut self, expr: &str) -> Result<Value> {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        )?;
        if let Some(e) = r.get("exceptionDetails") {
            bail!("{expr}: {e}");
        }
        Ok(r["result"]["value"].clone())
    }

    /// Polls `expr` until it is truthy (an exception counts as not yet: the page may still
    /// be loading).
    pub fn wait_for(&mut self, timeout: Duration, what: &str, expr: &str) -> Result<Value> {
        let start = Instant::now();
        let guarded =
            format!("(() => {{ try {{ return ({expr}); }} catch (_) {{ return null; }} }})()");
        loop {
            let v = self.eval(&guarded)?;
            if !(v.is_null() || v == json!(false) || v == json!("") || v == json!(0)) {
                return Ok(v);
            }
            if start.elapsed() > timeout {
                bail!(
                    "timed out after {timeout:?} waiting for {what}; page problems: {:?}",
                    self.problems.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A PNG of the page (the whole document height).
    pub fn screenshot(&mut self) -> Result<Vec<u8>> {
        use base64::Engine;
        let r = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        )?;
        let data = r["data"].as_str().context("screenshot data")?;
        Ok(base64::engine::general_purpose::STANDARD.decode(data)?)
    }
}

/// Records console errors and warnings, exceptions, log entries and requested URLs.
fn note_event(v: &Value, problems: &Mutex<Vec<String>>, requests: &Mutex<Vec<String>>) {
    let p = &v["params"];
    match v["method"].as_str() {
        Some("Runtime.consoleAPICalled")
            if matches!(p["type"].as_str(), Some("error" | "warning" | "assert")) =>
        {
            problems
                .lock()
                .unwrap()
                .push(format!("console.{}: {}", p["type"], p["args"]));
        }
        Some("Runtime.exceptionThrown") => {
            problems
                .lock()
                .unwrap()
                .push(format!("exception: {}", p["exceptionDetails"]));
        }
        Some("Log.entryAdded")
            if matches!(p["entry"]["level"].as_str(), Some("error" | "warning")) =>
        {
            problems
                .lock()
                .unwrap()
                .push(format!("log: {}", p["entry"]));
        }
        Some("Network.requestWillBeSent") => {
            if let Some(u) = p["request"]["url"].as_str() {
                requests.lock().unwrap().push(u.to_string());
            }
        }
        _ => {}
    }
}
