//! The command line: a clap tree mirroring Kubo's. `daemon` runs a node; every other command
//! is a call to the running daemon's API.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::Value;

use crate::api::client::Client;
use crate::config::FileConfig;
use crate::repo::Repo;

/// sensornet: a peer-to-peer publish/subscribe node for sensor readings.
///
/// Start a node with `node daemon --init`, then publish with `node pub temp 25` and follow
/// with `node sub temp`. Client commands talk to the daemon's HTTP API (Kubo's /api/v0
/// format), found through --api or the repo's `api` file.
#[derive(Parser, Debug)]
#[command(name = "node", version, propagate_version = true)]
pub struct Cli {
    /// Repo directory (config, identity, block store).
    #[arg(long, global = true, env = "SENSORNET_PATH", value_name = "DIR")]
    pub repo: Option<PathBuf>,
    /// API address of the daemon to talk to (default: read from the repo's `api` file).
    #[arg(long, global = true, env = "SENSORNET_API", value_name = "HOST:PORT")]
    pub api: Option<String>,
    /// Bearer token for an API bound off loopback (the daemon requires it there).
    #[arg(
        long,
        global = true,
        env = "SENSORNET_API_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub api_token: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a repo: config file, Ed25519 identity (mode 0600) and block store.
    Init,
    /// Run the node: libp2p swarm, gossipsub, block store, HTTP API and metrics.
    Daemon(Box<crate::config::DaemonArgs>),
    /// Show this node's identity (same JSON as /api/v0/id).
    Id,
    /// Show the daemon's version.
    Version,
    /// List connected peers.
    Peers,
    /// Connect to a peer by multiaddr.
    Connect {
        /// e.g. /ip4/10.0.0.5/tcp/4001
        addr: String,
    },
    /// Publish a reading (committed to the store before it is gossiped).
    Pub {
        /// Topic: temperature (alias temp), humidity, air-quality, or any name.
        topic: String,
        /// The measured value.
        value: f64,
        /// Unit (defaults to the topic's: °C, %RH, µg/m³).
        #[arg(long)]
        unit: Option<String>,
        /// Source (sensor) id; defaults to the daemon's host name.
        #[arg(long)]
        source: Option<String>,
    },
    /// Follow a topic: one line per reading, live, until Ctrl-C.
    Sub {
        /// Topic to follow.
        topic: String,
        /// Print each reading as JSON.
        #[arg(long)]
        json: bool,
        /// First replay what the store holds from this long ago (e.g. 10m, 1h).
        #[arg(long, value_name = "DURATION")]
        since: Option<String>,
        /// Exit after this many readings.
        #[arg(long, short = 'n')]
        count: Option<usize>,
    },
    /// Print a topic's readings in a time range, oldest first, and exit; asks peers when this
    /// node does not hold the topic or the range.
    History {
        /// Topic.
        topic: String,
        /// From this time on: a duration back from now (10m, 24h, 7days) or RFC 3339.
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Up to (not including) this time: a duration back from now or RFC 3339.
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// Downsample: per source, one bucket (start, count, min, mean, max) per DURATION.
        #[arg(long, value_name = "DURATION", requires = "since")]
        every: Option<String>,
        /// Only this source.
        #[arg(long, value_name = "SOURCE")]
        source: Option<String>,
        /// Answer from this node's store only, never asking peers.
        #[arg(long)]
        local: bool,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
        /// At most this many readings (or buckets).
        #[arg(long)]
        limit: Option<usize>,
    },
    /// List the topics this node is subscribed to.
    Topics,
    /// Show the head (newest reading) of every source.
    Heads {
        /// Only this topic.
        topic: Option<String>,
    },
    /// Raw blocks by CID.
    #[command(subcommand)]
    Block(BlockCmd),
    /// IPLD nodes by CID.
    #[command(subcommand)]
    Dag(DagCmd),
    /// Print a new private-network key in the IPFS swarm.key format (save it as REPO/swarm.key).
    SwarmKey,
    /// Print the default config file.
    Config,
}

/// `block` subcommands.
#[derive(Subcommand, Debug)]
pub enum BlockCmd {
    /// Write a block's bytes to stdout.
    Get {
        /// CID.
        cid: String,
    },
    /// Store a file (or stdin) as a block and print its CID.
    Put {
        /// File to read ('-' or absent: stdin).
        file: Option<PathBuf>,
        /// Codec of the CID: raw, dag-cbor, dag-json.
        #[arg(long, default_value = "raw")]
        cid_codec: String,
    },
    /// Show a block's CID and size.
    Stat {
        /// CID.
        cid: String,
    },
}

/// `dag` subcommands.
#[derive(Subcommand, Debug)]
pub enum DagCmd {
    /// Print an IPLD node as DAG-JSON (`CID/path` walks into it).
    Get {
        /// CID, optionally followed by /path.
        cid: String,
    },
    /// Store DAG-JSON from a file (or stdin) as DAG-CBOR and print its CID.
    Put {
        /// File to read ('-' or absent: stdin).
        file: Option<PathBuf>,
    },
}

