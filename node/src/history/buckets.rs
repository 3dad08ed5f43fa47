//! Downsampling: readings summarised per source in fixed, epoch-aligned buckets (so the same
//! bucket has the same start in every query and on every node).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::reading::Reading;
use crate::store::StoredReading;

/// One source's readings in `[start, start + every)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bucket {
    /// Source id.
    pub source: String,
    /// Bucket start, unix ms (a multiple of the bucket width).
    pub start: u64,
    /// Readings summarised.
    pub count: u64,
    /// Smallest value.
    pub min: f64,
    /// Mean value.
    pub mean: f64,
    /// Largest value.
    pub max: f64,
    /// Unit of the values.
    pub unit: String,
}

/// One bucket while readings are added.
#[derive(Debug)]
struct Acc {
    count: u64,
    min: f64,
    max: f64,
    sum: f64,
    unit: String,
}

/// Accumulates readings into buckets of one width, without keeping the readings.
#[derive(Debug)]
pub struct Buckets {
    every_ms: u64,
    /// By (start, source).
    acc: BTreeMap<(u64, String), Acc>,
}

impl Buckets {
    /// Empty buckets of width `every_ms`.
    pub fn new(every_ms: u64) -> Buckets {
        Buckets {
            every_ms: every_ms.max(1),
            acc: BTreeMap::new(),
        }
    }

    /// Counts one reading.
    pub fn add(&mut self, r: &Reading) {
        let start = r.time - r.time % self.every_ms;
        let e = self
            .acc
            .entry((start, r.source.clone()))
            .or_insert_with(|| Acc {
                count: 0,
                min: f64::INFINITY,
                max: f64::NEG_INFINITY,
                sum: 0.0,
                unit: r.unit.clone(),
            });
        e.count += 1;
        e.min = e.min.min(r.value);
        e.max = e.max.max(r.value);
        e.sum += r.value;
    }

    /// The buckets by start then source; empty ones are left out (gaps).
    pub fn finish(self) -> Vec<Bucket> {
        self.acc
            .into_iter()
            .map(|((start, source), a)| Bucket {
                source,
                start,
                count: a.count,
                min: a.min,
                mean: a.sum / a.count as f64,
                max: a.max,
                unit: a.unit,
            })
            .collect()
    }
}

/// Buckets of width `every_ms` of some readings (see [`Buckets`]).
pub fn bucketize<'a>(
    readings: impl IntoIterator<Item = &'a StoredReading>,
    every_ms: u64,
) -> Vec<Bucket> {
    let mut b = Buckets::new(every_ms);
    for r in readings {
        b.add(&r.reading);
    }
    b.finish()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn reading(source: &str, seq: u64, time: u64, value: f64) -> StoredReading {
        let r = Reading {
            aqi: None,
            seq,
            prev: None,
            time,
            unit: "°C".into(),
            joins: vec![],
            topic: "temperature".into(),
            value,
            source: source.into(),
        };
        let (cid, _) = r.encode();
        StoredReading { cid, reading: r }
    }

    #[test]
    fn buckets_summarise_the_readings_they_cover() {
        let rs = [
            reading("a", 1, 60_000, 1.0),
            reading("a", 2, 90_000, 3.0),
            reading("b", 1, 100_000, 10.0),
            reading("a", 3, 125_000, 5.0),
            // 180 s..240 s is empty: a gap, no bucket.
            reading("a", 4, 250_000, 7.0),
        ];
        let b = bucketize(&rs, 60_000);
        let got: Vec<_> = b
            .iter()
            .map(|b| (b.source.as_str(), b.start, b.count, b.min, b.mean, b.max))
            .collect();
        assert_eq!(
            got,
            [
                ("a", 60_000, 2, 1.0, 2.0, 3.0),
                ("b", 60_000, 1, 10.0, 10.0, 10.0),
                ("a", 120_000, 1, 5.0, 5.0, 5.0),
                ("a", 240_000, 1, 7.0, 7.0, 7.0),
            ]
        );
        // Every raw reading is counted once.
        assert_eq!(b.iter().map(|b| b.count).sum::<u64>(), rs.len() as u64);
        assert_eq!(b[0].unit, "°C");
    }
}
