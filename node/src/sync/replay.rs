//! Refuses replayed gossip: a sliding window over each publisher's sequence numbers.
//!
//! Gossipsub drops a message id (`from ‖ seqno`) it saw in the last two minutes; after that, a
//! peer could replay an old signed message and have it delivered again. rust-libp2p, go-libp2p
//! and js-libp2p all number a publisher's messages with a counter seeded from the clock, so
//! an old seqno is a replay. Unlike Kubo's BasicSeqnoValidator (which drops anything not
//! newer than the last one seen), a window tolerates the reordering a mesh produces: a
//! message may arrive up to `WINDOW` seqnos late, once.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use libp2p::PeerId;

/// How far behind a publisher's newest seqno a message may arrive (bits per publisher).
pub const WINDOW: u64 = 8192;
const WORDS: usize = (WINDOW / 64) as usize;
/// Publishers tracked; the least recently heard half is forgotten when full.
const MAX_PUBLISHERS: usize = 4096;

/// The verdict on one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// First time this seqno arrives.
    Fresh,
    /// This seqno was delivered before.
    Replayed,
    /// Older than the window: an old message replayed.
    Stale,
}

struct Window {
    newest: u64,
    bits: Box<[u64; WORDS]>,
    last_used: u64,
}

impl Window {
    fn bit(seqno: u64) -> (usize, u64) {
        let i = seqno % WINDOW;
        ((i / 64) as usize, 1u64 << (i % 64))
    }

    fn check(&mut self, seqno: u64) -> Seen {
        if seqno > self.newest {
            let ahead = seqno - self.newest;
            if ahead >= WINDOW {
                self.bits.fill(0);
            } else {
                for s in self.newest + 1..seqno {
                    let (w, b) = Self::bit(s);
                    self.bits[w] &= !b;
                }
            }
            self.newest = seqno;
            let (w, b) = Self::bit(seqno);
            self.bits[w] |= b;
            return Seen::Fresh;
        }
        if self.newest - seqno >= WINDOW {
            return Seen::Stale;
        }
        let (w, b) = Self::bit(seqno);
        if self.bits[w] & b != 0 {
            return Seen::Replayed;
        }
        self.bits[w] |= b;
        Seen::Fresh
    }
}

/// Anti-replay windows for the publishers heard recently.
#[derive(Default)]
pub struct ReplayGuard {
    windows: HashMap<PeerId, Window>,
    clock: u64,
}

impl ReplayGuard {
    /// Records `seqno` from `publisher` and says whether it was seen before.
    pub fn check(&mut self, publisher: PeerId, seqno: u64) -> Seen {
        self.clock += 1;
        let clock = self.clock;
        if !self.windows.contains_key(&publisher) && self.windows.len() >= MAX_PUBLISHERS {
            self.forget_oldest_half();
        }
        match self.windows.entry(publisher) {
            Entry::Vacant(v) => {
                let mut w = Window {
                    newest: seqno,
                    bits: Box::new([0; WORDS]),
                    last_used: clock,
                };
                let (i, b) = Window::bit(seqno);
                w.bits[i] |= b;
                v.insert(w);
                Seen::Fresh
            }
            Entry::Occupied(mut o) => {
                let w = o.get_mut();
                w.last_used = clock;
                w.check(seqno)
            }
        }
    }

    fn forget_oldest_half(&mut self) {
        let mut ages: Vec<u64> = self.windows.values().map(|w| w.last_used).collect();
        ages.sort_unstable();
        let cut = ages[ages.len() / 2];
        self.windows.retain(|_, w| w.last_used > cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_and_reordered_messages_pass_once() {
        let mut g = ReplayGuard::default();
        let p = PeerId::random();
        let start = 1_700_000_000_000_000_000u64;
        for s in start..start + 100 {
            assert_eq!(g.check(p, s), Seen::Fresh);
        }
        assert_eq!(g.check(p, start + 150), Seen::Fresh);
        // Late arrivals inside the window pass, once.
        assert_eq!(g.check(p, start + 120), Seen::Fresh);
        assert_eq!(g.check(p, start + 120), Seen::Replayed);
        assert_eq!(g.check(p, start + 50), Seen::Replayed);
        assert_eq!(g.check(p, start + 150), Seen::Replayed);
    }

    #[test]
    fn old_seqnos_are_stale_and_publishers_are_separate() {
        let mut g = ReplayGuard::default();
        let (a, b) = (PeerId::random(), PeerId::random());
        assert_eq!(g.check(a, 1_000_000), Seen::Fresh);
        assert_eq!(g.check(a, 1_000_000 - WINDOW), Seen::Stale);
        assert_eq!(g.check(a, 1_000_000 - WINDOW + 1), Seen::Fresh);
        assert_eq!(g.check(b, 5), Seen::Fresh);
        // A jump past the whole window clears it: old bits do not leak into new seqnos.
        assert_eq!(g.check(a, 1_000_000 + 3 * WINDOW), Seen::Fresh);
        assert_eq!(g.check(a, 1_000_000 + 3 * WINDOW - 1), Seen::Fresh);
    }

    #[test]
    fn memory_is_bounded_under_a_flood_of_publishers() {
        let mut g = ReplayGuard::default();
        for _ in 0..3 * MAX_PUBLISHERS {
            g.check(PeerId::random(), 1);
        }
        assert!(g.windows.len() <= MAX_PUBLISHERS);
    }
}
