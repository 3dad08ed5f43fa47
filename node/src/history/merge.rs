//! Merging the readings several nodes hold: one copy per CID, each source in history order
//! `(seq, time, CID)` (docs/history-model.md), sources interleaved by time.

use std::collections::{BTreeMap, HashSet};

use crate::store::StoredReading;

/// Dedupes by CID and orders: within a source by `(seq, time, CID)`; across sources the
/// reading whose time is earliest goes first (ties: source id).
pub fn merge(parts: impl IntoIterator<Item = Vec<StoredReading>>) -> Vec<StoredReading> {
    let mut seen = HashSet::new();
    let mut by_source: BTreeMap<String, Vec<StoredReading>> = BTreeMap::new();
    for r in parts.into_iter().flatten() {
        if seen.insert(r.cid) {
            by_source
                .entry(r.reading.source.clone())
                .or_default()
                .push(r);
        }
    }
    let mut lanes: Vec<std::collections::VecDeque<StoredReading>> = by_source
        .into_values()
        .map(|mut v| {
            v.sort_by_key(|r| (r.reading.seq, r.reading.time, r.cid.to_bytes()));
            v.into()
        })
        .collect();
    let mut out = Vec::with_capacity(seen.len());
    // Few sources per topic: a linear pick per reading is cheaper than a heap's bookkeeping.
    loop {
        let next = lanes
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.front().map(|r| (r.reading.time, i)))
            .min();
        let Some((_, i)) = next else { break };
        out.extend(lanes[i].pop_front());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::buckets::tests::reading;

    #[test]
    fn copies_collapse_and_each_source_keeps_its_order() {
        let a1 = reading("a", 1, 1000, 1.0);
        let a2 = reading("a", 2, 3000, 2.0);
        // A clock step back: seq orders it after a2 although its time is earlier.
        let a3 = reading("a", 3, 2500, 3.0);
        let b1 = reading("b", 1, 2000, 9.0);
        let merged = merge([
            vec![a1.clone(), a3.clone()],
            vec![b1.clone(), a1.clone(), a2.clone()],
        ]);
        let got: Vec<_> = merged
            .iter()
            .map(|r| (r.reading.source.as_str(), r.reading.seq))
            .collect();
        assert_eq!(got, [("a", 1), ("b", 1), ("a", 2), ("a", 3)]);
    }
}
