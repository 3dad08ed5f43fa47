//! Real sensors through Linux sysfs. Temperature: IIO `in_temp_input`, hwmon `temp*_input`
//! and `/sys/class/thermal/thermal_zone*/temp` (all millidegrees Celsius). Humidity: IIO
//! `in_humidityrelative_input` and hwmon `humidity*_input` (milli-%RH). PM2.5: IIO
//! `in_massconcentration_pm2p5_input` (µg/m³, as the pms7003 and sps30 drivers report it).

use std::path::{Path, PathBuf};

use crate::error::SensorError;
use crate::kind::SensorKind;
use crate::source::{Sample, Source};

/// Failed reads in a row that count as dropouts before the source gives up: sysfs reads fail
/// now and then (a busy I²C bus answers EAGAIN), a dead sensor fails every time.
pub const MAX_FAILURES: u32 = 3;

/// A sysfs sensor file.
#[derive(Debug)]
pub struct Hwmon {
    kind: SensorKind,
    path: PathBuf,
    label: String,
    scale: f64,
    failures: u32,
}

/// One file that could be a sensor of some kind.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The file to read.
    pub path: PathBuf,
    /// A human name, from the device's `name`/`type` and the channel's `_label`.
    pub label: String,
    /// Factor from the file's number to the kind's unit.
    pub scale: f64,
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Subdirectories of `dir` whose names start with `prefix`, in natural order (hwmon2 before
/// hwmon10).
fn devices(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .collect();
    found.sort_by_key(|p| natural_key(p));
    found
}

/// Files in `dir` named `prefix…suffix`, in natural order.
fn channels(dir: &Path, prefix: &str, suffix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            let n = e.file_name().to_string_lossy().to_string();
            n.starts_with(prefix) && n.ends_with(suffix)
        })
        .map(|e| e.path())
        .collect();
    found.sort_by_key(|p| natural_key(p));
    found
}

fn natural_key(p: &Path) -> (usize, String) {
    let n = p
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    (n.len(), n)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default()
}

/// hwmon channel label: `coretemp Package id 0` from `name` and `temp1_label`.
fn hwmon_label(dev: &Path, input: &Path) -> String {
    let name = read_trimmed(&dev.join("name")).unwrap_or_else(|| file_name(dev));
    let channel = file_name(input).trim_end_matches("_input").to_string();
    let label = read_trimmed(&dev.join(format!("{channel}_label"))).unwrap_or(channel);
    format!("{name} {label}")
}

/// Every file under `root` (normally `/sys`) that may hold a reading of `kind`, best first:
/// ambient sensors (IIO, and hwmon chips that also measure humidity) before CPU and board
/// temperatures.
pub fn candidates(kind: SensorKind, root: &Path) -> Vec<Candidate> {
    let iio = devices(&root.join("bus/iio/devices"), "iio:device");
    let hwmon = devices(&root.join("class/hwmon"), "hwmon");
    let thermal = devices(&root.join("class/thermal"), "thermal_zone");
    let mut out = Vec::new();
    let iio_file = |out: &mut Vec<Candidate>, file: &str, scale: f64| {
        for dev in &iio {
            let path = dev.join(file);
            if path.exists() {
                let name = read_trimmed(&dev.join("name")).unwrap_or_default();
                out.push(Candidate {
                    label: format!("{name} ({})", file_name(dev)).trim().to_string(),
                    path,
                    scale,
                });
            }
        }
    };
    let hwmon_files = |out: &mut Vec<Candidate>, dev: &Path, prefix: &str| {
        for path in channels(dev, prefix, "_input") {
            out.push(Candidate {
                label: hwmon_label(dev, &path),
                path,
                scale: 1e-3,
            });
        }
    };
    let ambient = |dev: &PathBuf| !channels(dev, "humidity", "_input").is_empty();
    match kind {
        SensorKind::Temperature => {
            iio_file(&mut out, "in_temp_input", 1e-3);
            for dev in hwmon.iter().filter(|d| ambient(d)) {
                hwmon_files(&mut out, dev, "temp");
            }
            for zone in &thermal {
                let kind = read_trimmed(&zone.join("type")).unwrap_or_default();
                out.push(Candidate {
                    path: zone.join("temp"),
                    label: format!("{kind} ({})", file_name(zone)).trim().to_string(),
                    scale: 1e-3,
                });
            }
            for dev in hwmon.iter().filter(|d| !ambient(d)) {
                hwmon_files(&mut out, dev, "temp");
            }
        }
        SensorKind::Humidity => {
            iio_file(&mut out, "in_humidityrelative_input", 1e-3);
            for dev in &hwmon {
                hwmon_files(&mut out, dev, "humidity");
            }
        }
        SensorKind::AirQuality => iio_file(&mut out, "in_massconcentration_pm2p5_input", 1.0),
    }
    out
}

