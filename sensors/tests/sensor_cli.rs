//! The `sensor` binary against a fake node (a tiny HTTP server that answers `reading/pub` as
//! scripted): buffering through outages and its own restarts, delivery order, refused
//! readings, CSV replay, a wrong token and bad flags.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One `reading/pub` request: its query arguments.
type Request = HashMap<String, String>;

#[derive(Default)]
struct State {
    /// Every request, answered or not.
    attempts: Vec<Request>,
    /// Requests answered 200.
    stored: Vec<Request>,
    /// Statuses for the next requests; 200 when empty.
    script: VecDeque<u16>,
    /// Required bearer token.
    token: Option<String>,
}

struct FakeNode {
    addr: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn answer(stream: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut auth = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("authorization") {
                auth = Some(v.trim().to_string());
            }
        }
    }
    let target = request_line.split(' ').nth(1).unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let args: Request = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let (status, body) = {
        let mut s = state.lock().unwrap();
        s.attempts.push(args.clone());
        let expected = s.token.as_ref().map(|t| format!("Bearer {t}"));
        if path != "/api/v0/reading/pub" {
            (404, "404 page not found".to_string())
        } else if expected.is_some() && auth != expected {
            (
                401,
                r#"{"Message":"this API requires a token","Code":4,"Type":"error"}"#.into(),
            )
        } else {
            match s.script.pop_front().unwrap_or(200) {
                200 => {
                    s.stored.push(args.clone());
                    let seq = s.stored.len();
                    (200, format!(r#"{{"Cid":"bafyfake{seq}","Seq":{seq}}}"#))
                }
                code => (
                    code,
                    format!(r#"{{"Message":"scripted {code}","Code":1,"Type":"error"}}"#),
                ),
            }
        }
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

impl FakeNode {
    fn start(addr: &str) -> FakeNode {
        let listener = TcpListener::bind(addr).expect("bind the fake node");
        let addr = listener.local_addr().unwrap().to_string();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(c) = conn {
                    let _ = answer(c, &st);
                }
            }
        });
        FakeNode {
            addr,
            state,
            stop,
            thread: Some(thread),
        }
    }

    fn stored(&self) -> Vec<Request> {
        self.state.lock().unwrap().stored.clone()
    }

    fn attempts(&self) -> Vec<Request> {
        self.state.lock().unwrap().attempts.clone()
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An address nothing listens on (yet).
fn free_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

fn sensor(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sensor"));
    c.args(args)
        .env_remove("SENSORNET_API")
        .env_remove("SENSORNET_API_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Waits for the child, killing it after `limit` (a hung sensor fails the test, not CI).
fn finish(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "sensor still running after {limit:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn terminate(child: Child) -> Output {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    finish(child, Duration::from_secs(10))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn times(rs: &[Request]) -> Vec<u64> {
    rs.iter().map(|r| r["time"].parse().unwrap()).collect()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Readings waiting in a buffer directory (its sensor must have exited: the buffer is locked).
fn buffered(dir: &Path) -> usize {
    sensornet_sensors::buffer::DiskBuffer::open(dir, usize::MAX)
        .unwrap()
        .len()
}

#[test]
fn buffers_while_the_node_is_away_and_delivers_in_order_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let buf = dir.path().join("buf");
    let addr = free_addr();
    let base = [
        "--kind",
        "temperature",
        "--source",
        "sim:1",
        "--interval",
        "20ms",
        "--id",
        "t-1",
        "--api",
        &addr,
    ];

    // No node: readings pile up on disk; SIGTERM stops it cleanly.
    let a = sensor(&base).arg("--buffer-dir").arg(&buf).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let out = terminate(a);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("buffering on disk"), "{err}");
    assert!(err.contains("stay buffered"), "{err}");
    let waiting = buffered(&buf);
    assert!(
        waiting >= 10,
        "{waiting} readings buffered in 700 ms at 20 ms"
    );

    // The node comes up; a new sensor process sends the old readings first, then new ones.
    let node = FakeNode::start(&addr);
    let restarted_at = now_ms();
    let want = waiting + 20;
    let b = sensor(&base)
        .arg("--buffer-dir")
        .arg(&buf)
        .args(["--count", &want.to_string()])
        .spawn()
        .unwrap();
    let out = finish(b, Duration::from_secs(30));
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains(&format!("{waiting} waiting")), "{err}");
    let stored = node.stored();
    assert_eq!(stored.len(), want, "exactly --count readings");
    let ts = times(&stored);
    assert!(
        ts.windows(2).all(|w| w[0] < w[1]),
        "in order, no repeats: {ts:?}"
    );
    assert!(
        ts[..waiting].iter().all(|t| *t < restarted_at),
        "backlog first"
    );
    assert!(
        ts[waiting..].iter().all(|t| *t >= restarted_at),
        "then new ones"
    );
    for r in &stored {
        assert_eq!(
            (
                r["topic"].as_str(),
                r["unit"].as_str(),
                r["source"].as_str()
            ),
            ("temperature", "°C", "t-1")
        );
        let v: f64 = r["value"].parse().unwrap();
        assert!((-60.0..=60.0).contains(&v));
        assert!(!r.contains_key("aqi"));
    }
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), want, "one line per delivered reading");
    assert!(lines[0].contains(" temperature t-1 ") && lines[0].contains(" °C seq=1 cid=bafyfake1"));
}

#[test]
fn refused_readings_are_dropped_and_failures_retried_without_reordering() {
    let node = FakeNode::start("127.0.0.1:0");
    node.state
        .lock()
        .unwrap()
        .script
        .extend([200, 400, 503, 500, 200]);
    let dir = tempfile::tempdir().unwrap();
    let out = finish(
        sensor(&[
            "--kind",
            "air-quality",
            "--source",
            "sim:2",
            "--interval",
            "20ms",
            "--count",
            "6",
            "--quiet",
            "--api",
            &node.addr,
        ])
        .arg("--buffer-dir")
        .arg(dir.path())
        .spawn()
        .unwrap(),
        Duration::from_secs(30),
    );
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(text(&out.stdout).is_empty(), "--quiet");
    assert!(err.contains("HTTP 400: scripted 400; dropping it"), "{err}");
    assert!(err.contains("HTTP 503: scripted 503"), "{err}");
    let attempts = times(&node.attempts());
    let stored = times(&node.stored());
    assert_eq!(stored.len(), 6);
    assert!(stored.windows(2).all(|w| w[0] < w[1]), "{stored:?}");
    // The refused reading was sent once and dropped; the next one survived two failures.
    assert!(!stored.contains(&attempts[1]));
    assert_eq!(&attempts[2..5], &[attempts[2]; 3], "{attempts:?}");
    assert_eq!(stored[1], attempts[2]);
    for r in node.stored() {
        let pm: f64 = r["value"].parse().unwrap();
        let aqi: u16 = r["aqi"].parse().unwrap();
        assert_eq!(Some(aqi), sensornet_sensors::pm25_to_aqi(pm));
        assert_eq!(r["unit"], "µg/m³");
    }
}

#[test]
fn a_full_buffer_drops_the_oldest_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = terminate({
        let c = sensor(&[
            "--kind",
            "humidity",
            "--interval",
            "10ms",
            "--buffer-max",
            "5",
            "--api",
            &free_addr(),
        ])
        .arg("--buffer-dir")
        .arg(dir.path())
        .spawn()
        .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        c
    });
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("buffer full (5 readings)"), "{err}");
    assert_eq!(buffered(dir.path()), 5, "the bound holds on disk");
    assert!(err.contains("5 still buffered"), "{err}");
}

