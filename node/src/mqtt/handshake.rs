//! Accepting a client: its CONNECT (within a deadline), the password (the API token), the
//! client id, and whether a stored session is resumed; then [`super::connection`] serves it and
//! this publishes the will and saves the session when it ends.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use subtle::ConstantTimeEq;
use tokio::io::AsyncReadExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use super::codec::{self, CodecError, ConnCode, Connect, Incoming, Outgoing, Version, Will};
use super::connection::{reject_reason, run, Conn, End};
use super::session::SessionState;
use super::Shared;

/// A client must send CONNECT this soon after connecting.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest client id accepted.
const MAX_CLIENT_ID: usize = 256;

/// Serves one accepted TCP connection to its end.
pub async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let (mut rd, wr) = stream.into_split();
    let mut buf = BytesMut::with_capacity(4096);
    let connect = match tokio::time::timeout(
        CONNECT_TIMEOUT,
        read_connect(&mut rd, &mut buf, shared.limits.max_packet),
    )
    .await
    {
        Ok(Ok(c)) => c,
        Ok(Err(ConnectFailed::BadVersion(level))) => {
            shared.metrics.mqtt_reject("bad-version");
            tracing::info!(level, "MQTT client with an unsupported protocol level");
            let mut conn = Conn::new(Version::V4, String::new(), wr, shared, false);
            let _ = conn
                .send(&conn_ack(ConnCode::BadVersion, false, None, 0))
                .await;
            return;
        }
        Ok(Err(ConnectFailed::Bad(e))) => {
            shared.metrics.mqtt_reject(reject_reason(&e));
            tracing::info!(error = %e, "MQTT connection refused before CONNECT");
            return;
        }
        Ok(Err(ConnectFailed::Closed)) => return,
        Err(_) => {
            shared.metrics.mqtt_reject("connect-timeout");
            return;
        }
    };
    session(connect, rd, buf, wr, shared).await;
}

enum ConnectFailed {
    BadVersion(u8),
    Bad(CodecError),
    Closed,
}

async fn read_connect(
    rd: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Connect, ConnectFailed> {
    loop {
        match codec::decode(buf, None, max) {
            Ok(Some(Incoming::Connect(c))) => return Ok(c),
            Ok(Some(_)) => return Err(ConnectFailed::Bad(CodecError::NotConnect)),
            Ok(None) => {}
            Err(CodecError::BadVersion(l)) => return Err(ConnectFailed::BadVersion(l)),
            Err(e) => return Err(ConnectFailed::Bad(e)),
        }
        match rd.read_buf(buf).await {
            Ok(0) | Err(_) => return Err(ConnectFailed::Closed),
            Ok(_) => {}
        }
    }
}

/// A CONNACK.
pub(super) fn conn_ack(
    code: ConnCode,
    present: bool,
    assigned: Option<String>,
    max: u32,
) -> Outgoing {
    Outgoing::ConnAck {
        session_present: present,
        code,
        assigned_id: assigned,
        max_packet: max,
    }
}

async fn session(
    c: Connect,
    mut rd: OwnedReadHalf,
    mut buf: BytesMut,
    wr: OwnedWriteHalf,
    shared: Arc<Shared>,
) {
    let max_packet = shared.limits.max_packet;
    let persistent = match c.version {
        Version::V4 => !c.clean_start,
        Version::V5 => c.session_expiry.unwrap_or(0) > 0,
    };
    let mut conn = Conn::new(
        c.version,
        c.client_id.clone(),
        wr,
        shared.clone(),
        persistent,
    );
    if let Some(token) = &shared.token {
        let ok = c
            .password
            .as_deref()
            .is_some_and(|p| bool::from(p.as_bytes().ct_eq(token.as_bytes())));
        if !ok {
            shared.metrics.mqtt_reject("bad-credentials");
            tracing::info!(client = %c.client_id, "MQTT client with a missing or wrong password (the API token)");
            let _ = conn
                .send(&conn_ack(ConnCode::BadCredentials, false, None, 0))
                .await;
            return;
        }
    }
    let mut assigned = None;
    if c.client_id.is_empty() {
        if persistent {
            shared.metrics.mqtt_reject("bad-client-id");
            let _ = conn
                .send(&conn_ack(ConnCode::BadClientId, false, None, 0))
                .await;
            return;
        }
        conn.client_id = format!("sensornet-{:016x}", rand::random::<u64>());
        assigned = (c.version == Version::V5).then(|| conn.client_id.clone());
    } else if c.client_id.len() > MAX_CLIENT_ID {
        shared.metrics.mqtt_reject("bad-client-id");
        let _ = conn
            .send(&conn_ack(ConnCode::BadClientId, false, None, 0))
            .await;
        return;
    }
    let id = conn.client_id.clone();
    let (conn_no, taken) = shared.sessions.attach(&id);
    let stored = if c.clean_start {
        if let Err(e) = shared.sessions.put(&id, None).await {
            tracing::warn!(client = %id, error = %e, "old MQTT session not removed");
        }
        None
    } else {
        shared.sessions.get(&id)
    };
    let present = stored.is_some();
    let expiry = match c.version {
        Version::V4 => u32::MAX,
        Version::V5 => c.session_expiry.unwrap_or(0),
    };
    conn.state = stored.unwrap_or_else(|| SessionState::new(expiry));
    conn.state.expiry_s = expiry;
    conn.state.disconnected_ms = None;
    shared.metrics.mqtt_connections.inc();
    let will = c.will.clone();
    let end = run(
        &mut conn,
        &mut rd,
        &mut buf,
        present,
        assigned,
        &taken,
        c.keep_alive,
        max_packet,
    )
    .await;
    // Its subscriptions end with the connection (the subscriber gauge drops now).
    conn.subs_mut().clear();
    if matches!(end, End::Lost | End::CleanWithWill) {
        if let Some(w) = will {
            publish_will(&conn, &w).await;
        }
    }
    if shared.sessions.is_current(&id, conn_no) {
        conn.state.disconnected_ms = Some(crate::clock::now_ms());
        conn.persist().await;
    }
    shared.sessions.detach(&id, conn_no);
    shared.metrics.mqtt_connections.dec();
    tracing::debug!(client = %id, ?end, "MQTT connection ended");
}

async fn publish_will(conn: &Conn, w: &Will) {
    match conn.publish(&w.topic, &w.payload).await {
        Ok(()) => tracing::info!(client = %conn.client_id, topic = %w.topic, "MQTT will published"),
        Err((code, _)) => {
            tracing::info!(client = %conn.client_id, topic = %w.topic, ?code, "MQTT will refused")
        }
    }
}
