//! Runs a sensor inside the daemon (`node daemon --sensor KIND`): one reading per interval,
//! published through the same path as the API.

use std::time::Duration;

use sensornet_sensors::{open_source, SensorKind, SourceSpec};

use crate::clock::now_ms;
use crate::config::SensorConfig;
use crate::publish::{NewReading, PublishError, Publisher};

/// Checks the sensor settings and opens the source (so a bad one fails at start).
pub fn open(
    cfg: &SensorConfig,
    seed: Option<u64>,
) -> anyhow::Result<(SensorKind, Box<dyn sensornet_sensors::Source>)> {
    let kind: SensorKind = cfg
        .kind
        .parse()
        .map_err(|e| anyhow::anyhow!("--sensor {:?}: {e}", cfg.kind))?;
    let mut spec: SourceSpec = cfg
        .source
        .parse()
        .map_err(|e| anyhow::anyhow!("--sensor-source {:?}: {e}", cfg.source))?;
    if let (SourceSpec::Simulated { seed: s }, Some(seed)) = (&mut spec, seed) {
        *s = seed;
    }
    let source = open_source(kind, &spec).map_err(|e| anyhow::anyhow!("sensor: {e}"))?;
    Ok((kind, source))
}

/// Readings kept in memory while publishing fails (a full disk); the oldest go first beyond it.
const BACKLOG: usize = 100_000;

/// Publishes readings until the task is aborted; readings that cannot be stored yet (full
/// disk) wait in a bounded backlog and go out in order once the store accepts writes again.
pub async fn run(
    publisher: Publisher,
    kind: SensorKind,
    mut source: Box<dyn sensornet_sensors::Source>,
    id: String,
    interval: Duration,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(sensor = %id, topic = kind.topic(), ?interval, "in-process sensor started");
    let mut backlog: std::collections::VecDeque<NewReading> = Default::default();
    let mut dropped = 0u64;
    loop {
        tick.tick().await;
        match source.sample(now_ms()) {
            Ok(Some(sample)) => {
                if backlog.len() >= BACKLOG {
                    backlog.pop_front();
                    dropped += 1;
                }
                backlog.push_back(NewReading {
                    topic: kind.topic().to_string(),
                    value: sample.value,
                    unit: Some(kind.unit().to_string()),
                    source: Some(id.clone()),
                    time: Some(sample.time_ms),
                    aqi: sample.aqi,
                });
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(sensor = %id, error = %e, "sensor stopped");
                return;
            }
        }
        while let Some(next) = backlog.front() {
            match publisher.publish_reading(next.clone()).await {
                Ok(_) => {
                    backlog.pop_front();
                }
                Err(PublishError::Invalid(e)) => {
                    tracing::warn!(sensor = %id, error = %e, "sensor produced an invalid reading; dropped");
                    backlog.pop_front();
                }
                Err(e) => {
                    tracing::warn!(sensor = %id, error = %e, waiting = backlog.len(), dropped, "could not publish; keeping readings until the store accepts them");
                    break;
                }
            }
        }
    }
}