#[test]
fn csv_replay_delivers_the_file_with_its_times_then_stops() {
    let node = FakeNode::start("127.0.0.1:0");
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("pm.csv");
    std::fs::write(
        &csv,
        "time,value\n\
         2026-01-01T08:00:00Z,9.0\n\
         2026-01-01T08:01:00Z,35.5\n\
         2026-01-01T08:02:00Z,\n\
         1767254580000,12\n",
    )
    .unwrap();
    let out = finish(
        sensor(&[
            "--kind",
            "air-quality",
            "--interval",
            "10ms",
            "--api",
            &node.addr,
        ])
        .arg("--source")
        .arg(format!("csv:{}", csv.display()))
        .arg("--buffer-dir")
        .arg(dir.path().join("buf"))
        .spawn()
        .unwrap(),
        Duration::from_secs(20),
    );
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("replay finished"), "{err}");
    let got: Vec<(String, String, String)> = node
        .stored()
        .iter()
        .map(|r| (r["time"].clone(), r["value"].clone(), r["aqi"].clone()))
        .collect();
    let want = [
        ("1767254400000", "9", "50"),
        ("1767254460000", "35.5", "101"),
        ("1767254580000", "12", "56"),
    ];
    assert_eq!(
        got,
        want.map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    );
    assert!(text(&out.stdout).contains("aqi=101 (Unhealthy for Sensitive Groups)"));
}

#[test]
fn a_bad_source_fails_at_start_with_the_line_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("readings.csv");
    std::fs::write(&csv, "time,value\n1767225600000,20\n1767225660000,abc\n").unwrap();
    let out = finish(
        sensor(&["--kind", "temperature", "--api", &free_addr()])
            .arg("--source")
            .arg(format!("csv:{}", csv.display()))
            .arg("--buffer-dir")
            .arg(dir.path().join("buf"))
            .spawn()
            .unwrap(),
        Duration::from_secs(10),
    );
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("readings.csv line 3: value \"abc\" is not a number"),
        "{err}"
    );
    for (args, want) in [
        (
            vec!["--kind", "pressure"],
            "unknown sensor kind \"pressure\"",
        ),
        (
            vec!["--kind", "temp", "--source", "radio"],
            "use sim, sim:SEED",
        ),
        (
            vec!["--kind", "temp", "--source", "sim:1", "--seed", "2"],
            "contradicts",
        ),
        (vec!["--kind", "temp", "--api", "5001"], "use HOST:PORT"),
        (
            vec!["--kind", "temp", "--interval", "soon"],
            "use e.g. 500ms",
        ),
    ] {
        let out = finish(
            sensor(&args)
                .arg("--buffer-dir")
                .arg(dir.path().join("buf"))
                .spawn()
                .unwrap(),
            Duration::from_secs(10),
        );
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn a_wrong_token_stops_the_sensor_but_keeps_the_readings() {
    let node = FakeNode::start("127.0.0.1:0");
    node.state.lock().unwrap().token = Some("s3cret".into());
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        finish(
            sensor(&[
                "--kind",
                "humidity",
                "--source",
                "sim:4",
                "--interval",
                "20ms",
                "--api",
                &format!("http://{}", node.addr),
            ])
            .args(extra)
            .arg("--buffer-dir")
            .arg(dir.path())
            .spawn()
            .unwrap(),
            Duration::from_secs(20),
        )
    };
    let out = run(&[]);
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("refused the API token (HTTP 401"), "{err}");
    assert!(err.contains("--api-token"), "{err}");
    let first = times(&node.attempts())[0];
    assert!(buffered(dir.path()) >= 1);

    let out = run(&["--api-token", "s3cret", "--count", "3"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        times(&node.stored())[0],
        first,
        "the refused-token reading went first"
    );
}
