//! Replays recorded readings from a CSV file, one row per `sample` call, in file order.
//!
//! Format: a header row, then one reading per row. Columns are found by header name (any
//! case, any order, other columns ignored):
//! - `time` (or `timestamp`): unix milliseconds, or an RFC 3339 date-time such as
//!   `2026-01-01T12:00:00Z` / `2026-01-01 13:00:00+01:00` (no offset means UTC);
//!   rows must not go back in time;
//! - `value`: a number in the kind's unit (°C, %RH, PM2.5 µg/m³) and range; an empty value is
//!   a dropout (that call yields no reading).
//!
//! Lines starting with `#` and blank lines are skipped; fields may be quoted. A header with
//! `;` and no `,` (a spreadsheet in a decimal-comma locale) switches to `;` separators and
//! accepts `21,5` for 21.5. The whole file is checked when opened, so a malformed one fails
//! at start with its line number, not hours into a replay.

use std::path::Path;

use crate::error::SensorError;
use crate::kind::SensorKind;
use crate::source::{Sample, Source};
use crate::timestamp::parse_time;

/// A CSV replay.
#[derive(Debug)]
pub struct CsvReplay {
    kind: SensorKind,
    name: String,
    /// (time, value); `None` is a recorded dropout.
    rows: Vec<(u64, Option<f64>)>,
    next: usize,
}

/// Column separator: `;` when the header uses it and no commas, else `,` (tab likewise).
fn sniff_delimiter(text: &str) -> u8 {
    let header = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or("");
    if header.contains(',') {
        b','
    } else if header.contains(';') {
        b';'
    } else if header.contains('\t') {
        b'\t'
    } else {
        b','
    }
}

