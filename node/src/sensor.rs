//! Runs a sensor inside the daemon (`node daemon --sensor KIND`): one reading per interval,
//! published through the same path as the API.

use std::time::Duration;

use sensornet_sensors::{open_source, SensorKind, SourceSpec};

use crate::config::SensorConfig;
use crate::node::{now_ms, NewReading, Node};

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

/// Publishes readings until the task is aborted.
pub async fn run(
    node: Node,
    kind: SensorKind,
    mut source: Box<dyn sensornet_sensors::Source>,
    id: String,
    interval: Duration,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(sensor = %id, topic = kind.topic(), ?interval, "in-process sensor started");
    loop {
        tick.tick().await;
        let sample = match source.sample(now_ms()) {
            Ok(Some(s)) => s,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(sensor = %id, error = %e, "sensor stopped");
                return;
            }
        };
        let new = NewReading {
            topic: kind.topic().to_string(),
            value: sample.value,
            unit: Some(kind.unit().to_string()),
            source: Some(id.clone()),
            time: Some(sample.time_ms),
            aqi: sample.aqi,
        };
        if let Err(e) = node.publish_reading(new).await {
            tracing::warn!(sensor = %id, error = %e, "could not publish a reading");
        }
    }
}
