//! The node's HTTP API as the standalone sensor uses it: where the API is (HOST:PORT, a
//! multiaddr or an http:// URL), the reading as buffered and posted to
//! `/api/v0/reading/pub`, and each answer sorted into delivered, refused (drop it), retry
//! later (keep it) or misconfigured (stop).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::kind::SensorKind;
use crate::source::Sample;

/// Where a node's API listens, as an `http://host:port` base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiAddr(String);

/// An API address that is none of the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad API address {given:?}: {why}; use HOST:PORT (127.0.0.1:5001), a multiaddr (/ip4/127.0.0.1/tcp/5001) or http://HOST:PORT")]
pub struct ApiAddrError {
    given: String,
    why: String,
}

impl FromStr for ApiAddr {
    type Err = ApiAddrError;

    /// Accepts `HOST:PORT`, `[v6]:PORT`, `/ip4|ip6|dns|dns4|dns6/HOST/tcp/PORT` (the form in
    /// the node repo's `api` file) and `http://HOST:PORT[/]`.
    fn from_str(s: &str) -> Result<Self, ApiAddrError> {
        let bad = |why: &str| ApiAddrError {
            given: s.to_string(),
            why: why.to_string(),
        };
        let s = s.trim();
        let port_ok = |p: &str| p.parse::<u16>().is_ok_and(|p| p != 0);
        if s.starts_with('/') {
            let parts: Vec<&str> = s.split('/').skip(1).collect();
            let [proto, host, "tcp", port, rest @ ..] = parts.as_slice() else {
                return Err(bad("a multiaddr needs /PROTO/HOST/tcp/PORT"));
            };
            if !rest.iter().all(|r| r.is_empty() || *r == "http") {
                return Err(bad("only plain http APIs are supported"));
            }
            if !port_ok(port) {
                return Err(bad("the port is not a number from 1 to 65535"));
            }
            return match *proto {
                "ip4" | "dns" | "dns4" | "dns6" => Ok(ApiAddr(format!("http://{host}:{port}"))),
                "ip6" => Ok(ApiAddr(format!("http://[{host}]:{port}"))),
                _ => Err(bad(
                    "the multiaddr must start with ip4, ip6, dns, dns4 or dns6",
                )),
            };
        }
        if s.starts_with("https://") {
            return Err(bad("this build speaks plain http only; put the node's API on http (a token protects it) or reach it through a local proxy"));
        }
        let hostport = s.strip_prefix("http://").unwrap_or(s).trim_end_matches('/');
        if hostport.contains('/') || hostport.contains('?') {
            return Err(bad("give the address only, without a path"));
        }
        let Some((host, port)) = hostport.rsplit_once(':') else {
            return Err(bad("the port is missing"));
        };
        if host.is_empty() || (host.contains(':') && !host.starts_with('[')) {
            return Err(bad(
                "the host is missing (IPv6 goes in brackets: [::1]:5001)",
            ));
        }
        if !port_ok(port) {
            return Err(bad("the port is not a number from 1 to 65535"));
        }
        Ok(ApiAddr(format!("http://{host}:{port}")))
    }
}

impl fmt::Display for ApiAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.trim_start_matches("http://"))
    }
}

/// A reading on its way to a node: what the buffer holds (one JSON line each) and what
/// `reading/pub` gets as query arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingReading {
    /// The topic (the kind's).
    pub topic: String,
    /// The value.
    pub value: f64,
    /// Its unit.
    pub unit: String,
    /// The sensor id.
    pub source: String,
    /// Measurement time, unix ms: kept through the buffer, so late readings keep their time.
    pub time: u64,
    /// US EPA AQI, for air quality.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aqi: Option<u16>,
}

impl PendingReading {
    /// The reading of `sample` from sensor `source`.
    pub fn new(kind: SensorKind, source: &str, sample: &Sample) -> PendingReading {
        PendingReading {
            topic: kind.topic().to_string(),
            value: sample.value,
            unit: kind.unit().to_string(),
            source: source.to_string(),
            time: sample.time_ms,
            aqi: sample.aqi,
        }
    }

    /// The buffer's form: one line of JSON.
    pub fn to_line(&self) -> String {
        // Strings and numbers only: serde_json cannot fail on it (and escapes line breaks).
        serde_json::to_string(self).expect("a PendingReading always encodes")
    }

    /// The `reading/pub` query string.
    pub fn query(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("topic", &self.topic)
            .append_pair("value", &self.value.to_string())
            .append_pair("unit", &self.unit)
            .append_pair("source", &self.source)
            .append_pair("time", &self.time.to_string());
        if let Some(aqi) = self.aqi {
            q.append_pair("aqi", &aqi.to_string());
        }
        q.finish()
    }
}

/// The node's receipt for a reading.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Ack {
    /// The reading block's CID.
    pub cid: String,
    /// Its sequence number in the source's chain.
    pub seq: Option<u64>,
}

/// What became of one attempt to deliver a reading.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Stored by the node.
    Delivered(Ack),
    /// The node refused this reading as invalid (4xx): resending cannot help.
    Refused(String),
    /// The node is away, busy or failing (no connection, timeout, 5xx, 408, 429): keep the
    /// reading and try again later.
    Retry(String),
    /// Nothing will get through until someone fixes the setup (wrong token, not a node).
    Misconfigured(String),
}