impl CsvReplay {
    /// Reads and checks the whole file.
    pub fn open(kind: SensorKind, path: &Path) -> Result<CsvReplay, SensorError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| SensorError::Read {
            path: shown.clone(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let line = 1 + e.as_bytes()[..e.utf8_error().valid_up_to()]
                .iter()
                .filter(|b| **b == b'\n')
                .count() as u64;
            SensorError::Csv {
                path: shown.clone(),
                line,
                detail: "is not UTF-8 text; save the file as UTF-8".into(),
            }
        })?;
        Self::parse(kind, &shown, &text)
    }

    /// Parses CSV text; `name` is the file name used in errors.
    pub fn parse(kind: SensorKind, name: &str, text: &str) -> Result<CsvReplay, SensorError> {
        let err = |line: u64, detail: String| SensorError::Csv {
            path: name.to_string(),
            line,
            detail,
        };
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let delimiter = sniff_delimiter(text);
        let decimal_comma = delimiter == b';';
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .trim(csv::Trim::All)
            .comment(Some(b'#'))
            .delimiter(delimiter)
            .from_reader(text.as_bytes());
        let mut records = reader.records().filter(|r| match r {
            // A line of only spaces is a record of one empty field: skip it like a blank one.
            Ok(rec) => !(rec.len() == 1 && rec[0].is_empty()),
            Err(_) => true,
        });
        // The csv crate's line count skips blank lines, and a record's position is where the
        // previous one ended: step over blank and comment lines from there, counting them.
        let line_at = |pos: Option<&csv::Position>| {
            let bytes = text.as_bytes();
            let mut at = pos.map_or(0, |p| p.byte() as usize).min(bytes.len());
            loop {
                let end = bytes[at..]
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(bytes.len(), |i| at + i + 1);
                let line = &bytes[at..end];
                let skipped = line.first() == Some(&b'#') || line.trim_ascii().is_empty();
                if !skipped || end == bytes.len() {
                    break;
                }
                at = end;
            }
            1 + bytes[..at].iter().filter(|b| **b == b'\n').count() as u64
        };
        let csv_err = |e: csv::Error| {
            let line = line_at(e.position());
            err(line, format!("unreadable CSV ({e})"))
        };

        let header = match records.next() {
            None => {
                return Err(err(
                    1,
                    "the file is empty; it needs a header such as time,value".into(),
                ))
            }
            Some(r) => r.map_err(csv_err)?,
        };
        let hline = line_at(header.position());
        let cols: Vec<String> = header.iter().map(|c| c.to_ascii_lowercase()).collect();
        let find = |names: &[&str]| cols.iter().position(|c| names.contains(&c.as_str()));
        let shown: Vec<&str> = header.iter().collect();
        let tcol = find(&["time", "timestamp"]).ok_or_else(|| {
            err(
                hline,
                format!(
                    "no time or timestamp column in the header {:?}; name the time column time",
                    shown.join(",")
                ),
            )
        })?;
        let vcol = find(&["value"]).ok_or_else(|| {
            err(
                hline,
                format!(
                    "no value column in the header {:?}; name the reading column value",
                    shown.join(",")
                ),
            )
        })?;

        let (min, max) = kind.range();
        let mut rows = Vec::new();
        let mut last: Option<u64> = None;
        for record in records {
            let record = record.map_err(csv_err)?;
            let line = line_at(record.position());
            if record.len() != cols.len() {
                let mut detail =
                    format!("{} fields, but the header has {}", record.len(), cols.len());
                if delimiter == b',' && record.len() == cols.len() + 1 {
                    detail.push_str("; a decimal comma? write 21.5, or quote it as \"21,5\"");
                }
                return Err(err(line, detail));
            }
            let t = parse_time(&record[tcol]).map_err(|why| err(line, why))?;
            if let Some(prev) = last.filter(|p| t < *p) {
                return Err(err(
                    line,
                    format!(
                        "time {:?} is earlier than the row before ({prev} ms); sort the file by time",
                        &record[tcol]
                    ),
                ));
            }
            last = Some(t);
            let raw = &record[vcol];
            let value = if raw.is_empty() {
                None
            } else {
                let normalized = if decimal_comma {
                    raw.replace(',', ".")
                } else {
                    raw.to_string()
                };
                let v: f64 = normalized
                    .parse()
                    .map_err(|_| err(line, format!("value {raw:?} is not a number")))?;
                if !v.is_finite() {
                    return Err(err(line, format!("value {raw:?} is not a finite number")));
                }
                if v < min || v > max {
                    return Err(err(
                        line,
                        format!(
                            "value {raw} is outside {kind}'s range {min} to {max} {}",
                            kind.unit()
                        ),
                    ));
                }
                Some(v)
            };
            rows.push((t, value));
        }
        if rows.is_empty() {
            return Err(err(
                hline + 1,
                "no data rows after the header; add rows such as 1767225600000,21.5".into(),
            ));
        }
        Ok(CsvReplay {
            kind,
            name: name.to_string(),
            rows,
            next: 0,
        })
    }

    /// Rows not yet replayed.
    pub fn remaining(&self) -> usize {
        self.rows.len() - self.next
    }
}

impl Source for CsvReplay {
    fn kind(&self) -> SensorKind {
        self.kind
    }

    fn sample(&mut self, _now_ms: u64) -> Result<Option<Sample>, SensorError> {
        let &(time_ms, value) = self.rows.get(self.next).ok_or(SensorError::Exhausted)?;
        self.next += 1;
        Ok(value.map(|v| Sample::of(self.kind, time_ms, v)))
    }

