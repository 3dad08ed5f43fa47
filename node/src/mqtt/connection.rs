//! One connected MQTT client: packets in and deliveries out until the client leaves, breaks
//! the protocol, goes silent past 1.5x its keepalive, is taken over by a new connection with
//! its client id, or the node stops. [`super::handshake`] gets it this far.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use cid::Cid;
use futures::stream::{BoxStream, SelectAll};
use futures::{FutureExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::Instant;

use super::codec::{
    self, AckCode, CloseCode, CodecError, ConnCode, Incoming, Outgoing, SubCode, Version,
};
use super::handshake::conn_ack;
use super::history;
use super::session::SessionState;
use super::topics::{self, Filter, Selects, Target};
use super::Shared;
use crate::api::readings::reading_json;
use crate::bus::{Delivery, Received};
use crate::publish::PublishError;
use crate::reading::Reading;

/// A client that does not take a packet for this long is cut off (it holds our buffers).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// QoS 1 deliveries tracked until acknowledged; past this a client that never acknowledges
/// is not tracked further (its session may then be replayed readings it already has).
const MAX_INFLIGHT: usize = 10_000;

/// What the bus forwards to a connection.
pub(super) enum Fwd {
    Delivery(String, Arc<Delivery>),
    Dropped(u64),
}

/// Why a connection ends, which decides whether the will is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// DISCONNECT: no will.
    Clean,
    /// 5.0 DISCONNECT with reason 0x04: the will is published.
    CleanWithWill,
    /// Lost, refused or broken: the will is published.
    Lost,
    /// The node stops or a newer connection took the client id: no will.
    Quiet,
}

pub(super) fn reject_reason(e: &CodecError) -> &'static str {
    match e {
        CodecError::TooLarge { .. } => "too-large",
        CodecError::BadVersion(_) => "bad-version",
        _ => "malformed",
    }
}

/// The client's state while it is connected.
pub(super) struct Conn {
    pub(super) version: Version,
    pub(super) client_id: String,
    pub(super) wr: OwnedWriteHalf,
    pub(super) shared: Arc<Shared>,
    /// The session outlives the connection.
    pub(super) persistent: bool,
    pub(super) state: SessionState,
    pub(super) filters: Vec<Filter>,
    /// Bus topics followed.
    pub(super) followed: HashSet<String>,
    /// Their subscriptions, read by the connection's own task: a forwarding task between
    /// the bus and the connection cost a task wake-up per reading on the way to the client.
    /// Only ever reached through `get_mut` (no locking): the mutex makes `Conn` `Sync`.
    pub(super) subs: std::sync::Mutex<SelectAll<BoxStream<'static, Fwd>>>,
    /// QoS 1 deliveries awaiting PUBACK: pkid → (topic, source, seq).
    pub(super) inflight: HashMap<u16, (String, String, u64)>,
    pub(super) next_pkid: u16,
    /// CIDs replayed from the store, skipped when they also arrive live.
    pub(super) replayed: HashSet<Cid>,
    pub(super) out: BytesMut,
    /// While set, packets gather in `out` and go out in one write at [`Self::uncork`].
    pub(super) corked: bool,
}

impl Conn {
    pub(super) fn new(
        version: Version,
        client_id: String,
        wr: OwnedWriteHalf,
        shared: Arc<Shared>,
        persistent: bool,
    ) -> Conn {
        Conn {
            version,
            client_id,
            wr,
            shared,
            persistent,
            state: SessionState::default(),
            filters: Vec::new(),
            followed: HashSet::new(),
            subs: Default::default(),
            inflight: HashMap::new(),
            next_pkid: 0,
            replayed: HashSet::new(),
            out: BytesMut::new(),
            corked: false,
        }
    }

