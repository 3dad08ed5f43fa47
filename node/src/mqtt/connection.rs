//! One MQTT client connection: CONNECT, then packets in and deliveries out until the client
//! leaves, breaks the protocol, goes silent past 1.5x its keepalive, is taken over by a new
//! connection with its client id, or the node stops.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use cid::Cid;
use subtle::ConstantTimeEq;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::codec::{
    self, AckCode, CloseCode, CodecError, ConnCode, Connect, Incoming, Outgoing, SubCode, Version,
    Will,
};
use super::history;
use super::session::SessionState;
use super::topics::{self, Filter, Selects, Target};
use super::Shared;
use crate::api::readings::reading_json;
use crate::bus::{Delivery, Received};
use crate::publish::PublishError;
use crate::reading::Reading;

/// A client must send CONNECT this soon after connecting.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A client that does not take a packet for this long is cut off (it holds our buffers).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Deliveries queued between the bus and one connection.
const FORWARD_QUEUE: usize = 1024;
/// QoS 1 deliveries tracked until acknowledged; past this a client that never acknowledges
/// is not tracked further (its session may then be replayed readings it already has).
const MAX_INFLIGHT: usize = 10_000;
/// Longest client id accepted.
const MAX_CLIENT_ID: usize = 256;

/// What the bus forwards to a connection.
enum Fwd {
    Delivery(String, Arc<Delivery>),
    Dropped(u64),
}

/// Why a connection ends, which decides whether the will is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// DISCONNECT: no will.
    Clean,
    /// 5.0 DISCONNECT with reason 0x04: the will is published.
    CleanWithWill,
    /// Lost, refused or broken: the will is published.
    Lost,
    /// The node stops or a newer connection took the client id: no will.
    Quiet,
}

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

fn reject_reason(e: &CodecError) -> &'static str {
    match e {
        CodecError::TooLarge { .. } => "too-large",
        CodecError::BadVersion(_) => "bad-version",
        _ => "malformed",
    }
}

fn conn_ack(code: ConnCode, present: bool, assigned: Option<String>, max: u32) -> Outgoing {
    Outgoing::ConnAck {
        session_present: present,
        code,
        assigned_id: assigned,
        max_packet: max,
    }
}

/// The client's state while it is connected.
struct Conn {
    version: Version,
    client_id: String,
    wr: OwnedWriteHalf,
    shared: Arc<Shared>,
    /// The session outlives the connection.
    persistent: bool,
    state: SessionState,
    filters: Vec<Filter>,
    /// Bus topics followed (each by one forwarder task).
    followed: HashSet<String>,
    fwd_tx: mpsc::Sender<Fwd>,
    forwarders: JoinSet<()>,
    /// QoS 1 deliveries awaiting PUBACK: pkid → (topic, source, seq).
    inflight: HashMap<u16, (String, String, u64)>,
    next_pkid: u16,
    /// CIDs replayed from the store, skipped when they also arrive live.
    replayed: HashSet<Cid>,
    out: BytesMut,
}

impl Conn {
    fn new(
        version: Version,
        client_id: String,
        wr: OwnedWriteHalf,
        shared: Arc<Shared>,
        persistent: bool,
    ) -> Conn {
        let (fwd_tx, _) = mpsc::channel(1);
        Conn {
            version,
            client_id,
            wr,
            shared,
            persistent,
            state: SessionState::default(),
            filters: Vec::new(),
            followed: HashSet::new(),
            fwd_tx,
            forwarders: JoinSet::new(),
            inflight: HashMap::new(),
            next_pkid: 0,
            replayed: HashSet::new(),
            out: BytesMut::new(),
        }
    }

