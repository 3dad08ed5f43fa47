//! Connection budget, as Kubo's connection manager keeps it: a node accepts connections well
//! past its budget, so a newcomer can always reach it and learn other peers (identify, a DHT
//! answer, gossipsub peer exchange), then closes the least useful ones. A young connection
//! gets a grace period (its DHT walk and first heads exchange run then); gossip mesh members
//! go last. Past twice the budget the grace is short: a crowd arriving at once (a star of
//! pods all bootstrapped from one) passes through in waves instead of being refused, which
//! would leave the refused with no peer to learn another from.

use std::time::{Duration, Instant};

use libp2p::PeerId;

/// How long a new connection is safe from trimming while at most twice the budget are held.
pub const GRACE: Duration = Duration::from_secs(30);
/// How long a new connection is safe beyond twice the budget: enough for identify, a DHT
/// walk through this node and the first dials to the peers it names.
pub const SHORT_GRACE: Duration = Duration::from_secs(5);
/// How often the budget is checked.
pub const TRIM_EVERY: Duration = Duration::from_secs(1);
/// How long a trimmed peer is remembered: if it comes back within this while the node is
/// over its budget, it goes at the next trim, without a grace (it had its identify, DHT walk
/// and heads exchange the first time). A node that many others bootstrap from (the hub of a
/// star) would otherwise hold every spoke that came back when short of peers for a grace
/// period, and stay over its budget.
pub const RETURN_MEMORY: Duration = Duration::from_secs(120);

/// How many connections a node keeps: up to `max_connections` peers are kept; beyond it the
/// trimmer closes the least useful, past their grace, down to the low-water mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Peers kept (high-water mark).
    pub max_connections: u32,
}

impl Limits {
    /// Connections held past the short grace: twice the budget.
    pub fn held(&self) -> usize {
        (self.max_connections * 2) as usize
    }

    /// Established connections refused beyond this, in and out together (the bound memory
    /// is sized for): four times the budget.
    pub fn hard_cap(&self) -> u32 {
        self.max_connections * 4
    }

    /// Connections other peers may open to us: all of the hard cap but a quarter of the
    /// budget, so a node that everyone dials can still dial out (bootstrap, discovery).
    pub fn max_incoming(&self) -> u32 {
        self.hard_cap() - self.max_connections / 4
    }

    /// Peers the trimmer leaves once it runs.
    pub fn low_water(&self) -> usize {
        (self.max_connections - self.max_connections / 4) as usize
    }

    /// Connected peers up to which discovery dials more.
    pub fn discovery_budget(&self) -> usize {
        (self.max_connections / 2).max(1) as usize
    }

    /// Subscribers of a topic below which discovery looks for more: gossipsub's D_low (5),
    /// but at least two under the low-water mark. A lookup connects to the ~20 peers closest
    /// to the topic's key, which then trim; if a node the trimmer left at low water looked
    /// again as soon as another node's trimmer took one peer from it, lookups would set off
    /// trims that set off lookups, and connections would come in waves and never settle.
    pub fn topic_peers_wanted(&self) -> usize {
        5.min(self.low_water().saturating_sub(2)).max(1)
    }
}

/// What the trimmer knows of a connected peer.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The peer.
    pub peer: PeerId,
    /// When its first connection was established.
    pub since: Instant,
    /// Whether this node dialed it (its own choice: bootstrap, discovery).
    pub outbound: bool,
    /// Whether it is in a gossip mesh of ours.
    pub in_mesh: bool,
    /// Whether this node trimmed it less than [`RETURN_MEMORY`] ago and it came back.
    pub returning: bool,
}

