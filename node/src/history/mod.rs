//! History by time range: the query's arguments and limits ([`range`]), downsampling into
//! buckets ([`buckets`]), reading the store in pages ([`page`]), merging what several nodes hold ([`merge`]) and asking peers when
//! this node lacks the topic or the range ([`remote`]).

pub mod buckets;
pub mod merge;
pub mod page;
pub mod range;
pub mod remote;

pub use buckets::{bucketize, Bucket, Buckets};
pub use merge::merge;
pub use page::{read_page, Cursor, Page};
pub use range::{HistoryQuery, RangeError, TimeRange};

use crate::config::RetentionPolicy;

/// The part of the query this node cannot answer alone, to ask its peers for: all of it when
/// it does not subscribe the topic (it holds none, or a stale part), else the part before the
/// topic's retention horizon (none when `since` is open: "everything" means what is here).
pub fn peer_range(
    q: &HistoryQuery,
    topics: &[String],
    retention: &RetentionPolicy,
    now_ms: u64,
) -> Option<TimeRange> {
    if !topics.contains(&q.topic) {
        return Some(q.range);
    }
    let horizon = retention.horizon(&q.topic, now_ms);
    (q.since_given && q.range.since_ms < horizon).then(|| TimeRange {
        since_ms: q.range.since_ms,
        until_ms: q.range.until_ms.min(horizon),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_asked_for_what_this_node_lacks() {
        let now = 1_800_000_000_000;
        let topics = vec!["temperature".to_string()];
        let mut retention = RetentionPolicy::default();
        retention.default.max_age = std::time::Duration::from_secs(3600);
        let q = |topic: &str, since: Option<&str>| {
            HistoryQuery::parse(topic, since, None, None, None, now).unwrap()
        };
        // Not subscribed: everything.
        let h = q("humidity", Some("2h"));
        assert_eq!(peer_range(&h, &topics, &retention, now), Some(h.range));
        // Within retention, or an open start: nothing.
        assert_eq!(
            peer_range(&q("temperature", Some("30m")), &topics, &retention, now),
            None
        );
        assert_eq!(
            peer_range(&q("temperature", None), &topics, &retention, now),
            None
        );
        // Before the horizon: up to it.
        let r = peer_range(&q("temperature", Some("3h")), &topics, &retention, now).unwrap();
        assert_eq!(
            (r.since_ms, r.until_ms),
            (now - 3 * 3_600_000, now - 3_600_000)
        );
    }
}
