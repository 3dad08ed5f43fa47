//! `sensor`: one sensor as its own process, publishing to a sensornet node's HTTP API.
//! Readings wait in a bounded on-disk buffer while the node is unreachable and go out in
//! order when it is back. The work is in the library's `runner`; this is flags and wiring.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use sensornet_sensors::api::{ApiAddr, NodeApi};
use sensornet_sensors::buffer::DiskBuffer;
use sensornet_sensors::runner::{self, RunConfig, Stop};
use sensornet_sensors::{open_source, SensorKind, SourceSpec};

const EXAMPLES: &str = "\
Examples:
  sensor --kind temperature
      simulated, one reading a second, to the node at 127.0.0.1:5001
  sensor --kind humidity --source hwmon --interval 10s
      the host's humidity sensor (hwmon humidity*_input or IIO)
  sensor --kind air-quality --source csv:pm25.csv --api /ip4/10.0.0.5/tcp/5001 --api-token \"$TOKEN\"
      replay recorded PM2.5 (header time,value) to a remote node, then exit
  sensor --kind temp --seed 7 --count 100 --quiet
      a repeatable simulation; stop after 100 delivered readings

Exit status: 0 after --count, a finished replay or SIGINT/SIGTERM; 1 on an error (said on
stderr; undelivered readings stay in the buffer); 2 on bad flags.";

/// Runs one sensor against a sensornet node's HTTP API.
///
/// Every reading is POSTed to http://API/api/v0/reading/pub with its measurement time.
/// While the node is unreachable (no connection, 5xx) readings are kept in a bounded on-disk
/// buffer that survives restarts of this process, and delivered oldest first when the node
/// is back. A reading the node refuses as invalid (4xx) is logged and dropped. One line per
/// delivered reading goes to stdout, everything else to stderr. SIGINT/SIGTERM stop it
/// cleanly, with undelivered readings kept on disk.
#[derive(Parser, Debug)]
#[command(name = "sensor", version, after_long_help = EXAMPLES)]
struct Args {
    /// What to measure: temperature, humidity or air-quality (PM2.5, with its AQI).
    #[arg(long, value_name = "KIND")]
    kind: SensorKind,

    /// Where readings come from: sim (simulated, random seed), sim:SEED, hwmon (first sysfs
    /// sensor of the kind), hwmon:PATH or csv:PATH (columns time and value; one row per tick,
    /// measurement times from the file).
    #[arg(long, value_name = "SOURCE", default_value = "sim")]
    source: String,

    /// Time between readings, e.g. 500ms, 1s, 5m.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_interval)]
    interval: Duration,

    /// Sensor id, carried as the readings' source [default: HOSTNAME-KIND].
    #[arg(long, value_name = "ID")]
    id: Option<String>,

    /// Seed of the simulation: the same seed gives the same readings (same as sim:SEED).
    #[arg(long, value_name = "N")]
    seed: Option<u64>,

    /// The node's API: HOST:PORT, a multiaddr (/ip4/127.0.0.1/tcp/5001) or http://HOST:PORT.
    #[arg(
        long,
        env = "SENSORNET_API",
        value_name = "ADDR",
        default_value = "127.0.0.1:5001"
    )]
    api: ApiAddr,

    /// Bearer token, if the node's API requires one.
    #[arg(
        long,
        env = "SENSORNET_API_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    api_token: Option<String>,

    /// Directory of the on-disk buffer, one per sensor [default:
    /// $XDG_STATE_HOME/sensornet/sensor-ID, else ~/.local/state/sensornet/sensor-ID].
    #[arg(long, value_name = "DIR")]
    buffer_dir: Option<PathBuf>,

    /// Most readings kept while the node is away; beyond it the oldest are dropped (and
    /// counted in the log).
    #[arg(long, value_name = "N", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    buffer_max: u64,

    /// Stop after N readings were delivered (readings buffered by an earlier run count).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,

    /// Print nothing per delivered reading (problems still go to stderr).
    #[arg(long, short)]
    quiet: bool,
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e}; use e.g. 500ms, 1s, 5m"))?;
    if d < Duration::from_millis(10) {
        return Err("must be at least 10ms".into());
    }
    Ok(d)
}

/// `<hostname>-<kind>`, as the node names its in-process sensor.
fn default_id(kind: SensorKind) -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "sensor".into());
    format!("{host}-{}", kind.topic())
}

fn default_buffer_dir(id: &str) -> PathBuf {
    let safe: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let name = format!("sensor-{safe}");
    let env_dir = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(state) = env_dir("XDG_STATE_HOME") {
        return state.join("sensornet").join(name);
    }
    if let Some(home) = env_dir("HOME") {
        return home.join(".local/state/sensornet").join(name);
    }
    PathBuf::from(name)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        // Without handlers the default action (exit) applies; readings are on disk anyway.
        _ => std::future::pending().await,
    }
}

async fn main_inner(args: Args) -> anyhow::Result<runner::Summary> {
    let mut spec: SourceSpec = args.source.parse()?;
    if let Some(seed) = args.seed {
        let unseeded = args.source.trim().eq_ignore_ascii_case("sim");
        match &mut spec {
            SourceSpec::Simulated { seed: s } if unseeded => *s = seed,
            SourceSpec::Simulated { seed: s } if *s == seed => {}
            SourceSpec::Simulated { seed: s } => {
                anyhow::bail!("--seed {seed} contradicts --source sim:{s}; give the seed once")
            }
            _ => anyhow::bail!("--seed only applies to --source sim; drop it or use sim"),
        }
    }
    let id = args.id.clone().unwrap_or_else(|| default_id(args.kind));
    if id.is_empty() || id.len() > 128 || id.chars().any(char::is_control) {
        anyhow::bail!("--id must be 1 to 128 printable characters; got {id:?}");
    }
    let source = open_source(args.kind, &spec)?;
    let dir = args
        .buffer_dir
        .clone()
        .unwrap_or_else(|| default_buffer_dir(&id));
    let max = usize::try_from(args.buffer_max).unwrap_or(usize::MAX);
    let mut buffer = DiskBuffer::open(&dir, max)?;
    let api = NodeApi::new(
        args.api.clone(),
        args.api_token.clone(),
        Duration::from_secs(30),
    )?;
    eprintln!(
        "sensor {id}: {} every {} to {}; buffer {} ({} waiting, at most {max})",
        source.describe(),
        humantime::format_duration(args.interval),
        args.api,
        dir.display(),
        buffer.len(),
    );
    let cfg = RunConfig {
        kind: args.kind,
        id,
        interval: args.interval,
        count: args.count,
        quiet: args.quiet,
    };
    Ok(runner::run(&cfg, source, &mut buffer, &api, shutdown_signal()).await?)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let id = args.id.clone().unwrap_or_else(|| default_id(args.kind));
    match main_inner(args).await {
        Ok(s) => {
            let why = match s.stop {
                Stop::Count => "count reached",
                Stop::Shutdown => "signal",
                Stop::ReplayFinished => "replay finished",
            };
            eprintln!(
                "sensor {id}: stopped ({why}): {} delivered, {} refused, {} dropped (buffer full), {} dropouts, {} still buffered",
                s.delivered, s.refused, s.dropped, s.dropouts, s.buffered
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            // Source errors name the node's flag; this program calls it --source.
            let msg = e.to_string().replace("--sensor-source", "--source");
            eprintln!("sensor {id}: error: {msg}");
            ExitCode::FAILURE
        }
    }
}
