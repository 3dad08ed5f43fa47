//! One Prometheus registry (shared with libp2p-metrics) holding sensornet's own metrics.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// `{topic}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabel {
    /// Canonical topic.
    pub topic: String,
}

/// `{topic, reason}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabel {
    /// Topic of the message.
    pub topic: String,
    /// Short reason (`not-cbor`, `bad-reading`, `wrong-topic`, `bad-cid`, ...).
    pub reason: String,
}

/// `{topic, source}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    /// Topic.
    pub topic: String,
    /// Sensor id.
    pub source: String,
}

/// `{reason}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Short reason (`malformed`, `too-large`, `bad-credentials`, `bad-reading`, ...).
    pub reason: String,
}

/// `{route, status}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    /// API route such as `/api/v0/pubsub/pub`.
    pub route: String,
    /// HTTP status code.
    pub status: u16,
}

fn delay_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
    ])
}

/// Every sensornet metric; see docs/observability.md for what each means.
#[derive(Clone)]
pub struct Metrics {
    /// Readings published through this node.
    pub published: Family<TopicLabel, Counter>,
    /// Readings received from peers (gossip or catch-up).
    pub received: Family<TopicLabel, Counter>,
    /// Readings delivered to local subscribers and the index.
    pub delivered: Family<TopicLabel, Counter>,
    /// Messages refused, by reason.
    pub rejected: Family<RejectLabel, Counter>,
    /// Reading time → local delivery.
    pub delay: Family<TopicLabel, Histogram, fn() -> Histogram>,
    /// Latest value per source.
    pub last_value: Family<SourceLabel, Gauge<f64, AtomicU64>>,
    /// Latest reading time per source (unix seconds).
    pub last_seen: Family<SourceLabel, Gauge<f64, AtomicU64>>,
    /// Blocks in the store.
    pub store_blocks: Gauge,
    /// Bytes in the store index.
    pub store_bytes: Gauge,
    /// Free bytes on the store's file system.
    pub disk_free: Gauge,
    /// Size of the store's file system.
    pub disk_total: Gauge,
    /// Blocks fetched from peers.
    pub catchup_fetched: Counter,
    /// Readings known to exist but not yet fetched.
    pub catchup_lag: Gauge,
    /// Chains given up on because no peer had the block.
    pub catchup_gaps: Counter,
    /// Blocks no peer could supply, still asked for by the repair sweep.
    pub catchup_holes: Gauge,
    /// Fetched blocks that did not hash to their CID.
    pub bad_blocks: Counter,
    /// 1 once the initial catch-up is done.
    pub ready: Gauge,
    /// Connected peers.
    pub peers: Gauge,
    /// Local subscribers per topic.
    pub subscribers: Family<TopicLabel, Gauge>,
    /// Readings dropped for a slow local subscriber.
    pub subscriber_dropped: Family<TopicLabel, Counter>,
    /// API requests.
    pub api_requests: Family<RouteLabel, Counter>,
    /// Open MQTT connections.
    pub mqtt_connections: Gauge,
    /// MQTT PUBLISH packets received from clients.
    pub mqtt_messages_in: Counter,
    /// MQTT PUBLISH packets sent to clients.
    pub mqtt_messages_out: Counter,
    /// MQTT packets, connections and subscriptions refused, by reason.
    pub mqtt_rejects: Family<ReasonLabel, Counter>,
}

