//! The arguments of a history query (`--since`, `--until`, `--every`, `--source`) and the
//! limits every node enforces on them.

use std::time::{Duration, UNIX_EPOCH};

/// Longest range one query may cover.
pub const MAX_RANGE: Duration = Duration::from_secs(400 * 24 * 3600);
/// Most buckets one downsampled query may ask for (per source).
pub const MAX_BUCKETS: u64 = 10_000;
/// Smallest bucket.
pub const MIN_EVERY: Duration = Duration::from_secs(1);

/// A query the caller got wrong; each message says how to write it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RangeError {
    #[error("{arg} {value:?} is not a time; use e.g. 10m, 24h, 7days (back from now), an RFC 3339 time (2026-01-02T03:04:05Z) or unix ms")]
    BadTime { arg: &'static str, value: String },
    #[error("every {value:?} is not a duration (e.g. 1m, 5m, 1h)")]
    BadEvery { value: String },
    #[error("the range is empty: since ({since_ms} ms) is not before until ({until_ms} ms)")]
    Empty { since_ms: u64, until_ms: u64 },
    #[error("the range spans {days} days; at most {max_days} days per query")]
    TooLong { days: u64, max_days: u64 },
    #[error("every {every:?} is shorter than the smallest bucket, 1s")]
    EveryTooSmall { every: String },
    #[error("--every {every} over this range makes {buckets} buckets; at most {max} per query: widen --every or narrow the range")]
    TooManyBuckets {
        every: String,
        buckets: u64,
        max: u64,
    },
    #[error("--every needs --since: a downsampled query covers a bounded range")]
    EveryWithoutSince,
}

/// A time given as a duration before `now_ms` (`24h`), an RFC 3339 time, unix milliseconds
/// (all digits) or `now`.
pub fn parse_time(arg: &'static str, value: &str, now_ms: u64) -> Result<u64, RangeError> {
    let v = value.trim();
    if v == "now" {
        return Ok(now_ms);
    }
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(ms) = v.parse() {
            return Ok(ms);
        }
    }
    if let Ok(d) = humantime::parse_duration(v) {
        return Ok(now_ms.saturating_sub(d.as_millis() as u64));
    }
    humantime::parse_rfc3339_weak(v)
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .ok_or_else(|| RangeError::BadTime {
            arg,
            value: value.to_string(),
        })
}

/// A half-open range of reading times, `since_ms <= time < until_ms` (unix ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    /// First time included.
    pub since_ms: u64,
    /// First time excluded (`u64::MAX`: no end).
    pub until_ms: u64,
}

impl TimeRange {
    /// Whether a reading time falls in the range.
    pub fn contains(&self, t: u64) -> bool {
        self.since_ms <= t && t < self.until_ms
    }
}

/// A checked history query.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryQuery {
    /// Canonical topic.
    pub topic: String,
    /// Reading times asked for.
    pub range: TimeRange,
    /// Bucket width in ms, for a downsampled answer.
    pub every_ms: Option<u64>,
    /// Only this source.
    pub source: Option<String>,
    /// Whether `since` was given (an open start never asks peers for older readings).
    pub since_given: bool,
}

