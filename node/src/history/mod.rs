//! History by time range: the query's arguments and limits ([`range`]), downsampling into
//! buckets ([`buckets`]), merging what several nodes hold ([`merge`]) and asking peers when
//! this node lacks the topic or the range ([`remote`]).

pub mod buckets;
pub mod merge;
pub mod range;
pub mod remote;

pub use buckets::{bucketize, Bucket, Buckets};
pub use merge::merge;
pub use range::{HistoryQuery, RangeError, TimeRange};

use crate::config::RetentionPolicy;

/// Whether this node alone cannot answer: it does not subscribe the topic (so holds none of
/// it, or only a stale part), or the asked range starts before the topic's retention horizon.
pub fn needs_peers(
    q: &HistoryQuery,
    topics: &[String],
    retention: &RetentionPolicy,
    now_ms: u64,
) -> bool {
    !topics.contains(&q.topic)
        || (q.since_given && q.range.since_ms < retention.horizon(&q.topic, now_ms))
}
