//! Daemon settings: flags > `SENSORNET_…` environment > `config.toml` in the repo > defaults.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default swarm listen addresses: TCP and QUIC on 4001.
pub const DEFAULT_LISTEN: [&str; 2] = ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"];
/// Default API address: loopback only, as Kubo.
pub const DEFAULT_API_ADDR: &str = "127.0.0.1:5001";
/// Default metrics and health address: reachable by Prometheus and the kubelet.
pub const DEFAULT_METRICS_ADDR: &str = "0.0.0.0:9401";
/// Topics every node subscribes to and keeps, whoever listens.
pub const DEFAULT_TOPICS: [&str; 3] = ["temperature", "humidity", "air-quality"];

/// Settings errors.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{what} {value:?} is not valid: {why}")]
    Invalid {
        what: &'static str,
        value: String,
        why: String,
    },
}

/// How long and how much of a topic the store keeps.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Readings older than this are collected.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Oldest readings are collected once a topic's index passes this many bytes.
    pub max_bytes: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_bytes: 1 << 30,
        }
    }
}

/// An in-process sensor (`node daemon --sensor …`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SensorConfig {
    /// `temperature`, `humidity` or `air-quality`.
    pub kind: String,
    /// `sim`, `sim:SEED`, `hwmon`, `hwmon:PATH` or `csv:PATH`.
    #[serde(default = "default_sensor_source")]
    pub source: String,
    /// Time between readings.
    #[serde(with = "humantime_serde", default = "default_interval")]
    pub interval: Duration,
    /// Sensor id; defaults to `<hostname>-<kind>`.
    #[serde(default)]
    pub id: Option<String>,
}

fn default_sensor_source() -> String {
    "sim".into()
}
fn default_interval() -> Duration {
    Duration::from_secs(1)
}

/// The repo's `config.toml`. Every field is optional there.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// Swarm listen multiaddrs.
    pub listen: Option<Vec<String>>,
    /// Peers to dial at start and whenever they are lost; `/dns4/` names are re-resolved.
    pub bootstrap: Option<Vec<String>>,
    /// HTTP RPC address.
    pub api_addr: Option<String>,
    /// Bearer token required on the API (mandatory off loopback).
    pub api_token: Option<String>,
    /// Metrics and health address.
    pub metrics_addr: Option<String>,
    /// Discover peers on the LAN with mDNS.
    pub mdns: Option<bool>,
    /// Topics to subscribe to and keep.
    pub topics: Option<Vec<String>>,
    /// Retention for every topic.
    pub retention: Option<Retention>,
    /// Per-topic retention overrides.
    pub retention_topics: Option<BTreeMap<String, Retention>>,
    /// An in-process sensor.
    pub sensor: Option<SensorConfig>,
    /// `plain` or `json`.
    pub log_format: Option<String>,
}

impl FileConfig {
    /// The commented default written by `node init`.
    pub fn default_toml() -> String {
        format!(
            r#"# sensornet node configuration. Flags and SENSORNET_* environment variables override it.
# listen = {listen:?}
# bootstrap = ["/dns4/sensornet-headless.default.svc.cluster.local/tcp/4001"]
# api_addr = "{api}"          # a non-loopback address requires api_token
# metrics_addr = "{metrics}"
# mdns = false
# topics = {topics:?}
# log_format = "plain"        # or "json"
#
# [retention]                 # applies to every topic
# max_age = "7days"
# max_bytes = 1073741824
#
# [retention_topics.temperature]
# max_age = "30days"
# max_bytes = 1073741824
#
# [sensor]                    # a sensor inside this node's process
# kind = "temperature"        # temperature | humidity | air-quality
# source = "sim"              # sim | sim:SEED | hwmon | hwmon:PATH | csv:PATH
# interval = "1s"
"#,
            listen = DEFAULT_LISTEN,
            api = DEFAULT_API_ADDR,
            metrics = DEFAULT_METRICS_ADDR,
            topics = DEFAULT_TOPICS,
        )
    }
}

/// The daemon's resolved settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Swarm listen multiaddrs.
    pub listen: Vec<libp2p::Multiaddr>,
    /// Bootstrap multiaddrs.
    pub bootstrap: Vec<libp2p::Multiaddr>,
    /// API address.
    pub api_addr: SocketAddr,
    /// API bearer token.
    pub api_token: Option<String>,
    /// Metrics address.
    pub metrics_addr: SocketAddr,
    /// mDNS discovery.
    pub mdns: bool,
    /// Topics kept.
    pub topics: Vec<String>,
    /// Default retention.
    pub retention: Retention,
    /// Per-topic retention.
    pub retention_topics: BTreeMap<String, Retention>,
    /// In-process sensor.
    pub sensor: Option<SensorConfig>,
    /// Swarm key file (private network), if any.
    pub swarm_key: Option<std::path::PathBuf>,
    /// Seed for simulated sensors.
    pub seed: Option<u64>,
}

impl Config {
    /// Retention of one topic.
    pub fn retention_for(&self, topic: &str) -> Retention {
        self.retention_topics
            .get(topic)
            .copied()
            .unwrap_or(self.retention)
    }
}

/// Parses a multiaddr, saying which setting was wrong.
pub fn parse_multiaddr(what: &'static str, s: &str) -> Result<libp2p::Multiaddr, ConfigError> {
    s.trim()
        .parse()
        .map_err(|e: libp2p::multiaddr::Error| ConfigError::Invalid {
            what,
            value: s.to_string(),
            why: format!("{e}; expected e.g. /ip4/10.0.0.5/tcp/4001"),
        })
}

/// Parses HOST:PORT.
pub fn parse_socket(what: &'static str, s: &str) -> Result<SocketAddr, ConfigError> {
    use std::net::ToSocketAddrs;
    s.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| ConfigError::Invalid {
            what,
            value: s.to_string(),
            why: "expected HOST:PORT such as 127.0.0.1:5001 (port 0 picks a free port)".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_toml_parses_and_examples_are_valid() {
        let text = FileConfig::default_toml();
        let parsed: FileConfig = toml::from_str(&text).unwrap();
        assert_eq!(parsed, FileConfig::default());
        // Uncommented, the documented example must parse too.
        let uncommented: String = text
            .lines()
            .map(|l| l.strip_prefix("# ").unwrap_or(l))
            .filter(|l| !l.starts_with("sensornet node") && !l.starts_with('#'))
            .map(|l| l.split("  #").next().unwrap_or(l).trim_end().to_string() + "\n")
            .collect();
        let full: FileConfig = toml::from_str(&uncommented).unwrap();
        assert_eq!(
            full.retention_topics.unwrap()["temperature"]
                .max_age
                .as_secs(),
            30 * 86400
        );
        assert_eq!(full.sensor.unwrap().interval, Duration::from_secs(1));
        assert!(parse_socket("api", "127.0.0.1:0").is_ok());
        assert!(parse_socket("api", "nonsense").is_err());
        assert!(parse_multiaddr("listen", "/ip4/1.2.3.4/tcp/1").is_ok());
        assert!(parse_multiaddr("listen", "1.2.3.4:1").is_err());
    }
}