impl HistoryQuery {
    /// Checks the raw arguments against the limits, at `now_ms`.
    pub fn parse(
        topic: &str,
        since: Option<&str>,
        until: Option<&str>,
        every: Option<&str>,
        source: Option<&str>,
        now_ms: u64,
    ) -> Result<HistoryQuery, RangeError> {
        let since_ms = since.map(|s| parse_time("since", s, now_ms)).transpose()?;
        let until_ms = until.map(|s| parse_time("until", s, now_ms)).transpose()?;
        let every_ms = every
            .map(|e| {
                let d = humantime::parse_duration(e.trim()).map_err(|_| RangeError::BadEvery {
                    value: e.to_string(),
                })?;
                if d < MIN_EVERY {
                    return Err(RangeError::EveryTooSmall {
                        every: e.to_string(),
                    });
                }
                Ok(d.as_millis() as u64)
            })
            .transpose()?;
        let range = TimeRange {
            since_ms: since_ms.unwrap_or(0),
            // Downsampled buckets end now; raw readings run to the newest, whatever its stamp.
            until_ms: until_ms.unwrap_or(if every_ms.is_some() { now_ms } else { u64::MAX }),
        };
        if range.since_ms >= range.until_ms {
            return Err(RangeError::Empty {
                since_ms: range.since_ms,
                until_ms: range.until_ms,
            });
        }
        if since_ms.is_some() {
            let span = match until_ms {
                Some(_) => range.until_ms - range.since_ms,
                None => now_ms.saturating_sub(range.since_ms),
            };
            if span > MAX_RANGE.as_millis() as u64 {
                return Err(RangeError::TooLong {
                    days: span / 86_400_000,
                    max_days: MAX_RANGE.as_secs() / 86_400,
                });
            }
        }
        if let Some(every_ms) = every_ms {
            if since_ms.is_none() {
                return Err(RangeError::EveryWithoutSince);
            }
            let buckets = (range.until_ms - range.since_ms).div_ceil(every_ms) + 1;
            if buckets > MAX_BUCKETS {
                return Err(RangeError::TooManyBuckets {
                    every: every.unwrap_or_default().to_string(),
                    buckets,
                    max: MAX_BUCKETS,
                });
            }
        }
        Ok(HistoryQuery {
            topic: topic.to_string(),
            range,
            every_ms,
            source: source.map(str::to_string),
            since_given: since_ms.is_some(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn q(
        since: Option<&str>,
        until: Option<&str>,
        every: Option<&str>,
    ) -> Result<HistoryQuery, RangeError> {
        HistoryQuery::parse("temperature", since, until, every, None, NOW)
    }

    #[test]
    fn durations_count_back_from_now_and_rfc3339_is_absolute() {
        let h = q(Some("24h"), Some("1h"), None).unwrap();
        assert_eq!(h.range.since_ms, NOW - 24 * 3_600_000);
        assert_eq!(h.range.until_ms, NOW - 3_600_000);
        let h = q(
            Some("2026-01-02T03:04:05Z"),
            Some("2026-01-02T04:04:05Z"),
            None,
        )
        .unwrap();
        assert_eq!(h.range.since_ms, 1_767_323_045_000);
        assert_eq!(h.range.until_ms, 1_767_323_045_000 + 3_600_000);
        assert_eq!(parse_time("until", "now", NOW), Ok(NOW));
        assert_eq!(
            parse_time("until", "1767323045000", NOW),
            Ok(1_767_323_045_000)
        );
    }

    #[test]
    fn no_arguments_is_the_whole_history() {
        let h = q(None, None, None).unwrap();
        assert_eq!(
            h.range,
            TimeRange {
                since_ms: 0,
                until_ms: u64::MAX
            }
        );
        assert!(!h.since_given);
    }

    #[test]
    fn bad_ranges_are_refused_with_a_reason() {
        assert!(matches!(
            q(Some("yesterday"), None, None),
            Err(RangeError::BadTime { arg: "since", .. })
        ));
        assert!(matches!(
            q(Some("1h"), Some("2h"), None),
            Err(RangeError::Empty { .. })
        ));
        assert!(matches!(
            q(Some("1000days"), None, None),
            Err(RangeError::TooLong { .. })
        ));
        assert!(matches!(
            q(Some("1h"), None, Some("fast")),
            Err(RangeError::BadEvery { .. })
        ));
        assert!(matches!(
            q(Some("1h"), None, Some("10ms")),
            Err(RangeError::EveryTooSmall { .. })
        ));
        assert!(matches!(
            q(Some("30days"), None, Some("1s")),
            Err(RangeError::TooManyBuckets { .. })
        ));
        assert!(matches!(
            q(None, None, Some("5m")),
            Err(RangeError::EveryWithoutSince)
        ));
        let msg = q(Some("30days"), None, Some("1s")).unwrap_err().to_string();
        assert!(msg.contains("at most 10000"), "{msg}");
    }

    #[test]
    fn a_downsampled_day_fits() {
        let h = q(Some("24h"), None, Some("5m")).unwrap();
        assert_eq!(h.every_ms, Some(300_000));
        assert_eq!(h.range.until_ms, NOW);
    }
}
