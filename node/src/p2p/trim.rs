//! Connection trimming, as Kubo's connection manager does: a node accepts connections up to a
//! hard cap, so a newcomer can always reach it and learn other peers, then closes the least
//! useful ones once it holds more than its budget. A young connection gets a grace period
//! (its DHT walk and first heads exchange run then); gossip mesh members go last.

use std::time::{Duration, Instant};

use libp2p::PeerId;

/// How long a new connection is safe from trimming.
pub const GRACE: Duration = Duration::from_secs(30);
/// How often the budget is checked.
pub const TRIM_EVERY: Duration = Duration::from_secs(5);

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
}

/// The peers to disconnect so that at most `low_water` remain, once more than `high_water`
/// are connected: peers outside the grace period only; first those outside every mesh, then
/// those that dialed in, then the youngest.
pub fn choose(
    peers: &[Candidate],
    high_water: usize,
    low_water: usize,
    now: Instant,
) -> Vec<PeerId> {
    if peers.len() <= high_water {
        return Vec::new();
    }
    let mut old: Vec<&Candidate> = peers
        .iter()
        .filter(|c| now.saturating_duration_since(c.since) >= GRACE)
        .collect();
    // Least useful first.
    old.sort_by_key(|c| (c.in_mesh, c.outbound, std::cmp::Reverse(c.since)));
    old.into_iter()
        .take(peers.len().saturating_sub(low_water))
        .map(|c| c.peer)
        .collect()
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
        }
    }

    #[test]
    fn nothing_is_trimmed_within_the_budget() {
        let now = Instant::now();
        let peers: Vec<Candidate> = (0..10).map(|_| peer(100, false, false, now)).collect();
        assert!(choose(&peers, 10, 7, now).is_empty());
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
        // 8 connected, budget 6, low water 3: five go.
        let gone = choose(&peers, 6, 3, now);
        assert_eq!(gone.len(), 5);
        for c in &plain_in {
            assert!(gone.contains(&c.peer), "inbound non-mesh peers go first");
        }
        assert!(gone.contains(&plain_out.peer), "then outbound non-mesh");
        assert!(!gone.contains(&young.peer), "the grace period holds");
        assert!(!gone.contains(&mesh_out.peer) && !gone.contains(&mesh_in.peer));
        // The youngest of equals goes first.
        let two = choose(&peers, 6, 6, now);
        assert_eq!(two, vec![plain_in[0].peer, plain_in[1].peer]);
    }
}