    /// The bus subscriptions, for this connection's task alone.
    pub(super) fn subs_mut(&mut self) -> &mut SelectAll<BoxStream<'static, Fwd>> {
        self.subs.get_mut().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) async fn send(&mut self, p: &Outgoing) -> std::io::Result<()> {
        self.send_all(std::slice::from_ref(p)).await
    }

    /// Closes with a reason (5.0 DISCONNECT; 3.1.1 has none and just closes).
    pub(super) async fn close(&mut self, code: CloseCode, end: End) -> End {
        let _ = self.send(&Outgoing::Disconnect(code)).await;
        end
    }

    fn pkid(&mut self) -> u16 {
        self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
        self.next_pkid
    }

    /// Every topic a wildcard topic level can reach: the kept topics and those in the store.
    pub(super) fn all_topics(&self) -> Vec<String> {
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
            let sub = self.shared.bus.subscribe(&t).await;
            let deliveries = futures::stream::unfold((sub, t), |(mut sub, t)| async move {
                let msg = match sub.recv().await? {
                    Received::Delivery(d) => Fwd::Delivery(t.clone(), d),
                    Received::Dropped(n) => Fwd::Dropped(n),
                };
                Some((msg, (sub, t)))
            });
            self.subs_mut().push(deliveries.boxed());
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

    /// A PUBLISH to a reading topic as a reading ready to chain (`Ok(Err(raw topic))` for
    /// a raw topic); the error is the PUBACK a 5.0 client gets.
    fn reading_of(
        &self,
        topic: &str,
        payload: &Bytes,
    ) -> Result<Result<Reading, String>, (AckCode, &'static str)> {
        let invalid = |e: String| (AckCode::Invalid(e), "bad-reading");
        match topics::target(topic).map_err(|e| (AckCode::Invalid(e.to_string()), "bad-topic"))? {
            Target::Reading { topic, source } => {
                let new = topics::new_reading(&topic, &source, payload)
                    .map_err(|e| invalid(e.to_string()))?;
                let r = self
                    .shared
                    .publisher
                    .prepare(new)
                    .map_err(|e| invalid(e.to_string()))?;
                Ok(Ok(r))
            }
            Target::Raw(t) => Ok(Err(t)),
        }
    }

    /// Publishes a PUBLISH's payload through the node's publisher (readings one by one; the
    /// pipelined path is [`Self::flush`]); the error is the PUBACK a 5.0 client gets.
    pub(super) async fn publish(
        &self,
        topic: &str,
        payload: &Bytes,
    ) -> Result<(), (AckCode, &'static str)> {
        let publisher = &self.shared.publisher;
        let result = match self.reading_of(topic, payload)? {
            Ok(r) => publisher.publish_prepared(vec![r]).await.map(|_| ()),
            Err(raw) => publisher.publish_raw(&raw, payload.to_vec()).await,
        };
        result.map_err(|e| match e {
            PublishError::Invalid(e) => (AckCode::Invalid(e.to_string()), "bad-reading"),
            other => (AckCode::Unavailable(other.to_string()), "unavailable"),
        })
    }

    /// Commits the pipelined reading PUBLISHes together (one durable commit), then sends
    /// their PUBACKs in the order they came; `Err` ends the connection (3.1.1 has no negative
    /// PUBACK: the unacknowledged messages are what its client sees).
    async fn flush(&mut self, run: &mut Vec<Pipelined>) -> Result<(), End> {
        if run.is_empty() {
            return Ok(());
        }
        let readings: Vec<Reading> = run
            .iter()
            .filter_map(|p| p.reading.as_ref().ok().cloned())
            .collect();
        let failed = match self.shared.publisher.publish_prepared(readings).await {
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(client = %self.client_id, error = %e, "MQTT publishes not committed");
                Some(AckCode::Unavailable(e.to_string()))
            }
        };
        let mut acks = Vec::new();
        for p in run.drain(..) {
            let code = match (p.reading, &failed) {
                (Ok(_), None) => AckCode::Success,
                (Ok(_), Some(code)) => {
                    self.shared.metrics.mqtt_reject("unavailable");
                    code.clone()
                }
                (Err((code, reason)), _) => {
                    self.shared.metrics.mqtt_reject(reason);
                    tracing::info!(client = %self.client_id, topic = %p.topic, ?code, "MQTT publish refused");
                    code
                }
            };
            if p.qos == 1 {
                if code != AckCode::Success && self.version == Version::V4 {
                    // Those acknowledged so far stand; the rest stay unacknowledged.
                    self.send_all(&acks).await.map_err(|_| End::Lost)?;
                    return Err(End::Lost);
                }
                acks.push(Outgoing::PubAck { pkid: p.pkid, code });
            }
        }
        self.send_all(&acks).await.map_err(|_| End::Lost)
    }

    /// Writes several packets in one go.
    async fn send_all(&mut self, packets: &[Outgoing]) -> std::io::Result<()> {
        if !self.corked {
            self.out.clear();
        }
        for p in packets {
            codec::encode(self.version, p, &mut self.out).map_err(std::io::Error::other)?;
        }
        if self.corked {
            return Ok(());
        }
        self.write_out().await
    }

    async fn write_out(&mut self) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let written = tokio::time::timeout(WRITE_TIMEOUT, self.wr.write_all(&self.out)).await;
        self.out.clear();
        match written {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::other("client does not read")),
        }
    }

    /// Gathers the packets sent from now on for one write (readings already queued for a
    /// subscriber: one syscall for many instead of one each).
    fn cork(&mut self) {
        self.out.clear();
        self.corked = true;
    }

    /// Writes what was gathered since [`Self::cork`].
    async fn uncork(&mut self) -> std::io::Result<()> {
        self.corked = false;
        self.write_out().await
    }

    pub(super) async fn persist(&self) {
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

    pub(super) fn subscriptions(&self) -> Vec<(String, u8)> {
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
    pub(super) async fn resume(&mut self) -> std::io::Result<()> {
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

#[allow(clippy::too_many_arguments)]
pub(super) async fn run(
    conn: &mut Conn,
    rd: &mut OwnedReadHalf,
    buf: &mut BytesMut,
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
            Some(f) = conn.subs_mut().next() => {
                // What else is queued for this client goes in the same write.
                conn.cork();
                let mut sent = conn.forward(f).await;
                for _ in 1..FORWARD_BATCH {
                    if sent.is_err() {
                        break;
                    }
                    let Some(Some(f)) = conn.subs_mut().next().now_or_never() else { break };
                    sent = conn.forward(f).await;
                }
                if sent.and(conn.uncork().await).is_err() {
                    return End::Lost;
                }
            }
        }
    }
}

/// Most queued readings written to a subscriber in one go.
const FORWARD_BATCH: usize = 64;

/// A reading PUBLISH waiting for the pipeline's commit.
struct Pipelined {
    topic: String,
    qos: u8,
    pkid: u16,
    reading: Result<Reading, (AckCode, &'static str)>,
}

/// Handles every complete packet in `buf`; `Some` when the connection must end. Reading
/// PUBLISHes (QoS 0 and 1) that arrive back to back, as from a client with several in flight,
/// are committed together: one fsync for up to [`super::MAX_PIPELINE`], PUBACKs in order.
async fn drain(conn: &mut Conn, buf: &mut BytesMut, max_packet: usize) -> Option<End> {
    let mut run: Vec<Pipelined> = Vec::new();
    loop {
        let packet = match codec::decode(buf, Some(conn.version), max_packet) {
            Ok(p) => p,
            Err(e) => {
                if let Err(end) = conn.flush(&mut run).await {
                    return Some(end);
                }
                conn.shared.metrics.mqtt_reject(reject_reason(&e));
                tracing::info!(client = %conn.client_id, error = %e, "bad MQTT packet; closing");
                let code = match e {
                    CodecError::TooLarge { .. } => CloseCode::TooLarge,
                    _ => CloseCode::Malformed,
                };
                return Some(conn.close(code, End::Lost).await);
            }
        };
        let Some(p) = packet else {
            return conn.flush(&mut run).await.err();
        };
        if let Incoming::Publish {
            topic,
            qos,
            pkid,
            payload,
        } = &p
        {
            if *qos <= 1 {
                let reading = conn.reading_of(topic, payload);
                // Raw topics go one by one; a 3.1.1 client's bad reading ends the connection
                // once those before it are acknowledged.
                let pipelined = match &reading {
                    Ok(Ok(_)) => true,
                    Ok(Err(_raw)) => false,
                    Err(_) => conn.version == Version::V5,
                };
                if pipelined {
                    conn.shared.metrics.mqtt_messages_in.inc();
                    run.push(Pipelined {
                        topic: topic.clone(),
                        qos: *qos,
                        pkid: *pkid,
                        reading: reading.map(|r| r.expect("a reading topic")),
                    });
                    if run.len() >= super::MAX_PIPELINE {
                        if let Err(end) = conn.flush(&mut run).await {
                            return Some(end);
                        }
                    }
                    continue;
                }
            }
        }
        if let Err(end) = conn.flush(&mut run).await {
            return Some(end);
        }
        if let Err(end) = conn.handle(p).await {
            return Some(end);
        }
    }
}
