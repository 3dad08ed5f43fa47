//! Anti-entropy for holes: a block nobody could supply when its successor arrived was linked
//! past and recorded as a hole (`store` table `holes`); this sweep asks connected peers for
//! it again, every [`REPAIR_EVERY`] and whenever a peer connects, a few at a time, so a
//! reading that survives anywhere in the cluster ends up here too.

use std::time::Duration;

use libp2p::PeerId;

use super::Sync;
use crate::store::Batch;

/// How often holes (blocks nobody could supply when their child was linked past them) are
/// asked for again; also whenever a peer connects.
pub const REPAIR_EVERY: Duration = Duration::from_secs(30);
/// Holes asked for per sweep: repair stays a trickle beside live traffic.
pub const REPAIR_BATCH: usize = 16;

impl Sync {
    pub(super) fn update_hole_gauge(&self) {
        if let Ok(n) = self.deps.store.hole_count() {
            self.deps.metrics.catchup_holes.set(n as i64);
        }
    }

    /// Asks again for the blocks nobody could supply (`only`: a peer that just connected;
    /// else every connected peer). Holes older than the retention horizon are closed.
    pub(super) async fn sweep_holes(&mut self, only: Option<PeerId>) {
        if self.deps.net.peer_ids().is_empty() {
            return;
        }
        let Ok(holes) = self.deps.store.holes(REPAIR_BATCH) else {
            return;
        };
        let mut closed = Vec::new();
        for h in holes {
            if h.before_ms < self.horizon(&h.topic) {
                closed.push(h.cid);
                continue;
            }
            if self.graph.is_known(&h.cid) || self.is_linked(&h.cid) {
                continue;
            }
            tracing::info!(hole = %h.cid, topic = %h.topic, source = %h.source, "asking peers again for a missing reading");
            self.repairs.insert(h.cid);
            self.start_fetch(h.cid, &h.topic, 1, only);
        }
        if !closed.is_empty() {
            let batch = Batch {
                closed_holes: closed,
                ..Batch::default()
            };
            if let Err(e) = self.deps.store.write(batch).await {
                tracing::warn!(error = %e, "could not close expired holes");
            }
            self.update_hole_gauge();
        }
    }
}
