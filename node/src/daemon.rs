//! Starts a node: store, swarm, sync, API, metrics, sensor; stops it cleanly on SIGTERM/SIGINT.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::api::{self, ApiState};
use crate::bus::Bus;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::node::{now_ms, Node};
use crate::p2p::{self, behaviour::Behaviour};
use crate::repo::{socket_to_multiaddr, Repo};
use crate::store::{Batch, Store};
use crate::sync::Sync;

/// How long shutdown may take before in-flight work is abandoned.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Runs the daemon until a signal arrives.
pub async fn run(repo: Repo, config: Config) -> anyhow::Result<()> {
    let key = repo.identity()?;
    let peer_id = key.public().to_peer_id();
    let store = Store::open(&repo.store_path())?;

    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    metrics.init_topics(&config.topics);
    let libp2p_metrics = libp2p::metrics::Metrics::new(&mut registry);
    let behaviour = Behaviour::new(
        &key,
        &config.topics,
        config.mdns,
        registry.sub_registry_with_prefix("libp2p"),
    )?;
    let psk = match &config.swarm_key {
        Some(path) => {
            let psk = p2p::transport::read_swarm_key(path)?;
            println!(
                "Private network: swarm key {} (fingerprint {}); QUIC is off because pnet works over TCP only",
                path.display(),
                psk.fingerprint()
            );
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
    let (net, events, requests) = p2p::swarm::spawn(swarm, libp2p_metrics);

    let (ready_tx, ready_rx) = watch::channel(false);
    let default_source = hostname();
    let config = Arc::new(config);
    let node = Node::new(
        key.public(),
        store.clone(),
        net.clone(),
        Arc::new(Bus::default()),
        metrics.clone(),
        config.clone(),
        ready_rx.clone(),
        default_source,
    );
    for t in &config.topics {
        net.subscribe(t).await;
    }

    // Print the bound addresses (port 0 resolved) once the listeners are up.
    let mut listening = Vec::new();
    for _ in 0..50 {
        listening = net.listening().await?;
        if listening.len() >= config.listen.len().min(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    listening = net.listening().await.unwrap_or(listening);
    println!("PeerID: {peer_id}");
    for a in &listening {
        println!("Swarm listening on {a}");
    }

    let api_listener = tokio::net::TcpListener::bind(config.api_addr)
        .await
        .with_context(|| {
            format!(
                "cannot bind the API on {}; is another daemon running? (--api-addr)",
                config.api_addr
            )
        })?;
    let api_addr = api_listener.local_addr()?;
    let metrics_listener = tokio::net::TcpListener::bind(config.metrics_addr)
        .await
        .with_context(|| {
            format!(
                "cannot bind the metrics address {} (--metrics-addr)",
                config.metrics_addr
            )
        })?;
    let metrics_addr = metrics_listener.local_addr()?;
    println!(
        "RPC API server listening on {}",
        socket_to_multiaddr(&api_addr)
    );
    println!(
        "Metrics server listening on {}",
        socket_to_multiaddr(&metrics_addr)
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let registry = Arc::new(registry);
    let app = api::router(ApiState {
        node: node.clone(),
        token: config.api_token.clone(),
    });
    let api_task = tokio::spawn(serve(api_listener, app, stop_rx.clone()));
    let metrics_task = tokio::spawn(serve(
        metrics_listener,
        crate::health::router(registry, ready_rx.clone()),
        stop_rx.clone(),
    ));
    crate::repo::DaemonInfo {
        pid: std::process::id(),
        id: peer_id.to_string(),
        swarm: listening.iter().map(ToString::to_string).collect(),
        api: socket_to_multiaddr(&api_addr),
        metrics: socket_to_multiaddr(&metrics_addr),
    }
    .write(&repo)
    .with_context(|| format!("cannot write {}", repo.daemon_file().display()))?;
    std::fs::write(repo.api_file(), socket_to_multiaddr(&api_addr))
        .with_context(|| format!("cannot write {}", repo.api_file().display()))?;

    let (boot_tx, boot_rx) = watch::channel(false);
    let discovery = tokio::spawn(p2p::discovery::run(
        net.clone(),
        config.bootstrap.clone(),
        boot_tx,
    ));
    let sync = tokio::spawn(Sync::run(node.clone(), events, boot_rx, ready_tx));
    let server = tokio::spawn(crate::sync::serve::run(node.clone(), requests));
    let housekeeping = tokio::spawn(housekeeping(node.clone(), repo.clone()));
    let sensor = match &config.sensor {
        Some(s) => {
            let (kind, source) = crate::sensor::open(s, config.seed)?;
            let id =
                s.id.clone()
                    .unwrap_or_else(|| format!("{}-{}", hostname(), kind.topic()));
            Some(tokio::spawn(crate::sensor::run(
                node.clone(),
                kind,
                source,
                id,
                s.interval,
            )))
        }
        None => None,
    };
    {
        let mut r = ready_rx.clone();
        tokio::spawn(async move {
            if r.wait_for(|v| *v).await.is_ok() {
                println!("Daemon is ready");
            }
        });
    }

    wait_for_signal().await;
    println!("Received signal, shutting down...");
    let shutdown = async {
        if let Some(s) = sensor {
            s.abort();
        }
        let _ = stop_tx.send(true);
        // In-flight API writes finish: the servers drain their connections.
        let _ = api_task.await;
        discovery.abort();
        net.shutdown().await;
        sync.abort();
        server.abort();
        housekeeping.abort();
        let _ = metrics_task.await;
    };
    if tokio::time::timeout(SHUTDOWN_GRACE, shutdown)
        .await
        .is_err()
    {
        tracing::warn!("shutdown took longer than {SHUTDOWN_GRACE:?}; stopping anyway");
    }
    // Every acknowledged write is already durable; this waits for queued ones.
    store.shutdown();
    let _ = std::fs::remove_file(repo.api_file());
    let _ = std::fs::remove_file(repo.daemon_file());
    println!("Daemon stopped");
    Ok(())
}

async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    mut stop: watch::Receiver<bool>,
) {
    let r = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|v| *v).await;
        })
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

/// Store gauges every few seconds; retention once a minute.
async fn housekeeping(node: Node, repo: Repo) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        if let Ok(s) = node.store.stats() {
            node.metrics.store_blocks.set(s.blocks as i64);
            node.metrics.store_bytes.set(s.bytes as i64);
        }
        if let Ok(fs) = nix::sys::statvfs::statvfs(repo.root()) {
            let frag = fs.fragment_size() as i64;
            node.metrics
                .disk_free
                .set(fs.blocks_available() as i64 * frag);
            node.metrics.disk_total.set(fs.blocks() as i64 * frag);
        }
        // Retention runs once a minute, or every tick when a window is shorter than a minute.
        let short = std::iter::once(node.config.retention)
            .chain(node.config.retention_topics.values().copied())
            .any(|r| r.max_age < Duration::from_secs(60));
        if short || n % 12 == 0 {
            collect_garbage(&node).await;
        }
        n += 1;
    }
}

