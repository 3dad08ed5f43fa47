//! Bootstrap: dials every bootstrap address, re-resolves `/dns4/` names (a headless Service
//! name lists every pod) and redials lost peers with exponential backoff.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;
use tokio::sync::watch;

use super::{DialFailure, Handle, NetError};

/// How often DNS names are resolved again.
const RESOLVE_EVERY: Duration = Duration::from_secs(15);
const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

struct Target {
    next_try: Instant,
    backoff: Duration,
    tried: bool,
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
        out.push(ma);
    }
    out
}

/// Runs until the handle stops; `first_round` turns true once every address was tried once.
pub async fn run(handle: Handle, bootstrap: Vec<Multiaddr>, first_round: watch::Sender<bool>) {
    if bootstrap.is_empty() {
        let _ = first_round.send(true);
        return;
    }
    let mut targets: HashMap<Multiaddr, Target> = HashMap::new();
    let mut resolved_at: Option<Instant> = None;
    loop {
        if resolved_at.is_none_or(|t| t.elapsed() >= RESOLVE_EVERY) {
            let mut now_known = HashSet::new();
            for b in &bootstrap {
                now_known.extend(resolve(b).await);
            }
            // Pods that left the Service stop being dialed.
            targets.retain(|a, _| now_known.contains(a));
            for a in now_known {
                targets.entry(a).or_insert(Target {
                    next_try: Instant::now(),
                    backoff: MIN_BACKOFF,
                    tried: false,
                });
            }
            resolved_at = Some(Instant::now());
        }
        let peers = handle.peers();
        let connected: HashSet<Multiaddr> = peers.iter().map(|p| p.addr.clone()).collect();
        let Ok(own) = handle.listening().await else {
            return;
        };
        let now = Instant::now();
        let due: Vec<Multiaddr> = targets
            .iter()
            .filter(|(a, t)| t.next_try <= now && !connected.contains(*a) && !own.contains(a))
            .map(|(a, _)| a.clone())
            .collect();
        for addr in due {
            let result = handle.dial(addr.clone()).await;
            let Some(t) = targets.get_mut(&addr) else {
                continue;
            };
            t.tried = true;
            match result {
                Ok(()) => {
                    t.backoff = MIN_BACKOFF;
                    t.next_try = Instant::now() + MIN_BACKOFF;
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
        let all_tried = targets
            .iter()
            .all(|(a, t)| t.tried || own.contains(a) || connected.contains(a));
        if all_tried && !*first_round.borrow() {
            let _ = first_round.send(true);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
