//! The waiting graph: readings stored but not yet linked, each waiting for the parents it
//! lacks (`prev` and the heads it joins), and the chain fetches in flight. A plain struct;
//! the actor asks the store whether a CID is linked and hands the answers in.

use std::collections::{HashMap, HashSet};

use cid::Cid;

use crate::bus::Linked;
use crate::reading::Reading;

/// The parents a reading still lacks: none when it starts its source's history, when every
/// parent is linked, or when it is older than the retention horizon (nothing before it is
/// kept anyway). The one place this is decided, for gossip, local `pubsub/pub` blocks and
/// fetched chains alike.
pub fn missing_parents(
    r: &Reading,
    horizon_ms: u64,
    mut linked: impl FnMut(&Cid) -> bool,
) -> Vec<Cid> {
    if r.time < horizon_ms {
        return Vec::new();
    }
    r.parents().filter(|p| !linked(p)).copied().collect()
}

/// A reading parked until its missing parents are linked.
struct Waiter {
    item: Linked,
    missing: HashSet<Cid>,
}

/// Readings waiting for parents, and fetches in flight.
#[derive(Default)]
pub struct Graph {
    /// Missing parent → readings waiting for it.
    waiting: HashMap<Cid, Vec<Cid>>,
    /// Waiting readings by CID (their children wait too, without a fetch of their own).
    pending: HashMap<Cid, Waiter>,
    /// Fetch targets, with the number of readings each is expected to bring.
    inflight: HashMap<Cid, u64>,
}

impl Graph {
    /// Whether the reading is waiting here.
    pub fn is_pending(&self, cid: &Cid) -> bool {
        self.pending.contains_key(cid)
    }

    /// Whether the CID is waiting or being fetched: nothing more to do for it.
    pub fn is_known(&self, cid: &Cid) -> bool {
        self.pending.contains_key(cid) || self.inflight.contains_key(cid)
    }

    /// Parks a reading until each of `missing` (its parents not linked yet) is linked or
    /// given up on. Returns the parents a fetch should start for (neither waiting themselves
    /// nor being fetched). A reading missing nothing is not parked: link it instead.
    pub fn wait(&mut self, item: Linked, missing: Vec<Cid>) -> Vec<Cid> {
        if missing.is_empty() || self.pending.contains_key(&item.cid) {
            return Vec::new();
        }
        let fetch: Vec<Cid> = missing
            .iter()
            .filter(|p| !self.is_known(p))
            .copied()
            .collect();
        for p in &missing {
            self.waiting.entry(*p).or_default().push(item.cid);
        }
        self.pending.insert(
            item.cid,
            Waiter {
                item,
                missing: missing.into_iter().collect(),
            },
        );
        fetch
    }

    /// `parent` is linked (or given up on): the readings that no longer lack anything are
    /// returned, in an order where parents come before children, and with them everything
    /// that waited for them in turn. `first` (the parent itself, when it was linked here) is
    /// returned first.
    fn release(&mut self, parent: Cid, first: Option<Linked>) -> Vec<Linked> {
        let mut out = Vec::new();
        let mut stack: Vec<(Cid, Option<Linked>)> = vec![(parent, first)];
        while let Some((cid, linked)) = stack.pop() {
            if let Some(l) = linked {
                out.push(l);
            }
            for child in self.waiting.remove(&cid).unwrap_or_default() {
                let Some(w) = self.pending.get_mut(&child) else {
                    continue;
                };
                w.missing.remove(&cid);
                if w.missing.is_empty() {
                    let w = self.pending.remove(&child).expect("present");
                    stack.push((child, Some(w.item)));
                }
            }
        }
        out
    }

    /// Links `item` and, transitively, every reading that waited only for it (or for others
    /// linked by now); returns them in the order they become linked (parents first).
    pub fn link(&mut self, item: Linked) -> Vec<Linked> {
        let cid = item.cid;
        // A reading linked while it was parked (its last parent turned up by another path).
        if let Some(w) = self.pending.remove(&cid) {
            for p in w.missing {
                if let Some(ws) = self.waiting.get_mut(&p) {
                    ws.retain(|c| *c != cid);
                }
            }
        }
        self.release(cid, Some(item))
    }

    /// `parent` was linked without this graph (a publish on this node commits on its own):
    /// what waited only for it is linked now, with theirs.
    pub fn linked_elsewhere(&mut self, parent: &Cid) -> Vec<Linked> {
        self.release(*parent, None)
    }