/// The peers to disconnect, least useful first (outside every mesh, then those that dialed
/// in, then the youngest): beyond [`Limits::held`], those past [`SHORT_GRACE`] down to it;
/// beyond the budget, those past [`GRACE`] down to the low-water mark. A returning peer has
/// no grace.
pub fn choose(peers: &[Candidate], limits: Limits, now: Instant) -> Vec<PeerId> {
    let mut order: Vec<&Candidate> = peers.iter().collect();
    order.sort_by_key(|c| (c.in_mesh, c.outbound, std::cmp::Reverse(c.since)));
    let age = |c: &Candidate| now.saturating_duration_since(c.since);
    let over_held = peers.len().saturating_sub(limits.held());
    let mut gone: Vec<PeerId> = order
        .iter()
        .filter(|c| c.returning || age(c) >= SHORT_GRACE)
        .take(over_held)
        .map(|c| c.peer)
        .collect();
    let left = peers.len() - gone.len();
    if left > limits.max_connections as usize {
        let more: Vec<PeerId> = order
            .iter()
            .filter(|c| (c.returning || age(c) >= GRACE) && !gone.contains(&c.peer))
            .take(left - limits.low_water())
            .map(|c| c.peer)
            .collect();
        gone.extend(more);
    }
    gone
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(age_s: u64, outbound: bool, in_mesh: bool, now: Instant) -> Candidate {
        Candidate {
            peer: PeerId::random(),
            since: now - Duration::from_secs(age_s),
            outbound,
            in_mesh,
            returning: false,
        }
    }

    fn limits(max_connections: u32) -> Limits {
        Limits { max_connections }
    }

    #[test]
    fn discovery_wants_fewer_topic_peers_than_the_trimmer_leaves() {
        for budget in 4..200 {
            let l = limits(budget);
            assert!(l.topic_peers_wanted() >= 1);
            assert!(l.topic_peers_wanted() <= 5, "gossipsub's D_low at most");
            assert!(
                l.topic_peers_wanted() + 2 <= l.low_water(),
                "budget {budget}: a trimmed node must lose two more peers before it looks"
            );
        }
        assert_eq!(limits(8).topic_peers_wanted(), 4);
        assert_eq!(limits(64).topic_peers_wanted(), 5);
    }

    #[test]
    fn a_trimmed_peer_that_comes_back_has_no_grace() {
        let now = Instant::now();
        // Budget 4 (low water 3), five settled peers and two that arrived a second ago: one
        // of them was trimmed before and came back.
        let mut peers: Vec<Candidate> = (0..5).map(|_| peer(100, true, true, now)).collect();
        let fresh = peer(1, false, false, now);
        let mut back = peer(1, false, false, now);
        back.returning = true;
        peers.push(fresh.clone());
        peers.push(back.clone());
        let gone = choose(&peers, limits(4), now);
        assert!(gone.contains(&back.peer), "it goes at once, and first");
        assert!(
            !gone.contains(&fresh.peer),
            "a first-time peer keeps the whole grace"
        );
        assert_eq!(gone.len(), 4, "seven down to the low-water mark of three");
    }

    #[test]
    fn nothing_is_trimmed_within_the_budget() {
        let now = Instant::now();
        let peers: Vec<Candidate> = (0..10).map(|_| peer(100, false, false, now)).collect();
        assert!(choose(&peers, limits(10), now).is_empty());
    }

    #[test]
    fn over_the_budget_the_least_useful_go_down_to_low_water() {
        let now = Instant::now();
        let mesh_out = peer(100, true, true, now);
        let mesh_in = peer(100, false, true, now);
        let plain_out = peer(100, true, false, now);
        let young = peer(5, false, false, now);
        let plain_in: Vec<Candidate> = (0..4).map(|i| peer(40 + i, false, false, now)).collect();
        let mut peers = vec![
            mesh_out.clone(),
            mesh_in.clone(),
            plain_out.clone(),
            young.clone(),
        ];
        peers.extend(plain_in.iter().cloned());
        // 8 connected, budget 4 (held 8, low water 3): five go.
        let gone = choose(&peers, limits(4), now);
        assert_eq!(gone.len(), 5);
        for c in &plain_in {
            assert!(gone.contains(&c.peer), "inbound non-mesh peers go first");
        }
        assert!(gone.contains(&plain_out.peer), "then outbound non-mesh");
        assert!(!gone.contains(&young.peer), "the grace period holds");
        assert!(!gone.contains(&mesh_out.peer) && !gone.contains(&mesh_in.peer));
        // The youngest of equals goes first (budget 7, low water 6).
        let two = choose(&peers, limits(7), now);
        assert_eq!(two, vec![plain_in[0].peer, plain_in[1].peer]);
    }

    #[test]
    fn a_crowd_past_twice_the_budget_passes_through_after_the_short_grace() {
        let now = Instant::now();
        // Budget 2: held 4, low water 2. Three peers past the short grace, one of them in a
        // mesh, and five that just arrived.
        let settled_mesh = peer(10, false, true, now);
        let settled: Vec<Candidate> = (0..2).map(|i| peer(10 + i, false, false, now)).collect();
        let arrived: Vec<Candidate> = (0..5).map(|_| peer(1, false, false, now)).collect();
        let mut peers = vec![settled_mesh.clone()];
        peers.extend(settled.iter().cloned());
        peers.extend(arrived.iter().cloned());
        let gone = choose(&peers, limits(2), now);
        // Four over the held mark, but only three are past the short grace; the mesh
        // member goes last, none within the 30 s grace goes for the budget.
        assert_eq!(gone.len(), 3);
        assert_eq!(&gone[..2], &[settled[0].peer, settled[1].peer]);
        assert_eq!(gone[2], settled_mesh.peer);
        // Once they too are past the short grace, the crowd goes down to the held mark.
        let later = now + SHORT_GRACE;
        assert_eq!(choose(&peers, limits(2), later).len(), 4);
        // And past the grace, down to the low-water mark.
        assert_eq!(choose(&peers, limits(2), now + GRACE).len(), 6);
    }
}
