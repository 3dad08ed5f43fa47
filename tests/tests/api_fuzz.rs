//! Garbage on the API: random routes, methods, query strings, bodies, huge bodies and a slow
//! client. Every answer is a 2xx or an error in Kubo's shape, the node never falls over and its
//! memory stays bounded. SENSORNET_SLOW=1 runs 25x more requests.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use sensornet_tests::{http, CommandExt, Daemon, Opts};

/// A small deterministic PRNG (xorshift), so a failing case can be replayed from its seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// Up to `max` random bytes.
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max.max(1));
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
}

const ROUTES: [&str; 19] = [
    "id",
    "version",
    "swarm/peers",
    "swarm/connect",
    "pubsub/pub",
    "pubsub/ls",
    "pubsub/peers",
    "block/get",
    "block/put",
    "block/stat",
    "dag/get",
    "dag/put",
    "reading/pub",
    "reading/history",
    "reading/heads",
    "nope",
    "../../etc/passwd",
    "block",
    "pubsub/sub/extra",
];
const KEYS: [&str; 12] = [
    "arg",
    "topic",
    "value",
    "unit",
    "source",
    "time",
    "aqi",
    "since",
    "limit",
    "cid-codec",
    "output-codec",
    "store-codec",
];
const VALUES: [&str; 16] = [
    "",
    "u",
    "udGVtcA",
    "!!",
    "bafyreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zu",
    "bafy",
    "temp",
    "NaN",
    "1e309",
    "-1",
    "99999999999999999999",
    "%00",
    "/ip4/127.0.0.1/tcp/1",
    "dag-json",
    "raw",
    "10m",
];

#[test]
fn random_requests_get_4xx_in_kubo_shape_and_never_break_the_node() {
    let slow = std::env::var("SENSORNET_SLOW").is_ok_and(|v| v == "1");
    let n = if slow { 50_000 } else { 2_000 };
    let dir = tempfile::tempdir().unwrap();
    let node = Daemon::start(dir.path(), "fuzz", Opts::default()).unwrap();
    let client = http();
    let base = format!("http://{}/api/v0/", node.api);

    // A slow client holds a half-sent request open throughout.
    let mut slowloris = TcpStream::connect(&node.api).unwrap();
    slowloris
        .write_all(b"POST /api/v0/id HTTP/1.1\r\nHost: x\r\n")
        .unwrap();

    let seed = 0x5eed_0000_u64 + n as u64;
    let mut rng = Rng(seed);
    let mut statuses = std::collections::BTreeMap::new();
    let start = Instant::now();
    for i in 0..n {
        let route = rng.pick(&ROUTES);
        let mut q = String::new();
        for _ in 0..rng.below(4) {
            let v = if rng.below(4) == 0 {
                let raw = rng.bytes(40);
                form_urlencoded::byte_serialize(&raw).collect::<String>()
            } else {
                rng.pick(&VALUES).to_string()
            };
            q.push_str(&format!("{}={}&", rng.pick(&KEYS), v));
        }
        let url = format!("{base}{route}?{q}");
        let method = ["POST", "POST", "POST", "GET", "PUT", "DELETE"][rng.below(6)];
        let mut req = client.request(method.parse().unwrap(), &url);
        let choice = rng.below(5);
        let huge = choice == 3 && i % 50 == 0;
        req = match choice {
            0 => req.body(rng.bytes(2048)),
            1 => req
                .header("content-type", "multipart/form-data; boundary=xyz")
                .body(rng.bytes(512)),
            2 => {
                let part = reqwest::blocking::multipart::Part::bytes(rng.bytes(4096));
                req.multipart(reqwest::blocking::multipart::Form::new().part("file", part))
            }
            3 if huge => req.body(vec![b'x'; 3 << 20]),
            _ => req,
        };
        let has_body = choice <= 2 || huge;
        // The server may close a kept-alive connection after answering a request whose body it
        // did not read; a client retries once on a new connection, as HTTP clients do.
        let retry = req.try_clone();
        let resp = match (req.send(), retry) {
            (Err(_), Some(again)) => again.send(),
            (first, _) => first,
        };
        let resp = match resp {
            Ok(r) => r,
            // An oversized upload may be answered and closed before the client finished
            // sending it; reqwest then reports a send error (curl, below, reads the answer).
            Err(_) if huge => {
                *statuses.entry(0).or_insert(0u32) += 1;
                continue;
            }
            // The same race for any body the server answers without reading (a wrong method,
            // say): acceptable only if the node still answers the next request.
            Err(_) if has_body => {
                let alive = client.post(format!("{base}version")).send();
                assert!(
                    alive.is_ok_and(|r| r.status().is_success()),
                    "seed {seed} request {i} {method} {url}: the node stopped answering"
                );
                *statuses.entry(0).or_insert(0u32) += 1;
                continue;
            }
            Err(e) => panic!("seed {seed} request {i} {method} {url}: connection failed: {e}"),
        };
        let status = resp.status().as_u16();
        *statuses.entry(status).or_insert(0u32) += 1;
        let body = resp.text().unwrap_or_default();
        if status >= 400 {
            let v: serde_json::Value = serde_json::from_str(&body)
                .unwrap_or_else(|_| panic!("seed {seed} request {i} {method} {url}: {status} is not in Kubo's error shape: {body:?}"));
            assert_eq!(v["Type"], "error", "{url}");
            assert!(
                v["Message"].as_str().is_some_and(|m| !m.is_empty()),
                "{url}"
            );
        }
        if status >= 500 {
            // The node's own failures are allowed only where Kubo has them too: a CID that is not
            // here, a peer that cannot be dialed.
            assert!(
                ["block/get", "block/stat", "dag/get", "swarm/connect"].contains(&route),
                "seed {seed} request {i}: {status} on {method} {url}: {body}"
            );
        }
    }
    // A body over the limit is a 413 that says so.
    // (curl reads the answer even though the server stops reading the upload early.)
    let big = dir.path().join("big.bin");
    std::fs::write(&big, vec![0u8; 3 << 20]).unwrap();
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-m",
            "60",
            "-w",
            "\n%{http_code}",
            "-X",
            "POST",
            &format!("{base}dag/put"),
            "-F",
        ])
        .arg(format!("file=@{}", big.display()))
        .output_within(Duration::from_secs(90))
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, code) = text.rsplit_once('\n').unwrap();
    assert_eq!(code, "413", "{text}");
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert!(v["Message"].as_str().unwrap().contains("limit"), "{body}");
    // The slow client did not block anyone, and the node is healthy and small.
    let mut buf = [0u8; 1];
    slowloris
        .set_read_timeout(Some(Duration::from_millis(10)))
        .unwrap();
    let _ = slowloris.read(&mut buf);
    assert!(matches!(node.get_metrics("/healthz"), Ok((200, _))));
    let v = node.post_json("id").unwrap();
    assert_eq!(v["ID"], node.peer_id.as_str());
    let (_, m) = node.get_metrics("/metrics").unwrap();
    let rss: f64 = m
        .lines()
        .find(|l| l.starts_with("process_resident_memory_bytes "))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(rss < 200e6, "RSS {rss}");
    let dropped = statuses.get(&0).copied().unwrap_or(0) as usize;
    assert!(dropped * 20 < n, "{dropped} of {n} requests got no answer");
    println!(
        "{n} fuzzed requests in {:?}, statuses {statuses:?}, RSS {:.1} MB",
        start.elapsed(),
        rss / 1e6
    );
}
