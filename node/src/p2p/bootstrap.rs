//! Bootstrap: dials the configured peers, re-resolves `/dns4/` names and redials lost peers
//! with exponential backoff while the node has few peers. Every literal address is dialed; of
//! a name (a headless Service lists every pod) only a few addresses, chosen at random, so
//! connections grow with the cluster, not with its square. Topic discovery
//! ([`super::discovery`]) finds the other subscribers from there.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use rand::seq::SliceRandom;
use tokio::sync::watch;

use super::{DialFailure, Handle, NetError};

/// How often DNS names are resolved again.
const RESOLVE_EVERY: Duration = Duration::from_secs(15);
const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Once the first round is done, lost bootstrap peers are redialed only while the node has
/// fewer peers than this (Kubo's threshold): a node the DHT connected to others does not
/// keep coming back to a bootstrap node that trimmed it.
const ENOUGH_PEERS: usize = 4;
/// A connection that lasted this long resets its target's backoff.
const LASTED: Duration = Duration::from_secs(30);
/// How often the dialer looks at its targets again.
const LOOP_EVERY: Duration = Duration::from_millis(250);

/// An address the dialer knows, with its backoff and the peer last reached there.
struct Target {
    next_try: Instant,
    backoff: Duration,
    tried: bool,
    peer: Option<PeerId>,
    /// When the last dial succeeded.
    connected_at: Option<Instant>,
}

impl Target {
    fn new() -> Self {
        Target {
            next_try: Instant::now(),
            backoff: MIN_BACKOFF,
            tried: false,
            peer: None,
            connected_at: None,
        }
    }
}

/// One configured bootstrap entry and what it resolves to now.
struct Entry {
    addrs: Vec<Multiaddr>,
    /// How many of `addrs` to keep connected.
    want: usize,
}

/// Whether an address names a host to resolve (a Service name) rather than an IP.
fn is_name(addr: &Multiaddr) -> bool {
    matches!(
        addr.iter().next(),
        Some(Protocol::Dns4(_) | Protocol::Dns6(_) | Protocol::Dns(_))
    )
}

/// Resolves a `/dns4|dns6|dns/NAME/tcp/PORT` address to IP addresses; others pass through.
async fn resolve(addr: &Multiaddr) -> Vec<Multiaddr> {
    let mut parts = addr.iter();
    let (name, want_v6) = match parts.next() {
        Some(Protocol::Dns4(n)) => (n.to_string(), Some(false)),
        Some(Protocol::Dns6(n)) => (n.to_string(), Some(true)),
        Some(Protocol::Dns(n)) => (n.to_string(), None),
        _ => return vec![addr.clone()],
    };
    let rest: Vec<Protocol> = parts.collect();
    let port = rest
        .iter()
        .find_map(|p| match p {
            Protocol::Tcp(p) | Protocol::Udp(p) => Some(*p),
            _ => None,
        })
        .unwrap_or(0);
    let Ok(found) = tokio::net::lookup_host((name.as_str(), port)).await else {
        tracing::debug!(%name, "bootstrap name does not resolve (yet)");
        return vec![];
    };
    let mut out = Vec::new();
    for sa in found {
        if want_v6.is_some_and(|v6| v6 != sa.is_ipv6()) {
            continue;
        }
        let mut ma = Multiaddr::empty();
        ma.push(match sa.ip() {
            std::net::IpAddr::V4(ip) => Protocol::Ip4(ip),
            std::net::IpAddr::V6(ip) => Protocol::Ip6(ip),
        });
        for p in &rest {
            ma.push(p.clone());
        }
        if !out.contains(&ma) {
            out.push(ma);
        }
    }
    out
}

/// Which addresses of one entry to dial now: enough of the due, unconnected ones (in random
/// order) to bring the connected count up to `want`. `connected` and `due` are per address.
fn pick(
    addrs: &[Multiaddr],
    want: usize,
    connected: impl Fn(&Multiaddr) -> bool,
    due: impl Fn(&Multiaddr) -> bool,
) -> Vec<Multiaddr> {
    let up = addrs.iter().filter(|a| connected(a)).count();
    let mut candidates: Vec<&Multiaddr> =
        addrs.iter().filter(|a| !connected(a) && due(a)).collect();
    candidates.shuffle(&mut rand::rng());
    candidates
        .into_iter()
        .take(want.saturating_sub(up))
        .cloned()
        .collect()
}

