//! Replays recorded data from a CSV file with a header naming a `time` (or `timestamp`)
//! column, unix milliseconds or RFC 3339, and a `value` column. The whole file is checked at
//! open, so a malformed one fails at start with its line number.

use std::path::Path;

use crate::aqi::pm25_to_aqi;
use crate::kind::SensorKind;
use crate::source::{Sample, SensorError, Source};

/// A CSV replay.
pub struct CsvReplay {
    kind: SensorKind,
    rows: std::vec::IntoIter<(u64, f64)>,
}

fn parse_time(s: &str) -> Option<u64> {
    if let Ok(ms) = s.parse::<u64>() {
        return Some(ms);
    }
    humantime::parse_rfc3339_weak(s.trim_end_matches('Z'))
        .or_else(|_| humantime::parse_rfc3339(s))
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
}

impl CsvReplay {
    /// Reads and checks the whole file.
    pub fn open(kind: SensorKind, path: &Path) -> Result<CsvReplay, SensorError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| SensorError::Read {
            path: shown.clone(),
            detail: e.to_string(),
        })?;
        Self::parse(kind, &shown, &text)
    }

    /// Parses CSV text (`name` is used in errors).
    pub fn parse(kind: SensorKind, name: &str, text: &str) -> Result<CsvReplay, SensorError> {
        let err = |line: usize, detail: String| SensorError::Csv {
            path: name.to_string(),
            line,
            detail,
        };
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim()))
            .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
        let (hline, header) = lines.next().ok_or_else(|| {
            err(
                1,
                "the file is empty; expected a header such as time,value".into(),
            )
        })?;
        let cols: Vec<String> = header
            .split(',')
            .map(|c| c.trim().to_ascii_lowercase())
            .collect();
        let tcol = cols
            .iter()
            .position(|c| c == "time" || c == "timestamp")
            .ok_or_else(|| {
                err(
                    hline,
                    format!("no time or timestamp column in header {header:?}"),
                )
            })?;
        let vcol = cols
            .iter()
            .position(|c| c == "value")
            .ok_or_else(|| err(hline, format!("no value column in header {header:?}")))?;
        let mut rows = Vec::new();
        let mut last = 0;
        for (n, line) in lines {
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            if fields.len() != cols.len() {
                return Err(err(
                    n,
                    format!("{} fields, the header has {}", fields.len(), cols.len()),
                ));
            }
            let t = parse_time(fields[tcol]).ok_or_else(|| {
                err(
                    n,
                    format!(
                        "time {:?} is neither unix milliseconds nor RFC 3339",
                        fields[tcol]
                    ),
                )
            })?;
            let v: f64 = fields[vcol]
                .parse()
                .map_err(|_| err(n, format!("value {:?} is not a number", fields[vcol])))?;
            if !v.is_finite() {
                return Err(err(n, format!("value {:?} is not finite", fields[vcol])));
            }
            if t < last {
                return Err(err(n, "time goes backwards; sort the file by time".into()));
            }
            last = t;
            rows.push((t, v));
        }
        if rows.is_empty() {
            return Err(err(hline + 1, "no data rows after the header".into()));
        }
        Ok(CsvReplay {
            kind,
            rows: rows.into_iter(),
        })
    }
}

impl Source for CsvReplay {
    fn kind(&self) -> SensorKind {
        self.kind
    }
    fn sample(&mut self, _now_ms: u64) -> Result<Option<Sample>, SensorError> {
        let (time_ms, value) = self.rows.next().ok_or(SensorError::Exhausted)?;
        let aqi = (self.kind == SensorKind::AirQuality)
            .then(|| pm25_to_aqi(value))
            .flatten();
        Ok(Some(Sample {
            time_ms,
            value,
            aqi,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_of(text: &str) -> String {
        match CsvReplay::parse(SensorKind::Temperature, "r.csv", text) {
            Ok(_) => panic!("{text:?} should fail"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn replays_rows_in_order() {
        let mut r = CsvReplay::parse(
            SensorKind::Temperature,
            "r.csv",
            "time,value\n1000,20.5\n2026-01-01T00:00:00Z,21\n",
        )
        .unwrap();
        assert_eq!(r.sample(0).unwrap().unwrap().value, 20.5);
        let s = r.sample(0).unwrap().unwrap();
        assert_eq!((s.time_ms, s.value), (1_767_225_600_000, 21.0));
        assert!(matches!(r.sample(0), Err(SensorError::Exhausted)));
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(
            err_of("time,value\n1,2\n2,abc\n"),
            "r.csv line 3: value \"abc\" is not a number"
        );
        assert!(err_of("when,value\n1,2\n").contains("line 1: no time"));
        assert!(err_of("time,value\n1,2\n\n5,3,4\n").starts_with("r.csv line 4: 3 fields"));
        assert!(err_of("time,value\nyesterday,1\n").contains("line 2: time \"yesterday\""));
        assert!(err_of("time,value\n5,1\n4,1\n").contains("line 3: time goes backwards"));
        assert!(err_of("").contains("line 1"));
        assert!(err_of("time,value\n").contains("no data rows"));
    }
}
