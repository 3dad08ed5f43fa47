//! Daemon settings: flags > `SENSORNET_…` environment > `config.toml` in the repo > defaults.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default swarm listen addresses: TCP and QUIC on 4001.
pub const DEFAULT_LISTEN: [&str; 2] = ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"];
/// Default API address: loopback only, as Kubo.
pub const DEFAULT_API_ADDR: &str = "127.0.0.1:5001";
/// Default MQTT listener address: loopback only, as the API.
pub const DEFAULT_MQTT_ADDR: &str = "127.0.0.1:1883";
/// Default metrics and health address: reachable by Prometheus and the kubelet.
pub const DEFAULT_METRICS_ADDR: &str = "0.0.0.0:9401";
/// Default connection budget (in and out): a few meshes' worth, far below file-descriptor
/// limits, and the point past which a bigger cluster costs each pod nothing more.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 96;
/// Default number of addresses of a bootstrap name (a headless Service) kept connected.
pub const DEFAULT_BOOTSTRAP_DIALS: usize = 3;
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
    #[error("the {what} would listen on {addr}, off loopback, without a token: anyone reaching it could publish. Set --api-token (or SENSORNET_API_TOKEN), or bind {flag} {loopback}")]
    Open {
        /// "API" or "MQTT listener".
        what: &'static str,
        /// The flag that sets the address.
        flag: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// The loopback default to suggest.
        loopback: &'static str,
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
    /// MQTT listener address, or `off`.
    pub mqtt_addr: Option<String>,
    /// Discover peers on the LAN with mDNS.
    pub mdns: Option<bool>,
    /// Peers kept (accepted up to four times as many, then trimmed).
    pub max_connections: Option<u32>,
    /// Addresses of each bootstrap name (a Service) kept connected.
    pub bootstrap_dials: Option<usize>,
    /// Topics to subscribe to and keep.
    pub topics: Option<Vec<String>>,
    /// Retention for every topic.
    pub retention: Option<Retention>,
    /// Per-topic retention overrides.
    pub retention_topics: Option<BTreeMap<String, Retention>>,
    /// In-process sensors (`[[sensors]]`), e.g. the temperature and humidity of one board.
    pub sensors: Option<Vec<SensorConfig>>,
    /// A single in-process sensor (`[sensor]`, the form before `[[sensors]]`).
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
# mqtt_addr = "{mqtt}"         # or "off"; a non-loopback address requires api_token (the MQTT password)
# mdns = false
# max_connections = {max_connections}     # peers kept; up to four times as many are accepted, then trimmed
# bootstrap_dials = {bootstrap_dials}       # addresses of each bootstrap name kept connected
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
# [[sensors]]                 # a sensor inside this node's process; repeat for more
# kind = "temperature"        # temperature | humidity | air-quality
# source = "sim"              # sim | sim:SEED | hwmon | hwmon:PATH | csv:PATH
# interval = "1s"
#
# [[sensors]]
# kind = "humidity"
# interval = "10s"
"#,
            listen = DEFAULT_LISTEN,
            api = DEFAULT_API_ADDR,
            metrics = DEFAULT_METRICS_ADDR,
            max_connections = DEFAULT_MAX_CONNECTIONS,
            bootstrap_dials = DEFAULT_BOOTSTRAP_DIALS,
            mqtt = DEFAULT_MQTT_ADDR,
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
    /// MQTT listener address; `None` when `--mqtt-addr off`.
    pub mqtt_addr: Option<SocketAddr>,
    /// mDNS discovery.
    pub mdns: bool,
    /// Connection budget.
    pub limits: crate::p2p::trim::Limits,
    /// Addresses of each bootstrap name kept connected.
    pub bootstrap_dials: usize,
    /// Topics kept.
    pub topics: Vec<String>,
    /// Retention, per topic.
    pub retention: RetentionPolicy,
    /// In-process sensors, each with its own source id.
    pub sensors: Vec<SensorConfig>,
    /// Swarm key file (private network), if any.
    pub swarm_key: Option<std::path::PathBuf>,
    /// Seed for simulated sensors.
    pub seed: Option<u64>,
}

/// Retention of every topic: a default and per-topic exceptions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RetentionPolicy {
    /// For topics without their own.
    pub default: Retention,
    /// Per-topic retention.
    pub topics: BTreeMap<String, Retention>,
}

impl RetentionPolicy {
    /// Retention of one topic.
    pub fn for_topic(&self, topic: &str) -> Retention {
        self.topics.get(topic).copied().unwrap_or(self.default)
    }