/// Reads one value in the kind's unit, or says why not.
fn read_value(kind: SensorKind, path: &Path, scale: f64) -> Result<f64, SensorError> {
    let text = std::fs::read_to_string(path).map_err(|source| SensorError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let not_a_number = || SensorError::NotANumber {
        path: path.display().to_string(),
        text: text.trim().chars().take(40).collect(),
    };
    let raw: f64 = text.trim().parse().map_err(|_| not_a_number())?;
    let value = raw * scale;
    if !value.is_finite() {
        return Err(not_a_number());
    }
    let (min, max) = kind.range();
    if value < min || value > max {
        return Err(SensorError::Implausible {
            path: path.display().to_string(),
            value,
            unit: kind.unit(),
            min,
            max,
        });
    }
    Ok((value * 1000.0).round() / 1000.0)
}

impl Hwmon {
    /// Opens `path`, or else the first working sensor of `kind` the host has under `/sys`.
    pub fn open(kind: SensorKind, path: Option<&Path>) -> Result<Hwmon, SensorError> {
        Hwmon::open_under(kind, Path::new("/sys"), path)
    }

    /// As `open`, looking under `root` instead of `/sys` (for tests and containers that mount
    /// the host's sysfs elsewhere).
    pub fn open_under(
        kind: SensorKind,
        root: &Path,
        path: Option<&Path>,
    ) -> Result<Hwmon, SensorError> {
        let chosen = match path {
            Some(p) => {
                // Only IIO mass concentration comes in whole units; the rest is in milli-units.
                let scale = if file_name(p).contains("massconcentration") {
                    1.0
                } else {
                    1e-3
                };
                read_value(kind, p, scale)?;
                Candidate {
                    path: p.to_path_buf(),
                    label: p.display().to_string(),
                    scale,
                }
            }
            None => candidates(kind, root)
                .into_iter()
                .find(|c| read_value(kind, &c.path, c.scale).is_ok())
                .ok_or(SensorError::NoHardware(kind))?,
        };
        Ok(Hwmon {
            kind,
            path: chosen.path,
            label: chosen.label,
            scale: chosen.scale,
            failures: 0,
        })
    }

    /// The file being read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Which sensor that is, for logs (`coretemp Package id 0`, `acpitz (thermal_zone0)`).
    pub fn label(&self) -> &str {
        &self.label
    }
}

impl Source for Hwmon {
    fn kind(&self) -> SensorKind {
        self.kind
    }

    fn sample(&mut self, now_ms: u64) -> Result<Option<Sample>, SensorError> {
        match read_value(self.kind, &self.path, self.scale) {
            Ok(value) => {
                self.failures = 0;
                Ok(Some(Sample::of(self.kind, now_ms, value)))
            }
            Err(e) => {
                self.failures += 1;
                if self.failures < MAX_FAILURES {
                    return Ok(None);
                }
                Err(SensorError::Failing {
                    path: self.path.display().to_string(),
                    count: self.failures,
                    last: e.to_string(),
                })
            }
        }
    }

    fn describe(&self) -> String {
        format!("sysfs {} ({})", self.label, self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    #[test]
    fn no_sensor_is_a_clear_error() {
        let root = tempfile::tempdir().unwrap();
        for kind in SensorKind::ALL {
            let e = Hwmon::open_under(kind, root.path(), None)
                .unwrap_err()
                .to_string();
            assert!(e.ends_with("use --sensor-source sim"), "{e}");
        }
        let e = Hwmon::open_under(SensorKind::Temperature, root.path(), None)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "no thermal zone or hwmon temperature sensor found under /sys; use --sensor-source sim"
        );
    }

    #[test]
    fn finds_the_best_sensor_of_each_kind() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        write(r, "class/thermal/thermal_zone0/type", "acpitz\n");
        write(r, "class/thermal/thermal_zone0/temp", "-273150\n"); // broken: skipped
        write(r, "class/thermal/thermal_zone10/type", "x86_pkg_temp\n");
        write(r, "class/thermal/thermal_zone10/temp", "48000\n");
        write(r, "class/thermal/thermal_zone2/type", "iwlwifi\n");
        write(r, "class/thermal/thermal_zone2/temp", "39000\n");
        write(r, "class/hwmon/hwmon0/name", "coretemp\n");
        write(r, "class/hwmon/hwmon0/temp1_input", "51000\n");
        let t = Hwmon::open_under(SensorKind::Temperature, r, None).unwrap();
        assert_eq!(
            t.label(),
            "iwlwifi (thermal_zone2)",
            "natural order, broken skipped"
        );
        assert!(Hwmon::open_under(SensorKind::Humidity, r, None).is_err());

        // An ambient chip (it measures humidity too) beats the CPU.
        write(r, "class/hwmon/hwmon3/name", "sht3x\n");
        write(r, "class/hwmon/hwmon3/temp1_input", "21375\n");
        write(r, "class/hwmon/hwmon3/humidity1_input", "45500\n");
        let mut t = Hwmon::open_under(SensorKind::Temperature, r, None).unwrap();
        assert_eq!(t.label(), "sht3x temp1");
        assert_eq!(t.sample(7).unwrap().unwrap().value, 21.375);
        let mut h = Hwmon::open_under(SensorKind::Humidity, r, None).unwrap();
        let s = h.sample(7).unwrap().unwrap();
        assert_eq!((s.time_ms, s.value, s.aqi), (7, 45.5, None));

        write(r, "bus/iio/devices/iio:device0/name", "pms7003\n");
        write(
            r,
            "bus/iio/devices/iio:device0/in_massconcentration_pm2p5_input",
            "12\n",
        );
        let mut a = Hwmon::open_under(SensorKind::AirQuality, r, None).unwrap();
        assert_eq!(a.label(), "pms7003 (iio:device0)");
        assert!(a.describe().starts_with("sysfs pms7003 (iio:device0) ("));
        let s = a.sample(9).unwrap().unwrap();
        assert_eq!((s.value, s.aqi), (12.0, Some(56)));
    }

    #[test]
    fn an_explicit_file_is_read_and_failures_become_dropouts_then_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("temp");
        fs::write(&p, "42500\n").unwrap();
        let mut h = Hwmon::open_under(SensorKind::Temperature, dir.path(), Some(&p)).unwrap();
        assert_eq!(h.sample(5).unwrap().unwrap().value, 42.5);
        fs::write(&p, "hot").unwrap();
        assert_eq!(h.sample(6).unwrap(), None, "a glitch is a dropout");
        fs::write(&p, "43000").unwrap();
        assert_eq!(h.sample(7).unwrap().unwrap().value, 43.0, "and recovers");
        fs::write(&p, "hot").unwrap();
        for _ in 1..MAX_FAILURES {
            assert_eq!(h.sample(8).unwrap(), None);
        }
        let e = h.sample(9).unwrap_err().to_string();
        assert!(e.contains("failed 3 times in a row"), "{e}");
        assert!(e.contains("\"hot\", not a number"), "{e}");

        let e = Hwmon::open_under(SensorKind::Temperature, dir.path(), Some(&p))
            .unwrap_err()
            .to_string();
        assert!(e.contains("holds \"hot\", not a number"), "{e}");
        let e = Hwmon::open(SensorKind::Temperature, Some(&dir.path().join("nope")))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("cannot read "), "{e}");
    }
}