    fn describe(&self) -> String {
        format!("replay of {} ({} rows)", self.name, self.rows.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_767_225_600_000;

    fn replay(kind: SensorKind, text: &str) -> Vec<Option<(u64, f64, Option<u16>)>> {
        let mut r = CsvReplay::parse(kind, "r.csv", text).unwrap();
        let mut out = Vec::new();
        loop {
            match r.sample(0) {
                Ok(s) => out.push(s.map(|s| (s.time_ms, s.value, s.aqi))),
                Err(SensorError::Exhausted) => return out,
                Err(e) => panic!("{e}"),
            }
        }
    }

    fn err_of(text: &str) -> String {
        match CsvReplay::parse(SensorKind::Humidity, "readings.csv", text) {
            Ok(_) => panic!("{text:?} should fail"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn replays_rows_in_order_with_their_own_times() {
        let text = "# exported from the lab logger\n\
                    Timestamp,Station,Value\n\
                    1767225600000,a,20.5\n\
                    \n\
                    2026-01-01T00:01:00Z,a,21\n\
                    2026-01-01 01:02:00+01:00,\"a, b\",\n\
                    \"2026-01-01T00:03:00Z\",a,-3.25\n";
        assert_eq!(
            replay(SensorKind::Temperature, text),
            [
                Some((T0, 20.5, None)),
                Some((T0 + 60_000, 21.0, None)),
                None,
                Some((T0 + 180_000, -3.25, None)),
            ]
        );
        let r = CsvReplay::parse(SensorKind::Temperature, "r.csv", text).unwrap();
        assert_eq!(r.remaining(), 4);
        assert_eq!(r.describe(), "replay of r.csv (4 rows)");
    }

    #[test]
    fn air_quality_rows_carry_their_aqi() {
        let rows = replay(
            SensorKind::AirQuality,
            "time,value\n1767225600000,9.0\n1767225601000,35.5\n",
        );
        assert_eq!(
            rows,
            [
                Some((T0, 9.0, Some(50))),
                Some((T0 + 1000, 35.5, Some(101)))
            ]
        );
    }

    #[test]
    fn decimal_comma_spreadsheets() {
        let rows = replay(
            SensorKind::Humidity,
            "time;value\n2026-01-01T00:00:00Z;45,5\n",
        );
        assert_eq!(rows, [Some((T0, 45.5, None))]);
        assert!(err_of("time,value\n1767225600000,45,5\n").contains("a decimal comma?"));
    }

    #[test]
    fn errors_name_the_line_and_the_problem() {
        assert_eq!(
            err_of("time,value\n1767225600000,2\n1767225601000,abc\n"),
            "readings.csv line 3: value \"abc\" is not a number"
        );
        for (text, want) in [
            ("when,value\n1,2\n", "line 1: no time or timestamp column"),
            ("time,reading\n1,2\n", "line 1: no value column"),
            (
                "time,value\n1767225600000,2\n\n\n1767225601000,3,4\n",
                "line 5: 3 fields, but the header has 2",
            ),
            (
                "time,value\nyesterday,1\n",
                "line 2: time \"yesterday\" is neither",
            ),
            (
                "time,value\n1767225600,1\n",
                "line 2: time 1767225600 is before the year 2000",
            ),
            (
                "time,value\n1767225600001,1\n1767225600000,1\n",
                "line 3: time \"1767225600000\" is earlier",
            ),
            (
                "time,value\n1767225600000,101\n",
                "line 2: value 101 is outside humidity's range 0 to 100 %RH",
            ),
            (
                "time,value\n1767225600000,NaN\n",
                "line 2: value \"NaN\" is not a finite number",
            ),
            (
                "time,value\n1767225600000,\"1\n1767225601000,2\n",
                "line 2: value \"1\\n1767225601000,2\" is not a number",
            ),
            ("", "line 1: the file is empty"),
            ("# only a comment\n", "line 1: the file is empty"),
            ("time,value\n", "line 2: no data rows"),
        ] {
            let e = err_of(text);
            assert!(e.starts_with("readings.csv "), "{e}");
            assert!(e.contains(want), "{text:?}: got {e:?}, want {want:?}");
        }
    }

    #[test]
    fn files_are_read_and_non_utf8_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.csv");
        std::fs::write(&p, b"time,value\n1767225600000,1\n1767225601000,\xff\n").unwrap();
        let e = CsvReplay::open(SensorKind::Temperature, &p)
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with("r.csv line 3: is not UTF-8 text; save the file as UTF-8"),
            "{e}"
        );
        std::fs::write(&p, "\u{feff}time,value\n1767225600000,1\n").unwrap();
        let mut r = CsvReplay::open(SensorKind::Temperature, &p).unwrap();
        assert_eq!(
            r.sample(0).unwrap().map(|s| s.value),
            Some(1.0),
            "BOM skipped"
        );
    }
}
