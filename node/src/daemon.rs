//! Starts a node: store, swarm, sync, API, metrics, sensor, each given only what it uses;
//! stops it in order. [`start`] runs it in-process (tests, embedding) and returns a
//! [`Running`] node; [`run`] is `node daemon`: start, wait for a signal or a dead task, stop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiState};
use crate::bus::Bus;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::p2p::{self, behaviour::Behaviour, Handle};
use crate::publish::Publisher;
use crate::repo::{socket_to_multiaddr, DaemonInfo, Repo};
use crate::store::Store;
use crate::sync::{self, SyncDeps};
use crate::tasks::{TaskDied, Tasks};

/// How long shutdown may take before in-flight work is abandoned.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The node's parts, assembled and running, before any API socket is bound: what the API
/// and the health routes are built from. Unit tests drive [`api::router`] on
/// [`Node::api_state`] without a socket.
pub struct Node {
    /// Our peer id.
    pub peer_id: PeerId,
    /// The network.
    pub net: Handle,
    /// The block store.
    pub store: Store,
    /// Publishing.
    pub publisher: Publisher,
    /// Local delivery.
    pub bus: Bus,
    /// Metrics.
    pub metrics: Metrics,
    /// True once the initial catch-up is done.
    pub ready: watch::Receiver<bool>,
    key: Keypair,
    registry: Arc<Registry>,
    config: Arc<Config>,
    tasks: Tasks,
}

impl Node {
    /// Builds the swarm (listening on `config.listen`, none for an empty list), starts the
    /// swarm, sync and sync-server tasks and the bootstrap dialer.
    pub async fn assemble(key: Keypair, store: Store, config: Config) -> anyhow::Result<Node> {
        let peer_id = key.public().to_peer_id();
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        metrics.init_topics(&config.topics);
        registry.sub_registry_with_prefix("sensornet").register(
            "store_commits",
            "Durable write transactions of the store (readings are folded into shared commits)",
            store.commits(),
        );
        let libp2p_metrics = libp2p::metrics::Metrics::new(&mut registry);
        let behaviour = Behaviour::new(
            &key,
            &config.topics,
            config.mdns,
            config.limits,
            registry.sub_registry_with_prefix("libp2p"),
        )?;
        let psk = match &config.swarm_key {
            Some(path) => {
                let psk = p2p::transport::read_swarm_key(path)?;
                tracing::info!(path = %path.display(), fingerprint = %psk.fingerprint(), "private network: QUIC is off because pnet works over TCP only");
                Some(psk)
            }
            None => None,
        };
        let private = psk.is_some();
        let mut swarm = p2p::transport::build(key.clone(), psk, behaviour, &mut registry)?;
        for addr in &config.listen {
            if private
                && addr
                    .iter()
                    .any(|p| matches!(p, libp2p::multiaddr::Protocol::QuicV1))
            {
                tracing::info!(%addr, "skipping QUIC listen address in a private network");
                continue;
            }
            swarm
                .listen_on(addr.clone())
                .with_context(|| format!("cannot listen on {addr}; is the port in use?"))?;
        }
        let tasks = Tasks::default();
        let spawned = p2p::swarm::spawn(swarm, libp2p_metrics, config.limits);
        let net = spawned.handle.clone();
        tasks.core("swarm", spawned.task);

        let bus = Bus::new(metrics.clone(), net.clone());
        let (ingest, local_blocks) = sync::local_channel();
        let (ready_tx, ready_rx) = watch::channel(false);
        let publisher = Publisher::new(
            store.clone(),
            net.clone(),
            bus.clone(),
            ingest,
            metrics.clone(),
            ready_rx.clone(),
            hostname(),
        );
        for t in &config.topics {
            net.subscribe(t).await;
        }
        let (boot_tx, boot_rx) = watch::channel(false);
        tasks.background(
            "bootstrap",
            p2p::bootstrap::run(
                net.clone(),
                config.bootstrap.clone(),
                config.bootstrap_dials,
                boot_tx,
            ),
        );
        let deps = SyncDeps {
            store: store.clone(),
            net: net.clone(),
            bus: bus.clone(),
            metrics: metrics.clone(),
            topics: config.topics.clone(),
            retention: config.retention.clone(),
        };
        tasks.core(
            "sync",
            sync::run(deps, spawned.events, local_blocks, boot_rx, ready_tx),
        );
        tasks.core(
            "sync-server",
            sync::serve::run(store.clone(), net.clone(), spawned.requests),
        );
        Ok(Node {
            peer_id,
            net,
            store,
            publisher,
            bus,
            metrics,
            ready: ready_rx,
            key,
            registry: Arc::new(registry),
            config: Arc::new(config),
            tasks,
        })
    }