    /// The oldest reading time (unix ms) a topic keeps at `now_ms`.
    pub fn horizon(&self, topic: &str, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.for_topic(topic).max_age.as_millis() as u64)
    }

    /// The shortest age limit of any topic (how often retention must run).
    pub fn shortest_age(&self) -> Duration {
        std::iter::once(self.default)
            .chain(self.topics.values().copied())
            .map(|r| r.max_age)
            .min()
            .unwrap_or(self.default.max_age)
    }
}

/// `node daemon` options; each also comes from `SENSORNET_…` or the repo's config.toml.
#[derive(clap::Args, Debug, Default)]
pub struct DaemonArgs {
    /// Initialise the repo first if it does not exist (handy in a container).
    #[arg(long, env = "SENSORNET_INIT")]
    pub init: bool,
    /// Swarm listen multiaddr (repeatable) [default: /ip4/0.0.0.0/tcp/4001, /ip4/0.0.0.0/udp/4001/quic-v1].
    #[arg(
        long,
        env = "SENSORNET_LISTEN",
        value_delimiter = ',',
        value_name = "MULTIADDR"
    )]
    pub listen: Vec<String>,
    /// Peer to dial at start and redial when lost (repeatable); /dns4/ names are re-resolved.
    #[arg(
        long,
        env = "SENSORNET_BOOTSTRAP",
        value_delimiter = ',',
        value_name = "MULTIADDR"
    )]
    pub bootstrap: Vec<String>,
    /// HTTP API address [default: 127.0.0.1:5001]; off loopback it requires --api-token.
    #[arg(long, env = "SENSORNET_API_ADDR", value_name = "HOST:PORT")]
    pub api_addr: Option<String>,
    /// Metrics and health address (/metrics, /healthz, /readyz) [default: 0.0.0.0:9401].
    #[arg(long, env = "SENSORNET_METRICS_ADDR", value_name = "HOST:PORT")]
    pub metrics_addr: Option<String>,
    /// MQTT listener address, or off [default: 127.0.0.1:1883]; off loopback it requires --api-token (the MQTT password).
    #[arg(long, env = "SENSORNET_MQTT_ADDR", value_name = "HOST:PORT|off")]
    pub mqtt_addr: Option<String>,
    /// Run a sensor inside this node: temperature, humidity or air-quality; repeat it (or
    /// give a comma-separated list) for a board with several, such as a BME280's
    /// temperature and humidity. The --sensor-* settings apply to each.
    #[arg(
        long,
        env = "SENSORNET_SENSOR",
        value_name = "KIND",
        value_delimiter = ','
    )]
    pub sensor: Vec<String>,
    /// Sensor source: sim, sim:SEED, hwmon, hwmon:PATH, csv:PATH [default: sim].
    #[arg(long, env = "SENSORNET_SENSOR_SOURCE", value_name = "SOURCE")]
    pub sensor_source: Option<String>,
    /// Time between sensor readings [default: 1s].
    #[arg(long, env = "SENSORNET_SENSOR_INTERVAL", value_name = "DURATION")]
    pub sensor_interval: Option<String>,
    /// Sensor id [default: HOSTNAME-KIND]; with several sensors each gets ID-KIND.
    #[arg(long, env = "SENSORNET_SENSOR_ID", value_name = "ID")]
    pub sensor_id: Option<String>,
    /// Seed for simulated sensors (repeatable runs).
    #[arg(long, env = "SENSORNET_SEED")]
    pub seed: Option<u64>,
    /// Private-network key file [default: REPO/swarm.key if present].
    #[arg(long, env = "SENSORNET_SWARM_KEY_FILE", value_name = "FILE")]
    pub swarm_key: Option<PathBuf>,
    /// Keep readings this long [default: 7days].
    #[arg(long, env = "SENSORNET_RETENTION", value_name = "DURATION")]
    pub retention: Option<String>,
    /// Discover peers on the local network with mDNS.
    #[arg(long, env = "SENSORNET_MDNS")]
    pub mdns: bool,
    /// Peers kept: up to four times as many are accepted; past twice as many the least
    /// useful are closed after 5 s, past it after 30 s, down to three quarters of it;
    /// topic discovery stops dialing at half [default: 96].
    #[arg(long, env = "SENSORNET_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<u32>,
    /// Addresses of each bootstrap name (e.g. a headless Service) to keep connected, chosen
    /// at random; literal addresses are all dialed [default: 3].
    #[arg(long, env = "SENSORNET_BOOTSTRAP_DIALS", value_name = "N")]
    pub bootstrap_dials: Option<usize>,
    /// Log format: plain or json.
    #[arg(long, env = "SENSORNET_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<String>,
}