/// Runs until the handle stops. `per_name` is how many addresses of each name to keep
/// connected; `first_round` turns true once each entry has that many connected or has had
/// every address tried once.
pub async fn run(
    handle: Handle,
    bootstrap: Vec<Multiaddr>,
    per_name: usize,
    first_round: watch::Sender<bool>,
) {
    if bootstrap.is_empty() {
        let _ = first_round.send(true);
        return;
    }
    let per_name = per_name.max(1);
    let mut targets: HashMap<Multiaddr, Target> = HashMap::new();
    let mut entries: Vec<Entry> = Vec::new();
    let mut resolved_at: Option<Instant> = None;
    loop {
        let Ok(own) = handle.listening().await else {
            return;
        };
        if resolved_at.is_none_or(|t| t.elapsed() >= RESOLVE_EVERY) {
            entries.clear();
            for b in &bootstrap {
                let addrs: Vec<Multiaddr> = resolve(b)
                    .await
                    .into_iter()
                    .filter(|a| !own.contains(a))
                    .collect();
                let want = if is_name(b) { per_name } else { addrs.len() };
                entries.push(Entry { addrs, want });
            }
            let now_known: HashSet<&Multiaddr> = entries.iter().flat_map(|e| &e.addrs).collect();
            // Pods that left the Service stop being dialed.
            targets.retain(|a, _| now_known.contains(a));
            for a in now_known {
                targets.entry(a.clone()).or_insert_with(Target::new);
            }
            resolved_at = Some(Instant::now());
        }
        let now = Instant::now();
        for t in targets.values_mut() {
            let lasted = t.connected_at.is_some_and(|at| now - at >= LASTED);
            if lasted && t.peer.is_some_and(|p| handle.is_connected(&p)) {
                t.backoff = MIN_BACKOFF;
            }
        }
        let topping_up = !*first_round.borrow() || handle.peer_ids().len() < ENOUGH_PEERS;
        let due: Vec<Multiaddr> = entries
            .iter()
            .filter(|_| topping_up)
            .flat_map(|e| {
                pick(
                    &e.addrs,
                    e.want,
                    |a| is_up(&targets, &handle, a),
                    |a| targets.get(a).is_some_and(|t| t.next_try <= now),
                )
            })
            .collect();
        for addr in due {
            let result = handle.dial(addr.clone()).await;
            let Some(t) = targets.get_mut(&addr) else {
                continue;
            };
            t.tried = true;
            match result {
                Ok(peer) => {
                    // A peer that closes at once (full, or trimming us) is not hammered: the
                    // backoff resets only once a connection has lasted (below).
                    t.peer = Some(peer);
                    t.connected_at = Some(Instant::now());
                    t.next_try = Instant::now() + t.backoff;
                    t.backoff = (t.backoff * 2).min(MAX_BACKOFF);
                }
                Err(NetError::Dial(DialFailure::LocalPeer)) => {
                    // Our own pod behind the Service name.
                    t.next_try = Instant::now() + Duration::from_secs(3600);
                }
                Err(NetError::Stopped) => return,
                Err(e) => {
                    tracing::debug!(%addr, error = %e, backoff = ?t.backoff, "bootstrap dial failed");
                    t.next_try = Instant::now() + t.backoff;
                    t.backoff = (t.backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        if !*first_round.borrow() {
            let settled = entries.iter().all(|e| {
                let up = e
                    .addrs
                    .iter()
                    .filter(|a| is_up(&targets, &handle, a))
                    .count();
                up >= e.want.min(e.addrs.len())
                    || e.addrs
                        .iter()
                        .all(|a| targets.get(a).is_none_or(|t| t.tried))
            });
            if settled {
                let _ = first_round.send(true);
            }
        }
        tokio::time::sleep(LOOP_EVERY).await;
    }
}

/// Whether the peer last reached at `a` is still connected.
fn is_up(targets: &HashMap<Multiaddr, Target>, handle: &Handle, a: &Multiaddr) -> bool {
    targets
        .get(a)
        .and_then(|t| t.peer)
        .is_some_and(|p| handle.is_connected(&p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: u8) -> Vec<Multiaddr> {
        (1..=n)
            .map(|i| format!("/ip4/10.0.0.{i}/tcp/4001").parse().unwrap())
            .collect()
    }

    #[test]
    fn a_name_gets_only_as_many_dials_as_wanted() {
        let all = addrs(50);
        let first = pick(&all, 3, |_| false, |_| true);
        assert_eq!(first.len(), 3);
        assert_eq!(first.iter().collect::<HashSet<_>>().len(), 3);
        // Two connected: one more dial. Three connected: none.
        let two: HashSet<Multiaddr> = first[..2].iter().cloned().collect();
        let next = pick(&all, 3, |a| two.contains(a), |_| true);
        assert_eq!(next.len(), 1);
        assert!(!two.contains(&next[0]));
        let three: HashSet<Multiaddr> = first.iter().cloned().collect();
        assert!(pick(&all, 3, |a| three.contains(a), |_| true).is_empty());
    }

    #[test]
    fn backed_off_addresses_wait_and_picks_spread_over_the_service() {
        let all = addrs(4);
        // Only address 4 is due: the others back off.
        let only = pick(&all, 3, |_| false, |a| *a == all[3]);
        assert_eq!(only, vec![all[3].clone()]);
        // Random choice: over many pods every address gets picked by someone.
        let mut seen = HashSet::new();
        for _ in 0..200 {
            seen.extend(pick(&all, 1, |_| false, |_| true));
        }
        assert_eq!(seen.len(), 4);
    }

    #[test]
    fn names_are_told_from_literal_addresses() {
        assert!(is_name(&"/dns4/svc/tcp/4001".parse().unwrap()));
        assert!(!is_name(&"/ip4/10.0.0.1/tcp/4001".parse().unwrap()));
    }
}
