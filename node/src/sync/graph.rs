//! The waiting graph: readings stored but not yet linked, keyed by the `prev` they wait for,
//! and the chain fetches in flight. A plain struct; the actor asks the store whether a CID
//! is linked and hands the answers in.

use std::collections::{HashMap, HashSet};

use cid::Cid;

use crate::bus::Linked;
use crate::reading::Reading;

/// Whether a reading can be linked now: it starts its source's chain, its `prev` is linked,
/// or it is older than the retention horizon (nothing before it is kept anyway). The one
/// place this is decided, for gossip, local `pubsub/pub` blocks and fetched chains alike.
pub fn linkable(r: &Reading, horizon_ms: u64, prev_linked: impl FnOnce(&Cid) -> bool) -> bool {
    match &r.prev {
        None => true,
        Some(p) => r.time < horizon_ms || prev_linked(p),
    }
}

/// Readings waiting for their `prev`, and fetches in flight.
#[derive(Default)]
pub struct Graph {
    /// prev CID → readings waiting for it.
    waiting: HashMap<Cid, Vec<Linked>>,
    /// CIDs of waiting readings (their children wait too, without a fetch of their own).
    pending: HashSet<Cid>,
    /// Fetch targets, with the number of readings each is expected to bring.
    inflight: HashMap<Cid, u64>,
}

impl Graph {
    /// Whether the reading is waiting here.
    pub fn is_pending(&self, cid: &Cid) -> bool {
        self.pending.contains(cid)
    }

    /// Whether the CID is waiting or being fetched: nothing more to do for it.
    pub fn is_known(&self, cid: &Cid) -> bool {
        self.pending.contains(cid) || self.inflight.contains_key(cid)
    }

    /// Parks a reading until its `prev` is linked. Returns the `prev` when a fetch for it
    /// should start (it is neither waiting itself nor being fetched).
    pub fn wait(&mut self, item: Linked) -> Option<Cid> {
        let prev = item.reading.prev?;
        self.pending.insert(item.cid);
        let fetch = !self.is_known(&prev);
        self.waiting.entry(prev).or_default().push(item);
        fetch.then_some(prev)
    }

    /// Links `item` and, transitively, every reading that waited for it; returns them in
    /// the order they become linked (parents before children).
    pub fn link(&mut self, item: Linked) -> Vec<Linked> {
        let mut out = Vec::new();
        let mut stack = vec![item];
        while let Some(l) = stack.pop() {
            self.pending.remove(&l.cid);
            if let Some(children) = self.waiting.remove(&l.cid) {
                stack.extend(children);
            }
            out.push(l);
        }
        out
    }

    /// Gives up on `prev` (nobody can supply it): its waiting children are linked past the
    /// gap, with theirs.
    pub fn link_past(&mut self, prev: &Cid) -> Vec<Linked> {
        let children = self.waiting.remove(prev).unwrap_or_default();
        children.into_iter().flat_map(|c| self.link(c)).collect()
    }

    /// Records a fetch of `target`; false if one is already running.
    pub fn start_fetch(&mut self, target: Cid, expected: u64) -> bool {
        if self.inflight.contains_key(&target) {
            return false;
        }
        self.inflight.insert(target, expected.max(1));
        true
    }

    /// The fetch of `target` ended.
    pub fn end_fetch(&mut self, target: &Cid) {
        self.inflight.remove(target);
    }

    /// Readings expected from the fetches in flight (`sensornet_catchup_lag`).
    pub fn lag(&self) -> u64 {
        self.inflight.values().sum()
    }

    /// Missing `prev`s nobody is fetching (their fetch failed, or they predate this run),
    /// each with one reading that waits for it.
    pub fn orphans(&self) -> Vec<(Cid, Reading)> {
        self.waiting
            .iter()
            .filter(|(prev, _)| !self.is_known(prev))
            .filter_map(|(prev, ws)| ws.first().map(|w| (*prev, w.reading.clone())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn item(seq: u64, prev: Option<Cid>) -> Linked {
        let r = Reading {
            aqi: None,
            seq,
            prev,
            time: 1_000 + seq,
            unit: "°C".into(),
            topic: "temperature".into(),
            value: 20.0,
            source: "t1".into(),
        };
        let (cid, bytes) = r.encode();
        Linked {
            cid,
            reading: r,
            backfilled: false,
            from: None,
            seqno: None,
            data: Arc::new(bytes),
        }
    }

    /// A chain of `n` readings, oldest first.
    fn chain(n: u64) -> Vec<Linked> {
        let mut out: Vec<Linked> = Vec::new();
        for seq in 1..=n {
            let prev = out.last().map(|l| l.cid);
            out.push(item(seq, prev));
        }
        out
    }

    #[test]
    fn linkable_needs_a_linked_prev_unless_first_or_past_the_horizon() {
        let c = chain(2);
        assert!(linkable(&c[0].reading, 0, |_| false));
        assert!(!linkable(&c[1].reading, 0, |_| false));
        assert!(linkable(&c[1].reading, 0, |p| *p == c[0].cid));
        // Older than the horizon: nothing before it is kept, so it links as it is.
        assert!(linkable(&c[1].reading, 10_000, |_| false));
    }

    #[test]
    fn children_wait_for_one_fetch_and_link_in_order() {
        let c = chain(4);
        let mut g = Graph::default();
        // 3 arrives first: 2 is missing, fetch it.
        assert_eq!(g.wait(c[2].clone()), Some(c[1].cid));
        assert!(g.start_fetch(c[1].cid, 1));
        assert!(!g.start_fetch(c[1].cid, 1), "one fetch per target");
        // 4 waits for 3, which is itself waiting: no second fetch.
        assert_eq!(g.wait(c[3].clone()), None);
        assert!(g.is_pending(&c[2].cid) && g.is_pending(&c[3].cid));
        assert_eq!(g.lag(), 1);
        // The fetch brings 2: 2, 3, 4 link, parents first.
        g.end_fetch(&c[1].cid);
        let linked: Vec<u64> = g.link(c[1].clone()).iter().map(|l| l.reading.seq).collect();
        assert_eq!(linked, vec![2, 3, 4]);
        assert!(!g.is_pending(&c[3].cid));
        assert!(g.orphans().is_empty());
        assert_eq!(g.lag(), 0);
    }

    #[test]
    fn a_failed_fetch_leaves_an_orphan_that_can_be_linked_past() {
        let c = chain(3);
        let mut g = Graph::default();
        assert_eq!(g.wait(c[2].clone()), Some(c[1].cid));
        assert!(g.start_fetch(c[1].cid, 1));
        assert!(g.orphans().is_empty(), "being fetched is not an orphan");
        g.end_fetch(&c[1].cid);
        let orphans = g.orphans();
        assert_eq!(orphans.len(), 1);
        assert_eq!(orphans[0].0, c[1].cid);
        assert_eq!(orphans[0].1.seq, 3);
        let linked: Vec<u64> = g
            .link_past(&c[1].cid)
            .iter()
            .map(|l| l.reading.seq)
            .collect();
        assert_eq!(linked, vec![3]);
        assert!(g.orphans().is_empty());
        assert!(!g.is_known(&c[2].cid));
    }

    #[test]
    fn a_first_reading_never_waits() {
        let mut g = Graph::default();
        assert_eq!(g.wait(item(1, None)), None);
        assert!(!g.is_known(&item(1, None).cid));
    }
}
