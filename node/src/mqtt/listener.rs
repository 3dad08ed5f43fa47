//! The accept loop: binds the MQTT address, bounds the connections, serves each in its own
//! task and, when the node stops, waits (briefly) for them to save their sessions.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use super::Shared;

/// How long stopping waits for connections to finish (sessions are saved on the way out).
const DRAIN: Duration = Duration::from_secs(3);

/// Listener failures.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot bind the MQTT listener on {addr}: {source}; is another daemon or an MQTT broker (mosquitto) using it? Pass --mqtt-addr HOST:PORT, or --mqtt-addr off")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Binds the MQTT address (`--mqtt-addr`).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ListenError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ListenError::Bind { addr, source })
}

/// Accepts connections until `shared.stopping` is cancelled.
pub async fn run(listener: TcpListener, shared: Arc<Shared>) {
    let slots = Arc::new(Semaphore::new(shared.limits.max_connections));
    let conns = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = shared.stopping.cancelled() => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => match slots.clone().try_acquire_owned() {
                Ok(slot) => {
                    let shared = shared.clone();
                    conns.spawn(async move {
                        super::handshake::serve(stream, shared).await;
                        drop(slot);
                    });
                }
                Err(_) => {
                    shared.metrics.mqtt_reject("too-many-connections");
                    tracing::warn!(%peer, "MQTT connection refused: {} connections open", shared.limits.max_connections);
                    drop(stream);
                }
            },
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "MQTT accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    conns.close();
    if tokio::time::timeout(DRAIN, conns.wait()).await.is_err() {
        tracing::warn!("MQTT connections still open after {DRAIN:?}; stopping anyway");
    }
}