/// A client of one node's `reading/pub`.
#[derive(Debug, Clone)]
pub struct NodeApi {
    http: reqwest::Client,
    addr: ApiAddr,
    token: Option<String>,
}

/// The client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the HTTP client: {0}; this is a bug or a broken TLS/DNS setup on the host")]
pub struct ClientBuildError(#[from] reqwest::Error);

/// The message of a Kubo-style error body, or the body itself, shortened for a log line.
fn message_of(body: &str) -> String {
    let msg = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["Message"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.trim().to_string());
    let mut short: String = msg.chars().take(300).collect();
    if short.len() < msg.len() {
        short.push('…');
    }
    short
}

/// An error with its causes, which reqwest keeps in `source()` (the useful "Connection
/// refused" is two levels down).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}

impl NodeApi {
    /// A client of the API at `addr`, sending `token` as a bearer token when given.
    /// `timeout` bounds each request; a node answers `reading/pub` once the block is on disk.
    pub fn new(
        addr: ApiAddr,
        token: Option<String>,
        timeout: Duration,
    ) -> Result<NodeApi, ClientBuildError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3).min(timeout))
            .timeout(timeout)
            // The node is local or in-cluster: a proxy from the environment would only be in
            // the way (and would see the token).
            .no_proxy()
            .build()?;
        Ok(NodeApi { http, addr, token })
    }

    /// Where it sends.
    pub fn addr(&self) -> &ApiAddr {
        &self.addr
    }

    /// Posts one reading and sorts the answer.
    pub async fn publish(&self, reading: &PendingReading) -> Outcome {
        let url = format!("{}/api/v0/reading/pub?{}", self.addr.0, reading.query());
        let mut req = self.http.post(url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            // Without the URL: the query repeats the reading, the log line says it already.
            Err(e) => return Outcome::Retry(chain(&e.without_url())),
        };
        let status = resp.status();
        let body = match resp.text().await {
            Ok(b) => b,
            Err(e) => {
                return Outcome::Retry(format!("HTTP {status}, then {}", chain(&e.without_url())))
            }
        };
        let code = status.as_u16();
        match code {
            200..=299 => {
                let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                Outcome::Delivered(Ack {
                    cid: v["Cid"].as_str().unwrap_or_default().to_string(),
                    seq: v["Seq"].as_u64(),
                })
            }
            401 | 403 => Outcome::Misconfigured(format!(
                "the node at {} refused the API token (HTTP {code}: {}); pass the node's token with --api-token or SENSORNET_API_TOKEN",
                self.addr,
                message_of(&body)
            )),
            404 | 405 | 501 => Outcome::Misconfigured(format!(
                "{} has no /api/v0/reading/pub (HTTP {code}); check that --api is a sensornet node's API address, not its metrics or swarm port",
                self.addr
            )),
            408 | 429 => Outcome::Retry(format!("HTTP {code}: {}", message_of(&body))),
            400..=499 => Outcome::Refused(format!("HTTP {code}: {}", message_of(&body))),
            _ => Outcome::Retry(format!("HTTP {code}: {}", message_of(&body))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_addresses() {
        for (given, url) in [
            ("127.0.0.1:5001", "http://127.0.0.1:5001"),
            ("localhost:5001", "http://localhost:5001"),
            ("[::1]:5001", "http://[::1]:5001"),
            (
                "http://node-0.sensornet:5001/",
                "http://node-0.sensornet:5001",
            ),
            ("/ip4/127.0.0.1/tcp/5001", "http://127.0.0.1:5001"),
            ("/ip6/::1/tcp/5001", "http://[::1]:5001"),
            ("/dns4/node/tcp/5001/http", "http://node:5001"),
        ] {
            assert_eq!(given.parse::<ApiAddr>().unwrap().0, url, "{given}");
        }
        for bad in [
            "5001",
            "localhost",
            "::1:5001",
            "host:99999",
            "host:0",
            "https://host:5001",
            "http://host:5001/api/v0",
            "/ip4/127.0.0.1/udp/5001",
            "/unix/tmp/sock",
        ] {
            let e = bad.parse::<ApiAddr>().unwrap_err().to_string();
            assert!(e.contains("use HOST:PORT"), "{bad}: {e}");
        }
    }

    #[test]
    fn readings_become_queries_and_json_lines() {
        let s = Sample::of(SensorKind::AirQuality, 1_767_225_600_000, 35.5);
        let r = PendingReading::new(SensorKind::AirQuality, "aq 1", &s);
        assert_eq!(
            r.query(),
            "topic=air-quality&value=35.5&unit=%C2%B5g%2Fm%C2%B3&source=aq+1&time=1767225600000&aqi=101"
        );
        let line = serde_json::to_string(&r).unwrap();
        assert!(!line.contains('\n'));
        assert_eq!(serde_json::from_str::<PendingReading>(&line).unwrap(), r);
        let t = PendingReading::new(
            SensorKind::Temperature,
            "t",
            &Sample::of(SensorKind::Temperature, 5, -0.5),
        );
        assert_eq!(
            t.query(),
            "topic=temperature&value=-0.5&unit=%C2%B0C&source=t&time=5"
        );
    }

    #[test]
    fn error_messages_are_short_and_kubo_aware() {
        assert_eq!(
            message_of(r#"{"Message":"value out of range","Code":1,"Type":"error"}"#),
            "value out of range"
        );
        assert_eq!(message_of(" plain "), "plain");
        assert_eq!(message_of(&"x".repeat(1000)).chars().count(), 301);
    }
}