fn duration(what: &'static str, s: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(s).map_err(|e| ConfigError::Invalid {
        what,
        value: s.to_string(),
        why: format!("{e}; use e.g. 500ms, 10s, 5m, 7days"),
    })
}

/// Merges flags/env over the file config over defaults.
pub fn resolve(
    args: &DaemonArgs,
    file: FileConfig,
    repo: &crate::repo::Repo,
    api_token: Option<String>,
) -> Result<Config, ConfigError> {
    let listen: Vec<String> = if !args.listen.is_empty() {
        args.listen.clone()
    } else {
        file.listen
            .unwrap_or_else(|| DEFAULT_LISTEN.iter().map(|s| s.to_string()).collect())
    };
    let bootstrap = if !args.bootstrap.is_empty() {
        args.bootstrap.clone()
    } else {
        file.bootstrap.unwrap_or_default()
    };
    let api_addr = parse_socket(
        "--api-addr",
        args.api_addr
            .as_deref()
            .or(file.api_addr.as_deref())
            .unwrap_or(DEFAULT_API_ADDR),
    )?;
    let metrics_addr = parse_socket(
        "--metrics-addr",
        args.metrics_addr
            .as_deref()
            .or(file.metrics_addr.as_deref())
            .unwrap_or(DEFAULT_METRICS_ADDR),
    )?;
    let api_token = api_token.or(file.api_token).filter(|t| !t.is_empty());
    require_token("API", "--api-addr", DEFAULT_API_ADDR, api_addr, &api_token)?;
    let mqtt_addr = match args
        .mqtt_addr
        .as_deref()
        .or(file.mqtt_addr.as_deref())
        .unwrap_or(DEFAULT_MQTT_ADDR)
        .trim()
    {
        "off" | "none" | "" => None,
        s => {
            let addr = parse_socket("--mqtt-addr", s)?;
            require_token(
                "MQTT listener",
                "--mqtt-addr",
                DEFAULT_MQTT_ADDR,
                addr,
                &api_token,
            )?;
            Some(addr)
        }
    };
    let sensors = sensors(args, file.sensors.into_iter().flatten().chain(file.sensor))?;
    let mut retention = file.retention.unwrap_or_default();
    if let Some(r) = &args.retention {
        retention.max_age = duration("--retention", r)?;
    }
    let retention = RetentionPolicy {
        default: retention,
        topics: file.retention_topics.unwrap_or_default(),
    };
    let max_connections = args
        .max_connections
        .or(file.max_connections)
        .unwrap_or(DEFAULT_MAX_CONNECTIONS);
    if max_connections < 4 {
        return Err(ConfigError::Invalid {
            what: "--max-connections",
            value: max_connections.to_string(),
            why: "a node needs at least 4 connections to join a mesh".into(),
        });
    }
    let bootstrap_dials = args
        .bootstrap_dials
        .or(file.bootstrap_dials)
        .unwrap_or(DEFAULT_BOOTSTRAP_DIALS);
    if bootstrap_dials == 0 {
        return Err(ConfigError::Invalid {
            what: "--bootstrap-dials",
            value: "0".into(),
            why: "at least one address of each bootstrap name must be dialed".into(),
        });
    }
    let swarm_key = args.swarm_key.clone().or_else(|| {
        let p = repo.swarm_key_path();
        p.exists().then_some(p)
    });
    Ok(Config {
        listen: listen
            .iter()
            .map(|s| parse_multiaddr("--listen", s))
            .collect::<Result<_, _>>()?,
        bootstrap: bootstrap
            .iter()
            .map(|s| parse_multiaddr("--bootstrap", s))
            .collect::<Result<_, _>>()?,
        api_addr,
        api_token,
        metrics_addr,
        mqtt_addr,
        mdns: args.mdns || file.mdns.unwrap_or(false),
        limits: crate::p2p::trim::Limits { max_connections },
        bootstrap_dials,
        topics: file
            .topics
            .unwrap_or_else(|| DEFAULT_TOPICS.iter().map(|s| s.to_string()).collect()),
        retention,
        sensors,
        swarm_key,
        seed: args.seed,
    })
}