fn init_logging(format: &str, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Parses the command line and runs it; the binaries' whole `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let repo = Repo::locate(cli.repo.as_deref());
    let client = || -> anyhow::Result<Client> {
        let addr = cli.api.clone().or_else(|| repo.read_api_file()).ok_or_else(|| {
            anyhow::anyhow!(
                "no running daemon found for repo {} (no api file); start one with `node daemon`, or pass --api HOST:PORT",
                repo.root().display()
            )
        })?;
        Ok(Client::new(&addr, cli.api_token.clone()))
    };
    match &cli.command {
        Command::Init => {
            let key = repo.init()?;
            println!("initialized sensornet repo at {}", repo.root().display());
            println!("peer identity: {}", key.public().to_peer_id());
            Ok(())
        }
        Command::Daemon(args) => {
            let file = repo.file_config().ok();
            let format = args
                .log_format
                .clone()
                .or_else(|| file.as_ref().and_then(|f| f.log_format.clone()))
                .unwrap_or_else(|| "plain".into());
            if format != "plain" && format != "json" {
                anyhow::bail!("--log-format {format:?}: use plain or json");
            }
            init_logging(&format, "info,libp2p_gossipsub=warn,libp2p_swarm=warn");
            if args.init && !repo.exists() {
                let key = repo.init()?;
                println!(
                    "initialized sensornet repo at {} (peer {})",
                    repo.root().display(),
                    key.public().to_peer_id()
                );
            }
            let file = repo.file_config()?;
            let config = crate::config::resolve(args, file, &repo, cli.api_token.clone())?;
            crate::daemon::run(repo, config).await
        }
        Command::Id => print_json(&client()?.json("id", &[]).await?),
        Command::Version => {
            let v = client()?.json("version", &[]).await?;
            println!("sensornet version {}", v["Version"].as_str().unwrap_or("?"));
            Ok(())
        }
        Command::Peers => {
            let v = client()?.json("swarm/peers", &[]).await?;
            for p in v["Peers"].as_array().into_iter().flatten() {
                println!(
                    "{}/p2p/{}",
                    p["Addr"].as_str().unwrap_or(""),
                    p["Peer"].as_str().unwrap_or("")
                );
            }
            Ok(())
        }
        Command::Connect { addr } => {
            let v = client()?
                .json("swarm/connect", &[("arg", addr.clone())])
                .await?;
            for s in v["Strings"].as_array().into_iter().flatten() {
                println!("{}", s.as_str().unwrap_or(""));
            }
            Ok(())
        }
        Command::Pub {
            topic,
            value,
            unit,
            source,
        } => {
            let mut args = vec![("topic", topic.clone()), ("value", value.to_string())];
            if let Some(u) = unit {
                args.push(("unit", u.clone()));
            }
            if let Some(s) = source {
                args.push(("source", s.clone()));
            }
            let v = client()?.json("reading/pub", &args).await?;
            println!("{}", v["Cid"].as_str().unwrap_or(""));
            Ok(())
        }
        Command::Sub {
            topic,
            json,
            since,
            count,
        } => {
            let mut args = vec![("topic", topic.clone())];
            if let Some(s) = since {
                args.push(("since", s.clone()));
            }
            let mut left = count.unwrap_or(usize::MAX);
            let mut out = std::io::stdout().lock();
            client()?
                .stream("reading/sub", &args, |v| {
                    if v.get("dropped").is_some() {
                        eprintln!("warning: this subscriber fell behind; {} readings skipped (see `node history`)", v["dropped"]);
                        return true;
                    }
                    let line = if *json { v.to_string() } else { format_reading(&v) };
                    if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
                        return false;
                    }
                    left -= 1;
                    left > 0
                })
                .await?;
            Ok(())
        }
        Command::History {
            topic,
            since,
            until,
            every,
            source,
            local,
            json,
            limit,
        } => {
            let mut args = vec![("topic", topic.clone())];
            let optional = [
                ("since", since.clone()),
                ("until", until.clone()),
                ("every", every.clone()),
                ("source", source.clone()),
                ("limit", limit.map(|l| l.to_string())),
                ("local", local.then(|| "true".to_string())),
            ];
            args.extend(optional.into_iter().filter_map(|(k, v)| Some((k, v?))));
            let mut out = std::io::stdout().lock();
            let mut failed = None;
            client()?
                .stream("reading/history", &args, |v| {
                    if v["Type"] == "error" {
                        failed = v["Message"].as_str().map(str::to_string);
                        return false;
                    }
                    let s = if *json {
                        v.to_string()
                    } else if v.get("count").is_some() {
                        format_bucket(&v)
                    } else {
                        format_reading(&v)
                    };
                    writeln!(out, "{s}").is_ok()
                })
                .await?;
            match failed {
                Some(m) => anyhow::bail!("the history answer broke off: {m}"),
                None => Ok(()),
            }
        }
        Command::Topics => {
            let v = client()?.json("pubsub/ls", &[]).await?;
            for t in v["Strings"].as_array().into_iter().flatten() {
                let t = t.as_str().unwrap_or("");
                let name = multibase::decode(t)
                    .ok()
                    .and_then(|(_, b)| String::from_utf8(b).ok())
                    .unwrap_or(t.to_string());
                println!("{name}");
            }
            Ok(())
        }
        Command::Heads { topic } => {
            let args: Vec<(&str, String)> = topic.iter().map(|t| ("topic", t.clone())).collect();
            let v = client()?.json("reading/heads", &args).await?;
            for h in v["Heads"].as_array().into_iter().flatten() {
                let holes = h["holes"].as_u64().unwrap_or(0);
                println!(
                    "{}\t{}\t{}\t{}{}",
                    h["topic"].as_str().unwrap_or(""),
                    h["source"].as_str().unwrap_or(""),
                    h["seq"],
                    h["cid"].as_str().unwrap_or(""),
                    if holes > 0 {
                        format!("\t{holes} missing (peers are asked again)")
                    } else {
                        String::new()
                    }
                );
            }
            Ok(())
        }
        Command::Block(BlockCmd::Get { cid }) => {
            let bytes = client()?
                .bytes("block/get", &[("arg", cid.clone())])
                .await?;
            std::io::stdout().write_all(&bytes)?;
            Ok(())
        }
        Command::Block(BlockCmd::Put { file, cid_codec }) => {
            let data = read_input(file.as_deref())?;
            let v = client()?
                .upload("block/put", &[("cid-codec", cid_codec.clone())], data)
                .await?;
            println!("{}", v["Key"].as_str().unwrap_or(""));
            Ok(())
        }
        Command::Block(BlockCmd::Stat { cid }) => {
            let v = client()?
                .json("block/stat", &[("arg", cid.clone())])
                .await?;
            println!(
                "Key: {}\nSize: {}",
                v["Key"].as_str().unwrap_or(""),
                v["Size"]
            );
            Ok(())
        }
        Command::Dag(DagCmd::Get { cid }) => {
            let bytes = client()?.bytes("dag/get", &[("arg", cid.clone())]).await?;
            std::io::stdout().write_all(&bytes)?;
            println!();
            Ok(())
        }
        Command::Dag(DagCmd::Put { file }) => {
            let data = read_input(file.as_deref())?;
            let v = client()?.upload("dag/put", &[], data).await?;
            println!("{}", v["Cid"]["/"].as_str().unwrap_or(""));
            Ok(())
        }
        Command::SwarmKey => {
            print!("{}", crate::p2p::transport::generate_swarm_key());
            Ok(())
        }
        Command::Config => {
            print!("{}", FileConfig::default_toml());
            Ok(())
        }
    }
}