    /// Gives up on `parent` (nobody can supply it): readings waiting for it stop waiting for
    /// it, and those that lack nothing else are linked past the gap, with theirs.
    pub fn link_past(&mut self, parent: &Cid) -> Vec<Linked> {
        self.release(*parent, None)
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

    /// Missing parents nobody is fetching (their fetch failed, or they predate this run),
    /// each with one reading that waits for it.
    pub fn orphans(&self) -> Vec<(Cid, Reading)> {
        self.waiting
            .iter()
            .filter(|(parent, _)| !self.is_known(parent))
            .filter_map(|(parent, children)| {
                let w = children.iter().find_map(|c| self.pending.get(c))?;
                Some((*parent, w.item.reading.clone()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn item(seq: u64, prev: Option<Cid>, joins: Vec<Cid>, value: f64) -> Linked {
        let r = Reading {
            aqi: None,
            seq,
            prev,
            time: 1_000 + seq,
            unit: "°C".into(),
            joins,
            topic: "temperature".into(),
            value,
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
            out.push(item(seq, prev, vec![], 20.0));
        }
        out
    }

    fn seqs(v: &[Linked]) -> Vec<u64> {
        v.iter().map(|l| l.reading.seq).collect()
    }

    #[test]
    fn missing_parents_counts_prev_and_joins_unless_past_the_horizon() {
        let c = chain(2);
        let sibling = item(2, Some(c[0].cid), vec![], 21.0);
        let join = item(3, Some(c[1].cid), vec![sibling.cid], 22.0);
        assert!(missing_parents(&c[0].reading, 0, |_| false).is_empty());
        assert_eq!(missing_parents(&c[1].reading, 0, |_| false), vec![c[0].cid]);
        assert!(missing_parents(&c[1].reading, 0, |p| *p == c[0].cid).is_empty());
        assert_eq!(
            missing_parents(&join.reading, 0, |p| *p == c[1].cid),
            vec![sibling.cid]
        );
        // Older than the horizon: nothing before it is kept, so it links as it is.
        assert!(missing_parents(&c[1].reading, 10_000, |_| false).is_empty());
    }

    #[test]
    fn children_wait_for_one_fetch_and_link_in_order() {
        let c = chain(4);
        let mut g = Graph::default();
        // 3 arrives first: 2 is missing, fetch it.
        assert_eq!(g.wait(c[2].clone(), vec![c[1].cid]), vec![c[1].cid]);
        assert!(g.start_fetch(c[1].cid, 1));
        assert!(!g.start_fetch(c[1].cid, 1), "one fetch per target");
        // 4 waits for 3, which is itself waiting: no second fetch.
        assert!(g.wait(c[3].clone(), vec![c[2].cid]).is_empty());
        assert!(g.is_pending(&c[2].cid) && g.is_pending(&c[3].cid));
        assert_eq!(g.lag(), 1);
        // The fetch brings 2: 2, 3, 4 link, parents first.
        g.end_fetch(&c[1].cid);
        assert_eq!(seqs(&g.link(c[1].clone())), vec![2, 3, 4]);
        assert!(!g.is_pending(&c[3].cid));
        assert!(g.orphans().is_empty());
        assert_eq!(g.lag(), 0);
    }

    #[test]
    fn a_join_waits_for_every_missing_parent() {
        let c = chain(2);
        let sibling = item(2, Some(c[0].cid), vec![], 21.0);
        let join = item(3, Some(c[1].cid), vec![sibling.cid], 22.0);
        let mut g = Graph::default();
        let fetch = g.wait(join.clone(), vec![c[1].cid, sibling.cid]);
        assert_eq!(fetch.len(), 2, "both parents are fetched");
        assert!(g.link(c[1].clone()).len() == 1, "one parent is not enough");
        assert!(g.is_pending(&join.cid));
        assert_eq!(seqs(&g.link(sibling.clone())), vec![2, 3]);
        assert!(!g.is_known(&join.cid));
    }

    #[test]
    fn a_failed_fetch_leaves_an_orphan_that_can_be_linked_past() {
        let c = chain(3);
        let mut g = Graph::default();
        assert_eq!(g.wait(c[2].clone(), vec![c[1].cid]), vec![c[1].cid]);
        assert!(g.start_fetch(c[1].cid, 1));
        assert!(g.orphans().is_empty(), "being fetched is not an orphan");
        g.end_fetch(&c[1].cid);
        let orphans = g.orphans();
        assert_eq!(orphans.len(), 1);
        assert_eq!(orphans[0].0, c[1].cid);
        assert_eq!(orphans[0].1.seq, 3);
        assert_eq!(seqs(&g.link_past(&c[1].cid)), vec![3]);
        assert!(g.orphans().is_empty());
        assert!(!g.is_known(&c[2].cid));
    }

    #[test]
    fn a_parked_reading_linked_by_another_path_leaves_the_graph() {
        let c = chain(3);
        let mut g = Graph::default();
        g.wait(c[2].clone(), vec![c[1].cid]);
        assert_eq!(seqs(&g.link(c[2].clone())), vec![3]);
        assert!(!g.is_pending(&c[2].cid));
        assert!(g.link(c[1].clone()).len() == 1, "3 is not linked twice");
    }

    #[test]
    fn a_parent_linked_by_a_publish_here_releases_its_waiters() {
        let c = chain(3);
        let mut g = Graph::default();
        assert_eq!(g.wait(c[1].clone(), vec![c[0].cid]), vec![c[0].cid]);
        g.wait(c[2].clone(), vec![c[1].cid]);
        // The first reading was committed by the publisher, not through the graph.
        assert_eq!(seqs(&g.linked_elsewhere(&c[0].cid)), vec![2, 3]);
        assert!(!g.is_pending(&c[1].cid) && !g.is_pending(&c[2].cid));
        assert!(g.linked_elsewhere(&c[0].cid).is_empty(), "released once");
    }

    #[test]
    fn a_reading_missing_nothing_never_waits() {
        let mut g = Graph::default();
        let first = item(1, None, vec![], 20.0);
        assert!(g.wait(first.clone(), vec![]).is_empty());
        assert!(!g.is_known(&first.cid));
    }
}