/// The in-process sensors: those of the flags replace the file's; the `--sensor-*` flags
/// apply to each. Two sensors writing one source id are refused.
fn sensors(
    args: &DaemonArgs,
    from_file: impl Iterator<Item = SensorConfig>,
) -> Result<Vec<SensorConfig>, ConfigError> {
    let mut sensors: Vec<SensorConfig> = if args.sensor.is_empty() {
        from_file.collect()
    } else {
        args.sensor
            .iter()
            .map(|kind| SensorConfig {
                // `temp` and `temperature` are one sensor kind: one source, one id.
                kind: crate::reading::canonical_topic(kind.trim()).to_string(),
                source: default_sensor_source(),
                interval: default_interval(),
                id: None,
            })
            .collect()
    };
    let several = sensors.len() > 1;
    for s in &mut sensors {
        if let Some(src) = &args.sensor_source {
            s.source = src.clone();
        }
        if let Some(i) = &args.sensor_interval {
            s.interval = duration("--sensor-interval", i)?;
        }
        if s.interval < Duration::from_millis(1) {
            return Err(ConfigError::Invalid {
                what: "--sensor-interval",
                value: humantime::format_duration(s.interval).to_string(),
                why: "it must be at least 1ms".into(),
            });
        }
        if let Some(id) = &args.sensor_id {
            s.id = Some(if several {
                format!("{id}-{}", s.kind)
            } else {
                id.clone()
            });
        }
    }
    for (i, a) in sensors.iter().enumerate() {
        let kind = crate::reading::canonical_topic(a.kind.trim());
        if sensors[..i]
            .iter()
            .any(|b| crate::reading::canonical_topic(b.kind.trim()) == kind && b.id == a.id)
        {
            return Err(ConfigError::Invalid {
                what: "--sensor",
                value: a.kind.clone(),
                why: "two sensors of one kind would write the same source; give the second its own id in [[sensors]]".into(),
            });
        }
    }
    Ok(sensors)
}

/// A listener that accepts writes may leave loopback only behind the API token: the API and
/// the MQTT listener share this rule (and the token).
fn require_token(
    what: &'static str,
    flag: &'static str,
    loopback: &'static str,
    addr: SocketAddr,
    token: &Option<String>,
) -> Result<(), ConfigError> {
    if !addr.ip().is_loopback() && token.is_none() {
        return Err(ConfigError::Open {
            what,
            flag,
            addr,
            loopback,
        });
    }
    Ok(())
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
        let sensors = full.sensors.unwrap();
        assert_eq!(sensors.len(), 2);
        assert_eq!(sensors[0].interval, Duration::from_secs(1));
        assert_eq!(sensors[1].kind, "humidity");
        assert!(parse_socket("api", "127.0.0.1:0").is_ok());
        assert!(parse_socket("api", "nonsense").is_err());
        assert!(parse_multiaddr("listen", "/ip4/1.2.3.4/tcp/1").is_ok());
        assert!(parse_multiaddr("listen", "1.2.3.4:1").is_err());
    }

    #[test]
    fn mqtt_address_defaults_turns_off_and_needs_the_token_off_loopback() {
        let dir = tempfile::tempdir().unwrap();
        let repo = crate::repo::Repo::at(dir.path());
        let with = |addr: Option<&str>, token: Option<&str>| {
            let args = DaemonArgs {
                mqtt_addr: addr.map(str::to_string),
                ..DaemonArgs::default()
            };
            resolve(
                &args,
                FileConfig::default(),
                &repo,
                token.map(str::to_string),
            )
        };
        assert_eq!(
            with(None, None).unwrap().mqtt_addr,
            Some(DEFAULT_MQTT_ADDR.parse().unwrap())
        );
        assert_eq!(with(Some("off"), None).unwrap().mqtt_addr, None);
        let err = with(Some("0.0.0.0:1883"), None).unwrap_err().to_string();
        assert!(
            err.contains("MQTT listener")
                && err.contains("--mqtt-addr")
                && err.contains("--api-token"),
            "{err}"
        );
        assert!(with(Some("0.0.0.0:1883"), Some("t")).is_ok());
        assert!(with(Some("nonsense"), None).is_err());
        // The API's own rule still reads as before.
        let args = DaemonArgs {
            api_addr: Some("0.0.0.0:5001".into()),
            ..DaemonArgs::default()
        };
        let err = resolve(&args, FileConfig::default(), &repo, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("the API would listen") && err.contains("--api-addr 127.0.0.1:5001"),
            "{err}"
        );
    }
}
