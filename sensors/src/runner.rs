//! The standalone sensor's loop: sample every interval into the durable buffer, and deliver
//! the buffer's front to the node one reading at a time, oldest first. Sampling never waits
//! for delivery, so a slow or absent node costs no readings, only buffer space; backlog goes
//! out in order before anything newer.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::api::{Ack, NodeApi, Outcome, PendingReading};
use crate::aqi::aqi_category;
use crate::buffer::{BufferError, DiskBuffer};
use crate::error::SensorError;
use crate::kind::SensorKind;
use crate::source::Source;

/// First wait after a failed delivery; it doubles up to `MAX_BACKOFF`.
const MIN_BACKOFF: Duration = Duration::from_millis(200);
/// Longest wait between delivery attempts while the node is away.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often an ongoing outage or buffer overflow is reported again.
const REPORT_EVERY: Duration = Duration::from_secs(60);
/// How long a stop waits for the reading in flight, so it is not sent twice after a restart.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// How the loop runs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// What the source measures.
    pub kind: SensorKind,
    /// The sensor id readings carry as `source`.
    pub id: String,
    /// Time between samples.
    pub interval: Duration,
    /// Stop after this many deliveries.
    pub count: Option<u64>,
    /// Print nothing per delivered reading.
    pub quiet: bool,
}

/// Why the loop stopped without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// `count` readings were delivered.
    Count,
    /// The shutdown future completed (SIGINT/SIGTERM).
    Shutdown,
    /// A CSV replay ended and everything was delivered.
    ReplayFinished,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Why it stopped.
    pub stop: Stop,
    /// Readings the node stored.
    pub delivered: u64,
    /// Readings the node refused as invalid (dropped).
    pub refused: u64,
    /// Oldest readings dropped because the buffer was full.
    pub dropped: u64,
    /// Ticks without a reading.
    pub dropouts: u64,
    /// Readings still waiting in the buffer.
    pub buffered: usize,
}

/// Why the loop stopped with an error; buffered readings stay on disk for the next run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The source failed for good.
    #[error(transparent)]
    Source(#[from] SensorError),
    /// The buffer could not be written.
    #[error(transparent)]
    Buffer(#[from] BufferError),
    /// The node will refuse everything until the setup is fixed.
    #[error("{0}")]
    Misconfigured(String),
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

type Delivery<'a> = Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

/// The reading being sent: its identity in the buffer, the reading, the request.
struct InFlight<'a> {
    removed_then: u64,
    reading: PendingReading,
    fut: Delivery<'a>,
}

async fn next_outcome(inflight: &mut Option<InFlight<'_>>) -> Outcome {
    match inflight {
        Some(f) => f.fut.as_mut().await,
        None => std::future::pending().await,
    }
}

/// The loop's state between events.
struct Runner<'a> {
    cfg: &'a RunConfig,
    api: &'a NodeApi,
    buffer: &'a mut DiskBuffer,
    delivered: u64,
    refused: u64,
    dropouts: u64,
    /// Since when, and the last report time, while the node is unreachable.
    outage: Option<(Instant, Instant)>,
    backoff: Duration,
    retry_at: Option<tokio::time::Instant>,
    dropped_reported: u64,
    dropped_report_at: Option<Instant>,
}

impl<'a> Runner<'a> {
    fn log(&self, msg: &str) {
        eprintln!("sensor {}: {msg}", self.cfg.id);
    }

    fn summary(&self, stop: Stop) -> Summary {
        Summary {
            stop,
            delivered: self.delivered,
            refused: self.refused,
            dropped: self.buffer.dropped(),
            dropouts: self.dropouts,
            buffered: self.buffer.len(),
        }
    }