    /// What the API handlers use.
    pub fn api_state(&self) -> ApiState {
        ApiState {
            publisher: self.publisher.clone(),
            bus: self.bus.clone(),
            store: self.store.clone(),
            net: self.net.clone(),
            metrics: self.metrics.clone(),
            public_key: self.key.public(),
            token: self.config.api_token.clone(),
            topics: self.config.topics.clone(),
            retention: self.config.retention.clone(),
            ready: self.ready.clone(),
        }
    }

    /// Stops the network and the tasks, then the store (queued writes are committed).
    pub async fn shutdown(self) {
        let Node {
            net, store, tasks, ..
        } = self;
        let stop = async {
            tasks.begin_shutdown();
            net.shutdown().await;
            tasks.join().await;
        };
        if tokio::time::timeout(SHUTDOWN_GRACE, stop).await.is_err() {
            tracing::warn!("shutdown took longer than {SHUTDOWN_GRACE:?}; stopping anyway");
        }
        // Every acknowledged write is already durable; this waits for queued ones.
        tokio::task::spawn_blocking(move || store.shutdown())
            .await
            .ok();
    }
}

/// A node started in-process by [`start`].
pub struct Running {
    /// The node's parts.
    pub node: Node,
    /// Bound API address.
    pub api_addr: SocketAddr,
    /// Bound metrics/health address.
    pub metrics_addr: SocketAddr,
    /// Bound MQTT address; `None` with `--mqtt-addr off`.
    pub mqtt_addr: Option<SocketAddr>,
    /// Bound swarm addresses.
    pub swarm_addrs: Vec<Multiaddr>,
    repo: Repo,
    api_stop: CancellationToken,
    api_task: tokio::task::JoinHandle<()>,
    metrics_stop: CancellationToken,
}

