//! When a (re)started node is ready: once the bootstrap round is over, every peer it met
//! then has answered (or left), and every head those peers reported is linked here or
//! unobtainable. It waits for exactly those heads, not for every fetch in flight, so a node
//! under a steady stream of new readings still turns ready, and never before it holds what
//! its peers held when it asked. A plain state machine; the actor feeds it events.

use std::collections::{HashMap, HashSet};

use cid::Cid;
use libp2p::PeerId;

/// Failed heads exchanges with one initial peer before it no longer holds readiness back.
pub const MAX_HEADS_FAILURES: u32 = 5;

/// Readiness bookkeeping.
#[derive(Debug, Default)]
pub struct Readiness {
    /// Peers whose heads we still wait for; `None` until the bootstrap round ended.
    peers: Option<HashSet<PeerId>>,
    /// Heads reported by those peers and not linked here yet.
    heads: HashSet<Cid>,
    failures: HashMap<PeerId, u32>,
    ready: bool,
}

impl Readiness {
    /// The bootstrap round ended with these peers connected: wait for their heads.
    pub fn bootstrapped(&mut self, peers: impl IntoIterator<Item = PeerId>) {
        if self.peers.is_none() {
            self.peers = Some(peers.into_iter().collect());
        }
    }

    /// Whether the node is ready.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Whether this peer's heads count for readiness.
    pub fn counts(&self, peer: &PeerId) -> bool {
        !self.ready && self.peers.as_ref().is_some_and(|p| p.contains(peer))
    }

    /// A counting peer reported a head this node does not hold yet.
    pub fn expect(&mut self, head: Cid) {
        if !self.ready {
            self.heads.insert(head);
        }
    }

    /// The peer answered its heads.
    pub fn answered(&mut self, peer: &PeerId) {
        if let Some(p) = self.peers.as_mut() {
            p.remove(peer);
        }
    }

    /// The peer's heads exchange failed; true when it should be asked again (it still
    /// counts, is connected and has not failed too often). Readiness must not come from a
    /// failed exchange.
    pub fn failed(&mut self, peer: &PeerId, connected: bool) -> bool {
        let failures = {
            let f = self.failures.entry(*peer).or_insert(0);
            *f += 1;
            *f
        };
        let retry = self.counts(peer) && connected && failures < MAX_HEADS_FAILURES;
        if !retry {
            self.answered(peer);
        }
        retry
    }

    /// The peer disconnected.
    pub fn left(&mut self, peer: &PeerId) {
        self.answered(peer);
    }

    /// The head is linked here, or no peer can supply it.
    pub fn settled(&mut self, head: &Cid) {
        self.heads.remove(head);
    }

    /// True exactly once: when the node has just become ready.
    pub fn poll(&mut self) -> bool {
        if self.ready {
            return false;
        }
        let done = self
            .peers
            .as_ref()
            .is_some_and(|p| p.is_empty() && self.heads.is_empty());
        if done {
            self.ready = true;
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::{cid_of, RAW};

    fn cid(n: u8) -> Cid {
        cid_of(RAW, &[n])
    }

    #[test]
    fn not_ready_before_the_bootstrap_round() {
        let mut r = Readiness::default();
        assert!(!r.poll());
        r.bootstrapped([]);
        assert!(r.poll(), "alone: ready at once");
        assert!(!r.poll(), "reported once");
        assert!(r.is_ready());
    }

    #[test]
    fn waits_for_each_peer_and_each_reported_head() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut r = Readiness::default();
        r.bootstrapped([a, b]);
        assert!(r.counts(&a) && r.counts(&b));
        r.expect(cid(1));
        r.answered(&a);
        assert!(!r.poll(), "b has not answered");
        r.left(&b);
        assert!(!r.poll(), "a's head is not linked yet");
        r.settled(&cid(1));
        assert!(r.poll());
        assert!(!r.counts(&a), "after ready nothing counts");
        r.expect(cid(2));
        assert!(r.is_ready());
    }

    #[test]
    fn failed_exchanges_are_retried_a_bounded_number_of_times() {
        let a = PeerId::random();
        let mut r = Readiness::default();
        r.bootstrapped([a]);
        for _ in 1..MAX_HEADS_FAILURES {
            assert!(r.failed(&a, true));
            assert!(!r.poll());
        }
        assert!(!r.failed(&a, true), "gives up after {MAX_HEADS_FAILURES}");
        assert!(r.poll());
    }

    #[test]
    fn a_disconnected_peer_is_not_retried_and_a_late_peer_does_not_count() {
        let (a, late) = (PeerId::random(), PeerId::random());
        let mut r = Readiness::default();
        r.bootstrapped([a]);
        r.bootstrapped([a, late]);
        assert!(
            !r.counts(&late),
            "only the peers of the bootstrap round count"
        );
        assert!(!r.failed(&a, false));
        assert!(r.poll());
    }
}