    /// Starts sending the buffer's front, skipping items that are not readings.
    fn start(&mut self) -> Result<Option<InFlight<'a>>, BufferError> {
        while let Some(front) = self.buffer.front() {
            match serde_json::from_str::<PendingReading>(front) {
                Ok(reading) => {
                    let api = self.api;
                    let r = reading.clone();
                    return Ok(Some(InFlight {
                        removed_then: self.buffer.removed(),
                        reading,
                        fut: Box::pin(async move { api.publish(&r).await }),
                    }));
                }
                Err(e) => {
                    let shown: String = front.chars().take(80).collect();
                    self.log(&format!(
                        "dropping a buffered line that is not a reading ({e}): {shown}"
                    ));
                    self.buffer.pop()?;
                }
            }
        }
        Ok(None)
    }

    fn note_drops(&mut self) {
        let dropped = self.buffer.dropped();
        if dropped == self.dropped_reported {
            return;
        }
        let due = self
            .dropped_report_at
            .is_none_or(|t| t.elapsed() >= REPORT_EVERY);
        if due {
            self.log(&format!(
                "buffer full ({} readings): dropped the {dropped} oldest so far; raise --buffer-max or bring the node back",
                self.buffer.capacity()
            ));
            self.dropped_reported = dropped;
            self.dropped_report_at = Some(Instant::now());
        }
    }

    fn print(&self, r: &PendingReading, ack: &Ack) {
        if self.cfg.quiet {
            return;
        }
        let when = humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(r.time));
        let mut line = format!("{when} {} {} {} {}", r.topic, r.source, r.value, r.unit);
        if let Some(aqi) = r.aqi {
            line.push_str(&format!(" aqi={aqi} ({})", aqi_category(aqi)));
        }
        if let Some(seq) = ack.seq {
            line.push_str(&format!(" seq={seq}"));
        }
        line.push_str(&format!(" cid={}", ack.cid));
        let late = Duration::from_millis(now_ms().saturating_sub(r.time));
        if late > (self.cfg.interval * 2).max(Duration::from_secs(2)) {
            line.push_str(&format!(" late={:.1}s", late.as_secs_f64()));
        }
        println!("{line}");
    }

    /// Handles a delivery's outcome; `Some` stops the loop.
    fn settle(&mut self, sent: InFlight<'_>, outcome: Outcome) -> Result<Option<Stop>, RunError> {
        match outcome {
            Outcome::Delivered(ack) => {
                self.buffer.pop_if_front(sent.removed_then)?;
                if let Some((since, _)) = self.outage.take() {
                    self.log(&format!(
                        "node at {} is back after {:.1}s; sending {} buffered readings",
                        self.api.addr(),
                        since.elapsed().as_secs_f64(),
                        self.buffer.len()
                    ));
                }
                self.backoff = MIN_BACKOFF;
                self.delivered += 1;
                self.print(&sent.reading, &ack);
                if self.cfg.count.is_some_and(|c| self.delivered >= c) {
                    return Ok(Some(Stop::Count));
                }
            }
            Outcome::Refused(why) => {
                self.refused += 1;
                self.log(&format!(
                    "the node refused the reading of {} (value {} {}): {why}; dropping it",
                    sent.reading.time, sent.reading.value, sent.reading.unit
                ));
                self.buffer.pop_if_front(sent.removed_then)?;
            }
            Outcome::Retry(why) => {
                let now = Instant::now();
                match &mut self.outage {
                    None => {
                        self.log(&format!(
                            "node at {} unreachable ({why}); buffering on disk in {} ({} waiting)",
                            self.api.addr(),
                            self.buffer.dir().display(),
                            self.buffer.len()
                        ));
                        self.outage = Some((now, now));
                    }
                    Some((since, reported)) if reported.elapsed() >= REPORT_EVERY => {
                        let msg = format!(
                            "node at {} still unreachable after {}s ({why}); {} readings buffered",
                            self.api.addr(),
                            since.elapsed().as_secs(),
                            self.buffer.len()
                        );
                        *reported = now;
                        self.log(&msg);
                    }
                    Some(_) => {}
                }
                self.retry_at = Some(tokio::time::Instant::now() + self.backoff);
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
            }
            Outcome::Misconfigured(why) => return Err(RunError::Misconfigured(why)),
        }
        Ok(None)
    }
}

/// Runs until `count` deliveries, the end of a replay with everything delivered, `shutdown`
/// completing, or an error. Every sampled reading is in `buffer` (fsync'd) before anything
/// else happens to it, so whatever stops the loop, undelivered readings wait on disk.
pub async fn run(
    cfg: &RunConfig,
    mut source: Box<dyn Source>,
    buffer: &mut DiskBuffer,
    api: &NodeApi,
    shutdown: impl Future<Output = ()>,
) -> Result<Summary, RunError> {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut r = Runner {
        cfg,
        api,
        buffer,
        delivered: 0,
        refused: 0,
        dropouts: 0,
        outage: None,
        backoff: MIN_BACKOFF,
        retry_at: None,
        dropped_reported: 0,
        dropped_report_at: None,
    };
    r.note_drops();
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut inflight: Option<InFlight<'_>> = None;
    let mut exhausted = false;
    loop {
        if inflight.is_none() && r.retry_at.is_none() {
            inflight = r.start()?;
        }
        if exhausted && inflight.is_none() && r.buffer.is_empty() {
            r.log("replay finished and delivered");
            return Ok(r.summary(Stop::ReplayFinished));
        }
        let retry_at = r.retry_at;
        tokio::select! {
            biased;
            () = &mut shutdown => {
                if let Some(sent) = inflight.take() {
                    // Let the reading in flight land, so the next run does not send it again.
                    let mut fut = sent.fut;
                    if let Ok(outcome) = tokio::time::timeout(STOP_GRACE, fut.as_mut()).await {
                        let sent = InFlight { fut, ..sent };
                        if let Err(e) = r.settle(sent, outcome) {
                            r.log(&format!("while stopping: {e}"));
                        }
                    }
                }
                if !r.buffer.is_empty() {
                    r.log(&format!(
                        "stopping; {} readings stay buffered in {} for the next run",
                        r.buffer.len(),
                        r.buffer.dir().display()
                    ));
                }
                return Ok(r.summary(Stop::Shutdown));
            }
            outcome = next_outcome(&mut inflight) => {
                if let Some(sent) = inflight.take() {
                    if let Some(stop) = r.settle(sent, outcome)? {
                        return Ok(r.summary(stop));
                    }
                }
            }
            () = async { if let Some(t) = retry_at { tokio::time::sleep_until(t).await } },
                if retry_at.is_some() && inflight.is_none() => {
                r.retry_at = None;
            }
            _ = tick.tick(), if !exhausted => {
                match source.sample(now_ms()) {
                    Ok(Some(sample)) => {
                        let reading = PendingReading::new(cfg.kind, &cfg.id, &sample);
                        r.buffer.push(&reading.to_line())?;
                        r.note_drops();
                    }
                    Ok(None) => r.dropouts += 1,
                    Err(SensorError::Exhausted) => {
                        exhausted = true;
                        if !r.buffer.is_empty() {
                            r.log(&format!("replay finished; {} readings left to deliver", r.buffer.len()));
                        }
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
}
