//! Timestamps as replay files write them: unix milliseconds or RFC 3339 date-times, parsed
//! into unix milliseconds with a reason when they are not.

/// Unix ms of 2000-01-01T00:00:00Z. Smaller integers are almost surely unix *seconds* (or
/// junk), and replaying them as 1970 dates would bury the readings at the start of history.
pub const YEAR_2000_MS: u64 = 946_684_800_000;

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn digits(s: &str, what: &str) -> Result<i64, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{what} {s:?} is not a number"));
    }
    s.parse().map_err(|_| format!("{what} {s:?} is too large"))
}

/// Parses an RFC 3339 date-time (`2026-01-01T12:00:00Z`, `2026-01-01 13:00:00.250+01:00`)
/// into unix ms. A time without an offset is taken as UTC.
pub fn parse_rfc3339(s: &str) -> Result<u64, String> {
    if !s.is_ascii() {
        return Err("has characters a date-time never has".into());
    }
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return Err("expected YYYY-MM-DDTHH:MM:SS".into());
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return Err("expected T between the date and the time".into());
    }
    let (y, mo, d) = (
        digits(&s[0..4], "year")?,
        digits(&s[5..7], "month")?,
        digits(&s[8..10], "day")?,
    );
    let (h, mi, sec) = (
        digits(&s[11..13], "hour")?,
        digits(&s[14..16], "minute")?,
        digits(&s[17..19], "second")?,
    );
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) {
        return Err(format!("{y:04}-{mo:02}-{d:02} is not a date"));
    }
    // 60 is a leap second; unix time has none, so it folds onto the next second.
    if h > 23 || mi > 59 || sec > 60 {
        return Err(format!("{h:02}:{mi:02}:{sec:02} is not a time of day"));
    }
    let mut rest = &s[19..];
    let mut millis = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return Err("expected digits after the decimal point".into());
        }
        // Milliseconds: truncate finer digits, pad coarser ones.
        let ms: String = frac[..n].chars().chain("00".chars()).take(3).collect();
        millis = digits(&ms, "fraction")?;
        rest = &frac[n..];
    }
    let offset_min = match rest {
        "" | "Z" | "z" => 0,
        _ => {
            let ob = rest.as_bytes();
            if ob.len() != 6 || !matches!(ob[0], b'+' | b'-') || ob[3] != b':' {
                return Err(format!(
                    "offset {rest:?} should be Z or ±HH:MM, as in +01:00"
                ));
            }
            let (oh, om) = (
                digits(&rest[1..3], "offset")?,
                digits(&rest[4..6], "offset")?,
            );
            if oh > 23 || om > 59 {
                return Err(format!("offset {rest:?} is out of range"));
            }
            let m = oh * 60 + om;
            if ob[0] == b'-' {
                -m
            } else {
                m
            }
        }
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60;
    let ms = secs * 1000 + millis;
    u64::try_from(ms).map_err(|_| "is before 1970".to_string())
}

/// Parses a replay file's time: unix milliseconds (from 2000 on) or RFC 3339.
pub fn parse_time(s: &str) -> Result<u64, String> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let ms: u64 = s
            .parse()
            .map_err(|_| format!("time {s:?} is too large for unix milliseconds"))?;
        if ms < YEAR_2000_MS {
            return Err(format!(
                "time {s} is before the year 2000 as unix milliseconds; if it is unix seconds, multiply by 1000"
            ));
        }
        return Ok(ms);
    }
    parse_rfc3339(s).map_err(|why| {
        format!("time {s:?} is neither unix milliseconds nor an RFC 3339 date-time ({why})")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_forms() {
        let base = 1_767_225_600_000; // 2026-01-01T00:00:00Z
        for (s, ms) in [
            ("2026-01-01T00:00:00Z", base),
            ("2026-01-01t00:00:00z", base),
            ("2026-01-01 00:00:00", base),
            ("2026-01-01T01:00:00+01:00", base),
            ("2025-12-31T19:30:00-04:30", base),
            ("2026-01-01T00:00:00.5Z", base + 500),
            ("2026-01-01T00:00:00.123456Z", base + 123),
            ("2024-02-29T12:00:00Z", 1_709_208_000_000),
            ("1970-01-01T00:00:00Z", 0),
            ("2016-12-31T23:59:60Z", 1_483_228_800_000),
        ] {
            assert_eq!(parse_rfc3339(s), Ok(ms), "{s}");
        }
        for bad in [
            "2026-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:00:00+1",
            "2026-01-01T00:00:00.Z",
            "2026/01/01 00:00:00",
            "2026-01-01",
            "1969-12-31T23:59:59Z",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unix_ms_and_hints() {
        assert_eq!(parse_time("1767225600000"), Ok(1_767_225_600_000));
        let e = parse_time("1767225600").unwrap_err();
        assert!(e.contains("multiply by 1000"), "{e}");
        let e = parse_time("yesterday").unwrap_err();
        assert!(e.starts_with("time \"yesterday\" is neither"), "{e}");
        assert!(parse_time("99999999999999999999999").is_err());
    }
}
