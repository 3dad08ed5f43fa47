//! Reading a topic's history in pages: the one loop the API's streamed answers, its merges
//! and the sync server's `History` answers share.

use super::TimeRange;
use crate::store::{Store, StoreError, StoredReading};

/// Where a scan stopped: the (time, CID bytes) of the last reading looked at.
pub type Cursor = (u64, Vec<u8>);

/// One page of matching readings, and where the next one starts (`None`: the range is done).
#[derive(Debug, Default)]
pub struct Page {
    /// Readings in (time, CID) order.
    pub readings: Vec<StoredReading>,
    /// The `after` of the next page.
    pub next: Option<Cursor>,
}

/// Up to `max` readings of `topic` in `range` after `after`, of `source` only when given.
/// Reads store pages of `max` until `max` match or `scan` store pages were read, so a filter
/// that matches little still costs bounded work per call.
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
    for _ in 0..scan.max(1) {
        let cursor = page.next.as_ref().map(|(t, c)| (*t, c.as_slice()));
        let got = store.history_page(topic, range.since_ms, range.until_ms, cursor, max)?;
        let full = got.len() >= max;
        for r in got {
            page.next = Some((r.reading.time, r.cid.to_bytes()));
            if source.is_none_or(|s| s == r.reading.source) {
                page.readings.push(r);
                if page.readings.len() >= max {
                    // More may follow the last one taken.
                    return Ok(page);
                }
            }
        }
        if !full {
            page.next = None;
            return Ok(page);
        }
    }
    Ok(page)
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
}