/// Starts a node on `repo` (initialised) with `config`; returns once every listener is bound
/// and `REPO/daemon.json` and `REPO/api` are written. Readiness comes later
/// (`running.node.ready`).
pub async fn start(repo: Repo, config: Config) -> anyhow::Result<Running> {
    let key = repo.identity()?;
    let store = Store::open(&repo.store_path())?;
    let api_addr_want = config.api_addr;
    let metrics_addr_want = config.metrics_addr;
    let expected_listeners = config.listen.len().min(1);
    let seed = config.seed;
    let retention = config.retention.clone();
    // A bad sensor setting fails the start, before anything listens.
    let sensors = config
        .sensors
        .iter()
        .map(|s| {
            let (kind, source) = crate::sensor::open(s, seed)?;
            let id =
                s.id.clone()
                    .unwrap_or_else(|| format!("{}-{}", hostname(), kind.topic()));
            anyhow::Ok((kind, source, id, s.interval))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let node = Node::assemble(key, store, config).await?;

    // The bound addresses (port 0 resolved) once the listeners are up.
    let mut swarm_addrs = Vec::new();
    for _ in 0..50 {
        swarm_addrs = node.net.listening().await?;
        if swarm_addrs.len() >= expected_listeners {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    swarm_addrs = node.net.listening().await.unwrap_or(swarm_addrs);

    let api_listener = tokio::net::TcpListener::bind(api_addr_want)
        .await
        .with_context(|| {
            format!(
                "cannot bind the API on {api_addr_want}; is another daemon running? (--api-addr)"
            )
        })?;
    let api_addr = api_listener.local_addr()?;
    let metrics_listener = tokio::net::TcpListener::bind(metrics_addr_want)
        .await
        .with_context(|| {
            format!("cannot bind the metrics address {metrics_addr_want} (--metrics-addr)")
        })?;
    let metrics_addr = metrics_listener.local_addr()?;
    let mqtt_listener = match node.config.mqtt_addr {
        Some(addr) => Some(crate::mqtt::bind(addr).await?),
        None => None,
    };
    let mqtt_addr = match &mqtt_listener {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };

    let api_stop = CancellationToken::new();
    let metrics_stop = CancellationToken::new();
    let api_task = node.tasks.core(
        "api",
        serve(
            api_listener,
            api::router(node.api_state()),
            api_stop.clone(),
        ),
    );
    node.tasks.core(
        "metrics",
        serve(
            metrics_listener,
            crate::health::router(node.registry.clone(), node.ready.clone()),
            metrics_stop.clone(),
        ),
    );
    if let Some(listener) = mqtt_listener {
        let shared = crate::mqtt::Shared {
            publisher: node.publisher.clone(),
            bus: node.bus.clone(),
            store: node.store.clone(),
            metrics: node.metrics.clone(),
            sessions: crate::mqtt::Sessions::load(Some(repo.mqtt_sessions_path())),
            token: node.config.api_token.clone(),
            topics: node.config.topics.clone(),
            // Connections see shutdown begin, say so to their clients and save sessions.
            stopping: node.tasks.stopping(),
            limits: crate::mqtt::Limits::default(),
        };
        node.tasks
            .core("mqtt", crate::mqtt::run(listener, Arc::new(shared)));
    }
    node.tasks.service(
        "housekeeping",
        crate::retention::run(
            node.store.clone(),
            retention,
            node.metrics.clone(),
            repo.root().to_path_buf(),
        ),
    );
    for (kind, source, id, interval) in sensors {
        // The sensor writes for its source only once this node holds the source's history.
        let publisher = node.publisher.clone();
        let mut ready = node.ready.clone();
        node.tasks.background("sensor", async move {
            if ready.wait_for(|r| *r).await.is_ok() {
                crate::sensor::run(publisher, kind, source, id, interval).await;
            }
        });
    }
    DaemonInfo {
        pid: std::process::id(),
        id: node.peer_id.to_string(),
        swarm: swarm_addrs.iter().map(ToString::to_string).collect(),
        api: socket_to_multiaddr(&api_addr),
        metrics: socket_to_multiaddr(&metrics_addr),
        mqtt: mqtt_addr.as_ref().map(socket_to_multiaddr),
    }
    .write(&repo)
    .with_context(|| format!("cannot write {}", repo.daemon_file().display()))?;
    crate::repo::write_synced(&repo.api_file(), socket_to_multiaddr(&api_addr).as_bytes())
        .with_context(|| format!("cannot write {}", repo.api_file().display()))?;
    Ok(Running {
        node,
        api_addr,
        metrics_addr,
        mqtt_addr,
        swarm_addrs,
        repo,
        api_stop,
        api_task,
        metrics_stop,
    })
}

impl Running {
    /// Resolves when a core task dies (never, while the node is healthy).
    pub async fn died(&mut self) -> TaskDied {
        self.node.tasks.died().await
    }

    /// Stops in order: the sensor and the API (in-flight writes finish), the network (peers
    /// see us leave the mesh), the tasks, the store; removes `api` and `daemon.json`.
    pub async fn shutdown(self) {
        let Running {
            node,
            repo,
            api_stop,
            api_task,
            metrics_stop,
            ..
        } = self;
        node.tasks.begin_shutdown();
        api_stop.cancel();
        if tokio::time::timeout(SHUTDOWN_GRACE, api_task)
            .await
            .is_err()
        {
            tracing::warn!("API requests still running after {SHUTDOWN_GRACE:?}; stopping anyway");
        }
        metrics_stop.cancel();
        node.shutdown().await;
        let _ = std::fs::remove_file(repo.api_file());
        let _ = std::fs::remove_file(repo.daemon_file());
    }
}

/// `node daemon`: runs until SIGTERM/SIGINT, or fails when a core task dies.
pub async fn run(repo: Repo, config: Config) -> anyhow::Result<()> {
    if let Some(path) = &config.swarm_key {
        let psk = p2p::transport::read_swarm_key(path)?;
        println!(
            "Private network: swarm key {} (fingerprint {}); QUIC is off because pnet works over TCP only",
            path.display(),
            psk.fingerprint()
        );
    }
    let mut running = start(repo, config).await?;
    // Kubo's start-up lines; scripts should read REPO/daemon.json and REPO/api instead.
    println!("PeerID: {}", running.node.peer_id);
    for a in &running.swarm_addrs {
        println!("Swarm listening on {a}");
    }
    println!(
        "RPC API server listening on {}",
        socket_to_multiaddr(&running.api_addr)
    );
    println!(
        "Metrics server listening on {}",
        socket_to_multiaddr(&running.metrics_addr)
    );
    if let Some(a) = &running.mqtt_addr {
        println!("MQTT listener on {}", socket_to_multiaddr(a));
    }
    let mut ready = running.node.ready.clone();
    let outcome = loop {
        tokio::select! {
            _ = wait_for_signal() => break Ok(()),
            died = running.died() => break Err(died),
            r = ready.wait_for(|v| *v), if !*ready.borrow() => {
                if r.is_ok() {
                    println!("Daemon is ready");
                }
            }
        }
    };
    match &outcome {
        Ok(()) => println!("Received signal, shutting down..."),
        // `main` prints the error and exits non-zero once the node has stopped.
        Err(died) => tracing::error!(%died, "stopping the node"),
    }
    running.shutdown().await;
    println!("Daemon stopped");
    outcome.map_err(anyhow::Error::from)
}

async fn serve(listener: tokio::net::TcpListener, app: axum::Router, stop: CancellationToken) {
    let r = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await;
    if let Err(e) = r {
        tracing::error!(error = %e, "HTTP server failed");
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "node".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{resolve, DaemonArgs, FileConfig};
    use crate::publish::NewReading;

    #[tokio::test]
    async fn starts_in_process_turns_ready_publishes_and_stops_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo::at(dir.path().join("repo"));
        repo.init().unwrap();
        let args = DaemonArgs {
            listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
            api_addr: Some("127.0.0.1:0".into()),
            metrics_addr: Some("127.0.0.1:0".into()),
            mqtt_addr: Some("127.0.0.1:0".into()),
            ..DaemonArgs::default()
        };
        let config = resolve(&args, FileConfig::default(), &repo, None).unwrap();
        let running = start(repo.clone(), config).await.unwrap();
        assert_ne!(running.api_addr.port(), 0);
        assert_eq!(running.swarm_addrs.len(), 1, "{:?}", running.swarm_addrs);
        let info = DaemonInfo::read(&repo).expect("daemon.json written");
        assert_eq!(info.id, running.node.peer_id.to_string());
        assert_eq!(info.api, socket_to_multiaddr(&running.api_addr));
        assert_eq!(
            repo.read_api_file(),
            Some(running.api_addr.to_string()),
            "api file"
        );
        let mut ready = running.node.ready.clone();
        tokio::time::timeout(Duration::from_secs(10), ready.wait_for(|r| *r))
            .await
            .expect("ready within 10 s")
            .unwrap();
        let (cid, r) = running
            .node
            .publisher
            .publish_reading(NewReading {
                topic: "temp".into(),
                value: 20.5,
                ..NewReading::default()
            })
            .await
            .unwrap();
        assert_eq!((r.topic.as_str(), r.seq), ("temperature", 1));
        assert!(running.node.store.is_linked(&cid).unwrap());
        tokio::time::timeout(Duration::from_secs(10), running.shutdown())
            .await
            .expect("stops within 10 s");
        assert!(DaemonInfo::read(&repo).is_none(), "daemon.json removed");
        assert!(repo.read_api_file().is_none(), "api file removed");
        // The store was closed: it opens again, with the reading.
        let store = Store::open(&repo.store_path()).unwrap();
        assert!(store.is_linked(&cid).unwrap());
        store.shutdown();
    }
}