fn read_input(file: Option<&std::path::Path>) -> anyhow::Result<Vec<u8>> {
    match file {
        Some(p) if p != std::path::Path::new("-") => {
            std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))
        }
        _ => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
            Ok(buf)
        }
    }
}

fn print_json(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// One human line per bucket: start (RFC 3339), source, count, min/mean/max with unit.
pub fn format_bucket(v: &Value) -> String {
    let start = v["start"]
        .as_u64()
        .map(|ms| {
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
            )
            .to_string()
        })
        .unwrap_or_default();
    let f = |k: &str| v[k].as_f64().map(|x| format!("{x:.2}")).unwrap_or_default();
    format!(
        "{start}  {:<24} n={:<5} min={} mean={} max={} {}",
        v["source"].as_str().unwrap_or(""),
        v["count"],
        f("min"),
        f("mean"),
        f("max"),
        v["unit"].as_str().unwrap_or(""),
    )
}

/// One human line per reading: topic, source, value with unit, seq, delay, CID.
pub fn format_reading(v: &Value) -> String {
    let aqi = v
        .get("aqi")
        .map(|a| format!(" (AQI {a})"))
        .unwrap_or_default();
    let mark = if v["backfilled"].as_bool() == Some(true) {
        " [backfilled]"
    } else {
        ""
    };
    format!(
        "{:<12} {:<24} {:>8} {}{}  seq={} delay={}ms cid={}{}",
        v["topic"].as_str().unwrap_or(""),
        v["source"].as_str().unwrap_or(""),
        v["value"]
            .as_f64()
            .map(|x| format!("{x:.2}"))
            .unwrap_or_default(),
        v["unit"].as_str().unwrap_or(""),
        aqi,
        v["seq"],
        v["delay_ms"],
        v["cid"].as_str().unwrap_or(""),
        mark,
    )
}
