//! What the store gives an MQTT subscriber besides live readings: the retained message of a
//! topic (its source's latest reading) and the readings a persistent session missed.

use std::collections::HashMap;

use super::session::SessionState;
use super::topics::Filter;
use crate::reading::Reading;
use crate::store::{Store, StoreError, StoredReading};

/// Readings whose measurement time is this far before a disconnect are still replayed: the
/// clocks of the nodes that measured them may run behind this one's.
pub const REPLAY_SLACK_MS: u64 = 10 * 60 * 1000;

/// At most this many readings per topic are replayed to a returning session.
pub const MAX_REPLAY: usize = 100_000;

/// The latest reading of every source that `filter` matches, among `topics`.
pub fn retained(
    store: &Store,
    topics: &[String],
    filter: &Filter,
) -> Result<Vec<StoredReading>, StoreError> {
    let wanted: Vec<String> = topics
        .iter()
        .filter(|t| filter.covers_topic(t))
        .cloned()
        .collect();
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let mut latest: HashMap<(String, String), crate::store::Head> = HashMap::new();
    for h in store.heads(&wanted)? {
        if !filter.matches_reading(&h.topic, &h.source) {
            continue;
        }
        let key = (h.topic.clone(), h.source.clone());
        match latest.get(&key) {
            Some(old) if old.order_key() >= h.order_key() => {}
            _ => {
                latest.insert(key, h);
            }
        }
    }
    let mut out = Vec::new();
    for h in latest.into_values() {
        if let Some(bytes) = store.get(&h.cid)? {
            if let Ok(reading) = Reading::decode(&bytes) {
                out.push(StoredReading {
                    cid: h.cid,
                    reading,
                });
            }
        }
    }
    out.sort_by(|a, b| {
        (&a.reading.topic, &a.reading.source).cmp(&(&b.reading.topic, &b.reading.source))
    });
    Ok(out)
}

/// The readings a returning session has not got, oldest first and in per-source order.
pub fn missed(
    store: &Store,
    topics: &[String],
    filters: &[Filter],
    state: &SessionState,
) -> Result<Vec<StoredReading>, StoreError> {
    let since = state
        .disconnected_ms
        .map_or(state.created_ms, |d| d.saturating_sub(REPLAY_SLACK_MS))
        .max(state.created_ms);
    let mut out = Vec::new();
    for topic in topics {
        if !filters.iter().any(|f| f.covers_topic(topic)) {
            continue;
        }
        for r in store.history(topic, since, MAX_REPLAY)? {
            let (t, s) = (&r.reading.topic, &r.reading.source);
            if r.reading.seq > state.delivered_seq(t, s)
                && filters.iter().any(|f| f.matches_reading(t, s))
            {
                out.push(r);
            }
        }
    }
    per_source_order(&mut out);
    Ok(out)
}

/// Orders by time, then puts each source's readings in seq order within the places its
/// readings hold: a source whose clock stepped back still arrives in history order.
pub fn per_source_order(rows: &mut [StoredReading]) {
    rows.sort_by_key(|r| (r.reading.time, r.reading.seq));
    let mut by_source: HashMap<(String, String), Vec<usize>> = HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        by_source
            .entry((r.reading.topic.clone(), r.reading.source.clone()))
            .or_default()
            .push(i);
    }
    for idx in by_source.into_values() {
        let mut group: Vec<StoredReading> = idx.iter().map(|&i| rows[i].clone()).collect();
        group.sort_by_key(|r| r.reading.seq);
        for (slot, r) in idx.into_iter().zip(group) {
            rows[slot] = r;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(source: &str, seq: u64, time: u64) -> StoredReading {
        let reading = Reading {
            aqi: None,
            seq,
            prev: None,
            time,
            unit: "°C".into(),
            joins: Vec::new(),
            topic: "temperature".into(),
            value: 1.0,
            source: source.into(),
        };
        StoredReading {
            cid: reading.encode().0,
            reading,
        }
    }

    #[test]
    fn per_source_order_follows_seq_even_when_time_steps_back() {
        let mut rows = vec![row("a", 2, 100), row("b", 1, 150), row("a", 1, 200)];
        per_source_order(&mut rows);
        let got: Vec<(String, u64)> = rows
            .iter()
            .map(|r| (r.reading.source.clone(), r.reading.seq))
            .collect();
        assert_eq!(got, vec![("a".into(), 1), ("b".into(), 1), ("a".into(), 2)]);
    }
}
