//! Persistent MQTT sessions: client id → subscriptions and what was delivered, kept in
//! `REPO/mqtt-sessions.json` (written synced, then renamed) so a subscriber that comes back,
//! also after a restart of the node, is served what it missed from the store.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;

/// Most persistent sessions kept: past it, the one away longest is dropped, so clients with
/// ever-new ids cannot grow the file without bound.
pub const MAX_SESSIONS: usize = 10_000;

/// One persistent session.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionState {
    /// (filter, QoS) as the client subscribed.
    pub subscriptions: Vec<(String, u8)>,
    /// `topic\tsource` → highest seq delivered (QoS 1: acknowledged) to the client.
    pub delivered: BTreeMap<String, u64>,
    /// When the session began (unix ms): nothing older is replayed.
    pub created_ms: u64,
    /// When the client went away (unix ms), while it is away.
    pub disconnected_ms: Option<u64>,
    /// Seconds the session outlives a disconnect (`u32::MAX`: forever, as 3.1.1).
    pub expiry_s: u32,
}

impl SessionState {
    /// A new session expiring `expiry_s` after a disconnect.
    pub fn new(expiry_s: u32) -> SessionState {
        SessionState {
            created_ms: now_ms(),
            expiry_s,
            ..SessionState::default()
        }
    }

    fn key(topic: &str, source: &str) -> String {
        format!("{topic}\t{source}")
    }

    /// The highest seq of (`topic`, `source`) the client has.
    pub fn delivered_seq(&self, topic: &str, source: &str) -> u64 {
        self.delivered
            .get(&Self::key(topic, source))
            .copied()
            .unwrap_or(0)
    }

    /// Records that the client has the reading (`topic`, `source`, `seq`).
    pub fn mark_delivered(&mut self, topic: &str, source: &str, seq: u64) {
        let e = self.delivered.entry(Self::key(topic, source)).or_default();
        *e = (*e).max(seq);
    }

    fn expired(&self, now: u64) -> bool {
        match self.disconnected_ms {
            Some(at) if self.expiry_s != u32::MAX => {
                now.saturating_sub(at) > u64::from(self.expiry_s) * 1000
            }
            _ => false,
        }
    }
}

/// Persistence failures.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot write the MQTT sessions file {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// The sessions of this node's MQTT listener; cheap to clone.
#[derive(Clone)]
pub struct Sessions {
    path: Option<PathBuf>,
    stored: Arc<Mutex<HashMap<String, SessionState>>>,
    /// Client id → the token that ends its live connection (a new connection takes over).
    live: Arc<Mutex<HashMap<String, (u64, CancellationToken)>>>,
    /// Serialises file writes (each writes the whole map).
    write: Arc<tokio::sync::Mutex<()>>,
}

impl Sessions {
    /// Loads `path` (none yet: no sessions; `None`: in memory only). Expired sessions and an
    /// unreadable file are dropped with a warning: a session is a convenience, not data.
    pub fn load(path: Option<PathBuf>) -> Sessions {
        let mut stored: HashMap<String, SessionState> = path
            .as_ref()
            .and_then(|p| match std::fs::read(p) {
                Ok(bytes) => serde_json::from_slice(&bytes)
                    .map_err(|e| {
                        tracing::warn!(path = %p.display(), error = %e, "unreadable MQTT sessions file; starting without sessions");
                    })
                    .ok(),
                Err(_) => None,
            })
            .unwrap_or_default();
        let now = now_ms();
        stored.retain(|_, s| !s.expired(now));
        Sessions {
            path,
            stored: Arc::new(Mutex::new(stored)),
            live: Default::default(),
            write: Default::default(),
        }
    }

    /// The stored session of a client, if any.
    pub fn get(&self, client_id: &str) -> Option<SessionState> {
        let stored = self.stored.lock().unwrap_or_else(|e| e.into_inner());
        stored
            .get(client_id)
            .filter(|s| !s.expired(now_ms()))
            .cloned()
    }

    /// Stores (`Some`) or forgets (`None`) a client's session, durably before returning.
    pub async fn put(
        &self,
        client_id: &str,
        state: Option<SessionState>,
    ) -> Result<(), SessionError> {
        let _w = self.write.lock().await;
        let text = {
            let mut stored = self.stored.lock().unwrap_or_else(|e| e.into_inner());
            let changed = match state {
                Some(s) => stored.insert(client_id.to_string(), s.clone()) != Some(s),
                None => stored.remove(client_id).is_some(),
            };
            while stored.len() > MAX_SESSIONS {
                let oldest = stored
                    .iter()
                    .filter(|(id, _)| id.as_str() != client_id)
                    .min_by_key(|(_, s)| s.disconnected_ms.unwrap_or(u64::MAX))
                    .map(|(id, _)| id.clone());
                match oldest {
                    Some(id) => {
                        tracing::info!(client = %id, "MQTT session dropped: {MAX_SESSIONS} sessions kept at most");
                        stored.remove(&id);
                    }
                    None => break,
                }
            }
            if !changed {
                return Ok(());
            }
            serde_json::to_vec(&*stored).expect("sessions serialize")
        };
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        let p = path.clone();
        tokio::task::spawn_blocking(move || {
            let tmp = p.with_extension("json.tmp");
            crate::repo::write_synced(&tmp, &text)?;
            std::fs::rename(&tmp, &p)
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r)
        .map_err(|source| SessionError::Write {
            path: path.display().to_string(),
            source,
        })
    }

    /// Registers a live connection of `client_id`; an earlier one is told to go (taken over).
    /// Returns the connection's number and the token cancelled on takeover.
    pub fn attach(&self, client_id: &str) -> (u64, CancellationToken) {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let token = CancellationToken::new();
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, old)) = live.insert(client_id.to_string(), (n, token.clone())) {
            old.cancel();
        }
        (n, token)
    }

    /// Removes connection `n` of `client_id` (unless a newer one took over).
    pub fn detach(&self, client_id: &str, n: u64) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if live.get(client_id).is_some_and(|(m, _)| *m == n) {
            live.remove(client_id);
        }
    }

    /// Whether connection `n` is still the client's live one (a taken-over connection must
    /// not overwrite its successor's session).
    pub fn is_current(&self, client_id: &str, n: u64) -> bool {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.get(client_id).is_some_and(|(m, _)| *m == n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sessions_survive_a_reload_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mqtt-sessions.json");
        let s = Sessions::load(Some(path.clone()));
        let mut st = SessionState::new(u32::MAX);
        st.subscriptions.push(("sensornet/#".into(), 1));
        st.mark_delivered("temperature", "a", 3);
        st.mark_delivered("temperature", "a", 2);
        s.put("c1", Some(st.clone())).await.unwrap();
        let mut gone = SessionState::new(1);
        gone.disconnected_ms = Some(now_ms() - 5_000);
        s.put("c2", Some(gone)).await.unwrap();
        let again = Sessions::load(Some(path));
        assert_eq!(again.get("c1"), Some(st));
        assert_eq!(
            again.get("c1").unwrap().delivered_seq("temperature", "a"),
            3
        );
        assert!(again.get("c2").is_none(), "expired");
        again.put("c1", None).await.unwrap();
        assert!(again.get("c1").is_none());

        let (n1, t1) = again.attach("x");
        let (n2, _t2) = again.attach("x");
        assert!(t1.is_cancelled(), "taken over");
        assert!(!again.is_current("x", n1) && again.is_current("x", n2));
        again.detach("x", n1);
        assert!(again.is_current("x", n2));
    }
}
