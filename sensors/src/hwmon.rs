//! Real temperature from Linux: `/sys/class/thermal/thermal_zone*/temp` or
//! `/sys/class/hwmon/hwmon*/temp*_input`, both in millidegrees Celsius.

use std::path::{Path, PathBuf};

use crate::kind::SensorKind;
use crate::source::{Sample, SensorError, Source};

/// A hardware temperature sensor.
pub struct Hwmon {
    path: PathBuf,
}

fn candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let globs: [(&str, &str, &str); 2] = [
        ("/sys/class/thermal", "thermal_zone", "temp"),
        ("/sys/class/hwmon", "hwmon", ""),
    ];
    for (dir, prefix, file) in globs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut dirs: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
            .map(|e| e.path())
            .collect();
        dirs.sort();
        for d in dirs {
            if !file.is_empty() {
                out.push(d.join(file));
            } else if let Ok(files) = std::fs::read_dir(&d) {
                let mut fs: Vec<PathBuf> = files
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| {
                        let n = p
                            .file_name()
                            .map(|n| n.to_string_lossy().to_string())
                            .unwrap_or_default();
                        n.starts_with("temp") && n.ends_with("_input")
                    })
                    .collect();
                fs.sort();
                out.extend(fs);
            }
        }
    }
    out
}

fn read_millideg(path: &Path) -> Result<f64, SensorError> {
    let text = std::fs::read_to_string(path).map_err(|e| SensorError::Read {
        path: path.display().to_string(),
        detail: e.to_string(),
    })?;
    let milli: f64 = text.trim().parse().map_err(|_| SensorError::Read {
        path: path.display().to_string(),
        detail: format!("{:?} is not a number of millidegrees", text.trim()),
    })?;
    Ok(milli / 1000.0)
}

impl Hwmon {
    /// Opens `path`, or the first readable sensor the host has.
    pub fn open(path: Option<PathBuf>) -> Result<Hwmon, SensorError> {
        if let Some(p) = path {
            read_millideg(&p)?;
            return Ok(Hwmon { path: p });
        }
        candidates()
            .into_iter()
            .find(|p| read_millideg(p).is_ok())
            .map(|path| Hwmon { path })
            .ok_or(SensorError::NoHardware)
    }
}

impl Source for Hwmon {
    fn kind(&self) -> SensorKind {
        SensorKind::Temperature
    }
    fn sample(&mut self, now_ms: u64) -> Result<Option<Sample>, SensorError> {
        let value = read_millideg(&self.path)?;
        Ok(Some(Sample {
            time_ms: now_ms,
            value,
            aqi: None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_millidegrees_and_names_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("temp");
        std::fs::write(&p, "42500\n").unwrap();
        let mut h = Hwmon::open(Some(p.clone())).unwrap();
        assert_eq!(h.sample(5).unwrap().unwrap().value, 42.5);
        std::fs::write(&p, "hot").unwrap();
        let e = h.sample(6).unwrap_err().to_string();
        assert!(e.contains("millidegrees"), "{e}");
    }
}