/// Drops readings older than their topic's retention window, then the oldest ones while the
/// topic holds more than its byte budget.
pub async fn collect_garbage(node: &Node) {
    let Ok(topics) = node.store.topics() else {
        return;
    };
    for topic in topics {
        let retention = node.config.retention_for(&topic);
        let horizon = now_ms().saturating_sub(retention.max_age.as_millis() as u64);
        let mut over = node
            .store
            .topic_bytes(&topic)
            .map(|b| b.saturating_sub(retention.max_bytes))
            .unwrap_or(0);
        while let Ok(mut old) = node.store.expired(&topic, horizon, 5000) {
            if old.is_empty() && over > 0 {
                // Within the age window but over budget: the oldest go, ~150 bytes each.
                let n = (over / 100).clamp(1, 5000) as usize;
                old = node.store.expired(&topic, u64::MAX, n).unwrap_or_default();
            }
            if old.is_empty() {
                break;
            }
            let n = old.len();
            let expire = old
                .into_iter()
                .map(|(t, c)| (topic.clone(), t, c))
                .collect();
            if let Err(e) = node
                .store
                .write(Batch {
                    expire,
                    ..Batch::default()
                })
                .await
            {
                tracing::warn!(%topic, error = %e, "retention failed");
                break;
            }
            tracing::info!(%topic, readings = n, "retention removed old readings");
            over = node
                .store
                .topic_bytes(&topic)
                .map(|b| b.saturating_sub(retention.max_bytes))
                .unwrap_or(0);
            if n < 5000 && over == 0 {
                break;
            }
        }
    }
}