    async fn send(&mut self, p: &Outgoing) -> std::io::Result<()> {
        self.out.clear();
        codec::encode(self.version, p, &mut self.out).map_err(std::io::Error::other)?;
        if self.out.is_empty() {
            return Ok(());
        }
        match tokio::time::timeout(WRITE_TIMEOUT, self.wr.write_all(&self.out)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::other("client does not read")),
        }
    }

    /// Closes with a reason (5.0 DISCONNECT; 3.1.1 has none and just closes).
    async fn close(&mut self, code: CloseCode, end: End) -> End {
        let _ = self.send(&Outgoing::Disconnect(code)).await;
        end
    }

    fn pkid(&mut self) -> u16 {
        self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
        self.next_pkid
    }

    /// Every topic a wildcard topic level can reach: the kept topics and those in the store.
    fn all_topics(&self) -> Vec<String> {
        let mut topics = self.shared.topics.clone();
        if let Ok(stored) = self.shared.store.topics() {
            topics.extend(stored);
        }
        topics.sort();
        topics.dedup();
        topics
    }

    async fn follow(&mut self, f: &Filter) {
        let wanted = match &f.selects {
            Selects::Readings { topic: Some(t) } => vec![t.clone()],
            Selects::Readings { topic: None } => self.all_topics(),
            Selects::Raw(t) => vec![t.clone()],
        };
        for t in wanted {
            if !self.followed.insert(t.clone()) {
                continue;
            }
            let mut sub = self.shared.bus.subscribe(&t).await;
            let tx = self.fwd_tx.clone();
            self.forwarders.spawn(async move {
                while let Some(got) = sub.recv().await {
                    let msg = match got {
                        Received::Delivery(d) => Fwd::Delivery(t.clone(), d),
                        Received::Dropped(n) => Fwd::Dropped(n),
                    };
                    if tx.send(msg).await.is_err() {
                        break;
                    }
                }
            });
        }
    }

    async fn send_reading(
        &mut self,
        cid: &Cid,
        r: &Reading,
        backfilled: bool,
        retain: bool,
        qos: u8,
    ) -> std::io::Result<()> {
        let payload = Bytes::from(reading_json(cid, r, backfilled).to_string());
        let pkid = if qos == 1 { self.pkid() } else { 0 };
        if qos == 1 && self.inflight.len() < MAX_INFLIGHT {
            self.inflight
                .insert(pkid, (r.topic.clone(), r.source.clone(), r.seq));
        } else {
            self.state.mark_delivered(&r.topic, &r.source, r.seq);
        }
        self.shared.metrics.mqtt_messages_out.inc();
        self.send(&Outgoing::Publish {
            topic: topics::reading_topic(&r.topic, &r.source),
            qos,
            pkid,
            retain,
            payload,
        })
        .await
    }

    fn reading_qos(&self, r: &Reading) -> Option<u8> {
        self.filters
            .iter()
            .filter(|f| f.matches_reading(&r.topic, &r.source))
            .map(|f| f.qos)
            .max()
    }

    async fn forward(&mut self, f: Fwd) -> std::io::Result<()> {
        match f {
            Fwd::Delivery(bus_topic, d) => match d.as_ref() {
                Delivery::Reading {
                    cid,
                    reading,
                    backfilled,
                    ..
                } => {
                    if !self.replayed.is_empty() && self.replayed.remove(cid) {
                        return Ok(());
                    }
                    if let Some(qos) = self.reading_qos(reading) {
                        self.send_reading(cid, reading, *backfilled, false, qos)
                            .await?;
                    }
                }
                Delivery::Raw { data, .. } => {
                    let qos = self
                        .filters
                        .iter()
                        .filter(|f| f.selects == Selects::Raw(bus_topic.clone()))
                        .map(|f| f.qos)
                        .max();
                    if let Some(qos) = qos {
                        let pkid = if qos == 1 { self.pkid() } else { 0 };
                        self.shared.metrics.mqtt_messages_out.inc();
                        self.send(&Outgoing::Publish {
                            topic: bus_topic,
                            qos,
                            pkid,
                            retain: false,
                            payload: Bytes::copy_from_slice(data),
                        })
                        .await?;
                    }
                }
            },
            Fwd::Dropped(n) => {
                tracing::warn!(client = %self.client_id, dropped = n, "MQTT subscriber too slow; readings skipped (they stay in the store)");
                self.shared.metrics.mqtt_reject("slow-subscriber");
            }
        }
        Ok(())
    }

    /// Publishes through the node's publisher; the error is the PUBACK a 5.0 client gets.
    async fn publish(&self, topic: &str, payload: &Bytes) -> Result<(), (AckCode, &'static str)> {
        let invalid = |e: String| (AckCode::Invalid(e), "bad-reading");
        let target =
            topics::target(topic).map_err(|e| (AckCode::Invalid(e.to_string()), "bad-topic"))?;
        let result = match target {
            Target::Reading { topic, source } => {
                let new = topics::new_reading(&topic, &source, payload)
                    .map_err(|e| invalid(e.to_string()))?;
                self.shared.publisher.publish_reading(new).await.map(|_| ())
            }
            Target::Raw(t) => {
                self.shared
                    .publisher
                    .publish_raw(&t, payload.to_vec())
                    .await
            }
        };
        result.map_err(|e| match e {
            PublishError::Invalid(e) => invalid(e.to_string()),
            other => (AckCode::Unavailable(other.to_string()), "unavailable"),
        })
    }

    async fn persist(&self) {
        let state = if self.persistent {
            Some(self.state.clone())
        } else {
            None
        };
        if let Err(e) = self.shared.sessions.put(&self.client_id, state).await {
            tracing::warn!(client = %self.client_id, error = %e, "MQTT session not saved");
        }
    }

    /// Acts on one packet; `Err` ends the connection.
    async fn handle(&mut self, p: Incoming) -> Result<(), End> {
        let io = |_| End::Lost;
        match p {
            Incoming::Connect(_) => {
                self.shared.metrics.mqtt_reject("second-connect");
                Err(self.close(CloseCode::ProtocolError, End::Lost).await)
            }
            Incoming::Publish {
                topic,
                qos,
                pkid,
                payload,
            } => {
                self.shared.metrics.mqtt_messages_in.inc();
                if qos > 1 {
                    self.shared.metrics.mqtt_reject("qos2");
                    return Err(self.close(CloseCode::QosNotSupported, End::Lost).await);
                }
                match self.publish(&topic, &payload).await {
                    Ok(()) if qos == 1 => self
                        .send(&Outgoing::PubAck {
                            pkid,
                            code: AckCode::Success,
                        })
                        .await
                        .map_err(io),
                    Ok(()) => Ok(()),
                    Err((code, reason)) => {
                        self.shared.metrics.mqtt_reject(reason);
                        tracing::info!(client = %self.client_id, %topic, ?code, "MQTT publish refused");
                        match (qos, self.version) {
                            (1, Version::V5) => self
                                .send(&Outgoing::PubAck { pkid, code })
                                .await
                                .map_err(io),
                            // 3.1.1 has no negative PUBACK: closing leaves the message
                            // unacknowledged, which the client sees.
                            (1, Version::V4) => Err(End::Lost),
                            _ => Ok(()),
                        }
                    }
                }
            }
            Incoming::PubAck(pkid) => {
                if let Some((t, s, seq)) = self.inflight.remove(&pkid) {
                    self.state.mark_delivered(&t, &s, seq);
                }
                Ok(())
            }
            Incoming::Subscribe { pkid, filters } => self.subscribe(pkid, filters).await,
            Incoming::Unsubscribe { pkid, filters } => {
                let count = filters.len();
                self.filters.retain(|f| !filters.contains(&f.text));
                self.state.subscriptions = self.subscriptions();
                if self.persistent {
                    self.persist().await;
                }
                self.send(&Outgoing::UnsubAck { pkid, count })
                    .await
                    .map_err(io)
            }
            Incoming::PingReq => self.send(&Outgoing::PingResp).await.map_err(io),
            Incoming::Disconnect {
                with_will,
                session_expiry,
            } => {
                match session_expiry {
                    Some(0) => self.persistent = false,
                    Some(s) if self.persistent => self.state.expiry_s = s,
                    _ => {}
                }
                Err(if with_will {
                    End::CleanWithWill
                } else {
                    End::Clean
                })
            }
            Incoming::Unsupported(what) => {
                self.shared.metrics.mqtt_reject("unsupported");
                tracing::info!(client = %self.client_id, what, "unsupported MQTT feature; closing");
                let code = match what {
                    "QoS 2" => CloseCode::QosNotSupported,
                    "topic alias" => CloseCode::TopicAliasInvalid,
                    _ => CloseCode::ProtocolError,
                };
                Err(self.close(code, End::Lost).await)
            }
        }
    }

    fn subscriptions(&self) -> Vec<(String, u8)> {
        self.filters
            .iter()
            .map(|f| (f.text.clone(), f.qos))
            .collect()
    }

    async fn subscribe(&mut self, pkid: u16, wanted: Vec<(String, u8)>) -> Result<(), End> {
        let mut codes = Vec::with_capacity(wanted.len());
        let mut added = Vec::new();
        for (text, qos) in wanted {
            let existing = self.filters.iter().position(|f| f.text == text);
            if existing.is_none() && self.filters.len() >= self.shared.limits.max_subscriptions {
                self.shared.metrics.mqtt_reject("too-many-subscriptions");
                codes.push(SubCode::Quota);
                continue;
            }
            match Filter::parse(&text, qos) {
                Ok(f) => {
                    codes.push(SubCode::Granted(f.qos));
                    match existing {
                        Some(i) => self.filters[i] = f.clone(),
                        None => self.filters.push(f.clone()),
                    }
                    added.push(f);
                }
                Err(e) => {
                    self.shared.metrics.mqtt_reject("bad-filter");
                    tracing::info!(client = %self.client_id, error = %e, "MQTT subscription refused");
                    codes.push(SubCode::Invalid);
                }
            }
        }
        for f in &added {
            self.follow(f).await;
        }
        self.state.subscriptions = self.subscriptions();
        if self.persistent {
            // Durable before SUBACK: a subscription acknowledged survives a restart.
            self.persist().await;
        }
        self.send(&Outgoing::SubAck { pkid, codes })
            .await
            .map_err(|_| End::Lost)?;
        // Retained messages: the latest reading of each matching source.
        let topics = self.all_topics();
        for f in added {
            let store = self.shared.store.clone();
            let (t, filter) = (topics.clone(), f.clone());
            let rows = tokio::task::spawn_blocking(move || history::retained(&store, &t, &filter))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            for r in rows {
                // A resumed session already has (or is being replayed) this reading.
                let (t, src) = (&r.reading.topic, &r.reading.source);
                if self.replayed.contains(&r.cid)
                    || r.reading.seq <= self.state.delivered_seq(t, src)
                {
                    continue;
                }
                self.send_reading(&r.cid, &r.reading, false, true, f.qos)
                    .await
                    .map_err(|_| End::Lost)?;
            }
        }
        Ok(())
    }

    /// Resumes a stored session: follows its filters, then sends what it missed.
    async fn resume(&mut self) -> std::io::Result<()> {
        let mut filters = Vec::new();
        for (text, qos) in &self.state.subscriptions {
            if let Ok(f) = Filter::parse(text, *qos) {
                filters.push(f);
            }
        }
        self.filters = filters.clone();
        // Live first, then the store: nothing falls between; duplicates are skipped.
        for f in &filters {
            self.follow(f).await;
        }
        let store = self.shared.store.clone();
        let topics = self.all_topics();
        let state = self.state.clone();
        let rows =
            tokio::task::spawn_blocking(move || history::missed(&store, &topics, &filters, &state))
                .await
                .map_err(std::io::Error::other)?
                .map_err(std::io::Error::other)?;
        tracing::info!(client = %self.client_id, missed = rows.len(), "MQTT session resumed");
        for r in rows {
            if let Some(qos) = self.reading_qos(&r.reading) {
                self.replayed.insert(r.cid);
                self.send_reading(&r.cid, &r.reading, true, false, qos)
                    .await?;
            }
        }
        Ok(())
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
    let (fwd_tx, mut fwd_rx) = mpsc::channel(FORWARD_QUEUE);
    conn.fwd_tx = fwd_tx;
    shared.metrics.mqtt_connections.inc();
    let will = c.will.clone();
    let end = run(
        &mut conn,
        &mut rd,
        &mut buf,
        &mut fwd_rx,
        present,
        assigned,
        &taken,
        c.keep_alive,
        max_packet,
    )
    .await;
    conn.forwarders.abort_all();
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

#[allow(clippy::too_many_arguments)]
async fn run(
    conn: &mut Conn,
    rd: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    fwd_rx: &mut mpsc::Receiver<Fwd>,
    present: bool,
    assigned: Option<String>,
    taken: &tokio_util::sync::CancellationToken,
    keep_alive: u16,
    max_packet: usize,
) -> End {
    let ack = conn_ack(ConnCode::Accepted, present, assigned, max_packet as u32);
    if conn.send(&ack).await.is_err() {
        return End::Lost;
    }
    if present && conn.resume().await.is_err() {
        return End::Lost;
    }
    // The spec's grace: a client is cut off after 1.5 keepalive periods of silence.
    let grace = (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500));
    let mut last_heard = Instant::now();
    let stopping = conn.shared.stopping.clone();
    // Packets a client sent right behind its CONNECT are already in the buffer.
    if let Some(end) = drain(conn, buf, max_packet).await {
        return end;
    }
    loop {
        let deadline = grace.map(|g| last_heard + g);
        tokio::select! {
            _ = stopping.cancelled() => {
                return conn.close(CloseCode::ShuttingDown, End::Quiet).await;
            }
            _ = taken.cancelled() => {
                return conn.close(CloseCode::TakenOver, End::Quiet).await;
            }
            _ = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => {
                conn.shared.metrics.mqtt_reject("keepalive");
                return conn.close(CloseCode::KeepAlive, End::Lost).await;
            }
            n = rd.read_buf(buf) => {
                match n {
                    Ok(0) | Err(_) => return End::Lost,
                    Ok(_) => last_heard = Instant::now(),
                }
                if let Some(end) = drain(conn, buf, max_packet).await {
                    return end;
                }
            }
            Some(f) = fwd_rx.recv() => {
                if conn.forward(f).await.is_err() {
                    return End::Lost;
                }
            }
        }
    }
}

/// Handles every complete packet in `buf`; `Some` when the connection must end.
async fn drain(conn: &mut Conn, buf: &mut BytesMut, max_packet: usize) -> Option<End> {
    loop {
        match codec::decode(buf, Some(conn.version), max_packet) {
            Ok(Some(p)) => {
                if let Err(end) = conn.handle(p).await {
                    return Some(end);
                }
            }
            Ok(None) => return None,
            Err(e) => {
                conn.shared.metrics.mqtt_reject(reject_reason(&e));
                tracing::info!(client = %conn.client_id, error = %e, "bad MQTT packet; closing");
                let code = match e {
                    CodecError::TooLarge { .. } => CloseCode::TooLarge,
                    _ => CloseCode::Malformed,
                };
                return Some(conn.close(code, End::Lost).await);
            }
        }
    }
}