impl Metrics {
    /// Counts one refused MQTT packet, connection or subscription.
    pub fn mqtt_reject(&self, reason: &str) {
        self.mqtt_rejects
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Registers everything under the `sensornet` prefix.
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            published: Default::default(),
            received: Default::default(),
            delivered: Default::default(),
            rejected: Default::default(),
            delay: Family::new_with_constructor(delay_histogram),
            last_value: Default::default(),
            last_seen: Default::default(),
            store_blocks: Default::default(),
            store_bytes: Default::default(),
            disk_free: Default::default(),
            disk_total: Default::default(),
            catchup_fetched: Default::default(),
            catchup_lag: Default::default(),
            catchup_gaps: Default::default(),
            catchup_holes: Default::default(),
            bad_blocks: Default::default(),
            ready: Default::default(),
            peers: Default::default(),
            subscribers: Default::default(),
            subscriber_dropped: Default::default(),
            api_requests: Default::default(),
            mqtt_connections: Default::default(),
            mqtt_messages_in: Default::default(),
            mqtt_messages_out: Default::default(),
            mqtt_rejects: Default::default(),
        };
        let r = registry.sub_registry_with_prefix("sensornet");
        r.register(
            "readings_published",
            "Readings published through this node",
            m.published.clone(),
        );
        r.register(
            "readings_received",
            "Readings received from peers",
            m.received.clone(),
        );
        r.register(
            "readings_delivered",
            "Readings delivered locally",
            m.delivered.clone(),
        );
        r.register(
            "readings_rejected",
            "Messages refused, by reason",
            m.rejected.clone(),
        );
        r.register(
            "delivery_delay_seconds",
            "Reading time to local delivery",
            m.delay.clone(),
        );
        r.register(
            "source_last_value",
            "Latest value per source",
            m.last_value.clone(),
        );
        r.register(
            "source_last_seen_timestamp_seconds",
            "Time of the latest reading per source",
            m.last_seen.clone(),
        );
        r.register(
            "store_blocks",
            "Blocks in the store",
            m.store_blocks.clone(),
        );
        r.register(
            "store_bytes",
            "Bytes of readings in the store",
            m.store_bytes.clone(),
        );
        r.register(
            "disk_free_bytes",
            "Free bytes on the store's file system",
            m.disk_free.clone(),
        );
        r.register(
            "disk_total_bytes",
            "Size of the store's file system",
            m.disk_total.clone(),
        );
        r.register(
            "catchup_blocks_fetched",
            "Blocks fetched from peers",
            m.catchup_fetched.clone(),
        );
        r.register(
            "catchup_lag_blocks",
            "Readings known but not yet fetched",
            m.catchup_lag.clone(),
        );
        r.register(
            "catchup_gaps",
            "Chains abandoned: no peer had the block",
            m.catchup_gaps.clone(),
        );
        r.register(
            "catchup_holes",
            "Blocks missing below a linked reading (no peer had them yet); the repair sweep asks again",
            m.catchup_holes.clone(),
        );
        r.register(
            "catchup_bad_blocks",
            "Fetched blocks that did not hash to their CID",
            m.bad_blocks.clone(),
        );
        r.register(
            "ready",
            "1 once the initial catch-up is done",
            m.ready.clone(),
        );
        r.register("peers", "Connected peers", m.peers.clone());
        r.register(
            "subscribers",
            "Local subscribers per topic",
            m.subscribers.clone(),
        );
        r.register(
            "subscriber_dropped",
            "Readings dropped for a slow subscriber",
            m.subscriber_dropped.clone(),
        );
        r.register(
            "api_requests",
            "API requests by route and status",
            m.api_requests.clone(),
        );
        r.register(
            "mqtt_connections",
            "Open MQTT connections",
            m.mqtt_connections.clone(),
        );
        r.register(
            "mqtt_messages_in",
            "MQTT PUBLISH packets received from clients",
            m.mqtt_messages_in.clone(),
        );
        r.register(
            "mqtt_messages_out",
            "MQTT PUBLISH packets sent to clients",
            m.mqtt_messages_out.clone(),
        );
        r.register(
            "mqtt_rejects",
            "MQTT packets, connections and subscriptions refused, by reason",
            m.mqtt_rejects.clone(),
        );
        registry.register_collector(Box::new(ProcessCollector));
        m
    }

    /// Reasons a message is rejected (label values of `readings_rejected`).
    pub const REJECT_REASONS: [&'static str; 4] =
        ["not-cbor", "bad-reading", "wrong-topic", "not-a-reading"];

    /// Creates every series of the kept topics at zero, so `rate()` and alerts work from the
    /// first scrape rather than from the first event.
    pub fn init_topics(&self, topics: &[String]) {
        for t in topics {
            let l = Metrics::topic(t);
            let _ = self.published.get_or_create(&l);
            let _ = self.received.get_or_create(&l);
            let _ = self.delivered.get_or_create(&l);
            let _ = self.subscribers.get_or_create(&l);
            let _ = self.subscriber_dropped.get_or_create(&l);
            let _ = self.delay.get_or_create(&l);
            for reason in Self::REJECT_REASONS {
                let _ = self.rejected.get_or_create(&RejectLabel {
                    topic: t.clone(),
                    reason: reason.into(),
                });
            }
        }
    }

    /// Counts a rejected message.
    pub fn reject(&self, topic: &str, reason: &str) {
        self.rejected
            .get_or_create(&RejectLabel {
                topic: topic.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Label for a topic.
    pub fn topic(topic: &str) -> TopicLabel {
        TopicLabel {
            topic: topic.to_string(),
        }
    }
}

/// `process_*` metrics read from /proc at scrape time, with the names Prometheus clients use.
#[derive(Debug)]
struct ProcessCollector;

/// (cpu seconds, resident bytes, start time unix seconds) of this process, from
/// /proc/self/stat with the clock tick and page size the kernel reports (sysconf).
pub fn process_stats() -> Option<(f64, u64, f64)> {
    let stat = procfs::process::Process::myself().ok()?.stat().ok()?;
    let ticks = procfs::ticks_per_second() as f64;
    let cpu = (stat.utime + stat.stime) as f64 / ticks;
    let rss = stat.rss.saturating_mul(procfs::page_size());
    let start = procfs::boot_time_secs().ok()? as f64 + stat.starttime as f64 / ticks;
    Some((cpu, rss, start))
}

impl prometheus_client::collector::Collector for ProcessCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        let Some((cpu, rss, start)) = process_stats() else {
            return Ok(());
        };
        let c = ConstCounter::new(cpu);
        c.encode(encoder.encode_descriptor(
            "process_cpu",
            "User and system CPU time spent",
            Some(&prometheus_client::registry::Unit::Seconds),
            c.metric_type(),
        )?)?;
        let g = ConstGauge::new(rss as i64);
        g.encode(encoder.encode_descriptor(
            "process_resident_memory",
            "Resident memory size",
            Some(&prometheus_client::registry::Unit::Bytes),
            g.metric_type(),
        )?)?;
        let s = ConstGauge::new(start);
        s.encode(encoder.encode_descriptor(
            "process_start_time",
            "Start time since the unix epoch",
            Some(&prometheus_client::registry::Unit::Seconds),
            s.metric_type(),
        )?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_with_contract_names() {
        let mut reg = Registry::default();
        let m = Metrics::register(&mut reg);
        m.published
            .get_or_create(&Metrics::topic("temperature"))
            .inc();
        m.delay
            .get_or_create(&Metrics::topic("temperature"))
            .observe(0.01);
        m.reject("temperature", "not-cbor");
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        for name in [
            "sensornet_readings_published_total{topic=\"temperature\"} 1",
            "sensornet_delivery_delay_seconds_bucket",
            "sensornet_readings_rejected_total{topic=\"temperature\",reason=\"not-cbor\"} 1",
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "sensornet_ready 0",
        ] {
            assert!(out.contains(name), "{name} missing in\n{out}");
        }
    }

    #[test]
    fn process_stats_are_plausible() {
        let (cpu, rss, start) = process_stats().expect("/proc/self/stat is readable");
        assert!(cpu >= 0.0 && cpu.is_finite(), "cpu {cpu}");
        assert!(rss > 1 << 20, "rss {rss}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        // btime is whole seconds, so allow a little slack past now.
        assert!(
            start > now - 86_400.0 && start <= now + 2.0,
            "start {start}, now {now}"
        );
    }
}
