//! Reading a topic's history in pages: the one loop the API's streamed answers, its merges
//! and the sync server's `History` answers share.

use super::TimeRange;
use crate::store::{Store, StoreError, StoredReading};

/// Where a scan stopped: the (time, CID bytes) of the last reading looked at, or the time
/// and [`REST_OF_MS`] when every reading of that millisecond was taken.
pub type Cursor = (u64, Vec<u8>);

/// A cursor's CID part that sorts after every CID: the next page starts at the next
/// millisecond.
const REST_OF_MS: [u8; 64] = [0xff; 64];

/// One page of matching readings, and where the next one starts (`None`: the range is done).
#[derive(Debug, Default)]
pub struct Page {
    /// Readings in (time, seq, CID) order.
    pub readings: Vec<StoredReading>,
    /// The `after` of the next page.
    pub next: Option<Cursor>,
}

impl Page {
    /// The store keeps (time, CID) order; readings of one millisecond go in seq order, so a
    /// source's burst (several readings a millisecond) reads back as it was published.
    fn done(mut self) -> Page {
        self.readings
            .sort_by_key(|r| (r.reading.time, r.reading.seq));
        self
    }
}

/// Up to `max` readings of `topic` in `range` after `after`, of `source` only when given.
/// Reads store pages of `max` until `max` match or `scan` store pages were read, so a filter
/// that matches little still costs bounded work per call. A page that fills up (or runs out
/// of scans) takes the rest of its last millisecond too, so that it can be put in seq order
/// without a later page going back into it.
pub fn read_page(
    store: &Store,
    topic: &str,
    range: TimeRange,
    source: Option<&str>,
    after: Option<Cursor>,
    max: usize,
    scan: usize,
) -> Result<Page, StoreError> {
    let max = max.max(1);
    let mut page = Page {
        readings: Vec::new(),
        next: after,
    };
    if range.since_ms >= range.until_ms {
        page.next = None;
        return Ok(page);
    }
    // Once full: the millisecond still being taken.
    let mut closing: Option<u64> = None;
    let mut scans = 0;
    while scans < scan.max(1) || closing.is_some() {
        scans += 1;
        let cursor = page.next.as_ref().map(|(t, c)| (*t, c.as_slice()));
        let got = store.history_page(topic, range.since_ms, range.until_ms, cursor, max)?;
        let full = got.len() >= max;
        for r in got {
            if let Some(t) = closing.filter(|t| *t != r.reading.time) {
                page.next = Some((t, REST_OF_MS.to_vec()));
                return Ok(page.done());
            }
            page.next = Some((r.reading.time, r.cid.to_bytes()));
            if source.is_none_or(|s| s == r.reading.source) {
                page.readings.push(r);
                if page.readings.len() >= max && closing.is_none() {
                    closing = page.next.as_ref().map(|(t, _)| *t);
                }
            }
        }
        if !full {
            page.next = None;
            return Ok(page.done());
        }
        if scans >= scan.max(1) && closing.is_none() {
            // Out of scans: this page too ends where a millisecond does.
            closing = page.next.as_ref().map(|(t, _)| *t);
        }
    }
    Ok(page.done())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::buckets::tests::reading;
    use crate::store::Batch;

    #[tokio::test]
    async fn pages_cover_the_range_once_with_a_filter() {
        let store = Store::in_memory().unwrap();
        let mut all = Vec::new();
        for i in 0..50u64 {
            for src in ["a", "b", "c"] {
                all.push(reading(src, i + 1, 1000 + i * 10, i as f64));
            }
        }
        for r in &all {
            let (cid, bytes) = r.reading.encode();
            let size = bytes.len() as u64;
            let batch = Batch {
                blocks: vec![(cid, bytes)],
                linked: vec![(cid, r.reading.clone(), size)],
                ..Batch::default()
            };
            store.write(batch).await.unwrap();
        }
        let range = TimeRange {
            since_ms: 1100,
            until_ms: 1400,
        };
        let mut got = Vec::new();
        let mut after = None;
        loop {
            let p = read_page(&store, "temperature", range, Some("b"), after, 7, 2).unwrap();
            got.extend(p.readings);
            match p.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        let times: Vec<u64> = got.iter().map(|r| r.reading.time).collect();
        assert_eq!(
            times,
            (10..40u64).map(|i| 1000 + i * 10).collect::<Vec<_>>()
        );
        assert!(got.iter().all(|r| r.reading.source == "b"));
    }

    /// A burst of one source within one millisecond reads back in seq order across pages,
    /// each reading once.
    #[tokio::test]
    async fn a_burst_within_a_millisecond_reads_back_in_seq_order() {
        let store = Store::in_memory().unwrap();
        // 30 readings of "a" at 2 times, 5 of "b" between them.
        let mut all: Vec<StoredReading> = (1..=20u64)
            .map(|seq| reading("a", seq, 5000, 1.0))
            .collect();
        all.extend((1..=5u64).map(|seq| reading("b", seq, 5001, 2.0)));
        all.extend((21..=30u64).map(|seq| reading("a", seq, 5002, 3.0)));
        for r in &all {
            let (cid, bytes) = r.reading.encode();
            let size = bytes.len() as u64;
            store
                .write(Batch {
                    blocks: vec![(cid, bytes)],
                    linked: vec![(cid, r.reading.clone(), size)],
                    ..Batch::default()
                })
                .await
                .unwrap();
        }
        let range = TimeRange {
            since_ms: 0,
            until_ms: u64::MAX,
        };
        for (source, want) in [(None, 35usize), (Some("a"), 30)] {
            let mut got = Vec::new();
            let mut after = None;
            loop {
                let p = read_page(&store, "temperature", range, source, after, 3, 1).unwrap();
                got.extend(p.readings);
                match p.next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
            assert_eq!(got.len(), want, "each reading once ({source:?})");
            let a: Vec<u64> = got
                .iter()
                .filter(|r| r.reading.source == "a")
                .map(|r| r.reading.seq)
                .collect();
            assert_eq!(
                a,
                (1..=30).collect::<Vec<_>>(),
                "source a in seq order ({source:?})"
            );
        }
    }

    /// Pages of any size and scan budget, with and without a source filter, over readings
    /// crowded into few milliseconds: every reading once, none skipped at a page's edge.
    #[tokio::test]
    async fn pages_of_any_size_cover_crowded_milliseconds_once() {
        let store = Store::in_memory().unwrap();
        let mut x: u64 = 42;
        let mut next = move |m: u64| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) % m
        };
        let mut seqs = std::collections::HashMap::new();
        let mut all = Vec::new();
        for _ in 0..400 {
            let src = ["a", "b", "c", "d"][next(4) as usize];
            let seq = seqs.entry(src).or_insert(0u64);
            *seq += 1;
            all.push(reading(src, *seq, 7000 + next(25), *seq as f64));
        }
        let batch = Batch {
            blocks: all.iter().map(|r| r.reading.encode()).collect(),
            linked: all
                .iter()
                .map(|r| {
                    let (cid, bytes) = r.reading.encode();
                    (cid, r.reading.clone(), bytes.len() as u64)
                })
                .collect(),
            ..Batch::default()
        };
        store.write(batch).await.unwrap();
        let range = TimeRange {
            since_ms: 0,
            until_ms: u64::MAX,
        };
        for max in [1, 2, 3, 7, 16, 50, 399, 400, 1000] {
            for scan in [1, 2, 8] {
                for source in [None, Some("b")] {
                    let mut got = Vec::new();
                    let mut after = None;
                    loop {
                        let p = read_page(&store, "temperature", range, source, after, max, scan)
                            .unwrap();
                        got.extend(p.readings.into_iter().map(|r| r.cid));
                        match p.next {
                            Some(n) => after = Some(n),
                            None => break,
                        }
                    }
                    let mut want: Vec<_> = all
                        .iter()
                        .filter(|r| source.is_none_or(|s| s == r.reading.source))
                        .map(|r| r.reading.encode().0)
                        .collect();
                    want.sort();
                    let n = got.len();
                    got.sort();
                    assert_eq!(n, want.len(), "max {max}, scan {scan}, {source:?}: count");
                    assert_eq!(got, want, "max {max}, scan {scan}, {source:?}");
                }
            }
        }
    }
}
