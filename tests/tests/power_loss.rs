//! Power loss: nodes and the standalone sensor on a filesystem that keeps unsynced writes in
//! memory and drops them on a simulated crash (`sensornet_tests::lazyfs`, after Jepsen's
//! LazyFS). A kill -9 keeps the kernel's page cache, so only this shows that an acknowledged
//! reading had been fsync'd: crash during heavy publishing, remount, restart, and every
//! acknowledged reading must be there.
//!
//! Needs /dev/fuse and root (or fusermount3: scripts/install-fuse.sh); without them these
//! tests fail, saying so, rather than skip.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sensornet_tests::lazyfs::{self, CrashReport, LazyMount};
use sensornet_tests::{bin, block_matches, eventually, free_port, Daemon, Opts};
use serde_json::Value;

/// A lazy mount over `root/disk` at `root/mnt`; fails the test when FUSE is unavailable.
fn lazy_mount(root: &Path) -> (PathBuf, PathBuf, LazyMount) {
    if let Some(why) = lazyfs::unavailable() {
        panic!("power-loss tests cannot run here: {why}");
    }
    let (disk, mnt) = (root.join("disk"), root.join("mnt"));
    fs::create_dir_all(&disk).unwrap();
    let m = LazyMount::mount(&disk, &mnt).unwrap();
    (disk, mnt, m)
}

fn remount(m: LazyMount, disk: &Path, mnt: &Path) -> (CrashReport, LazyMount) {
    let report = m.unmount().unwrap();
    (report, LazyMount::mount(disk, mnt).unwrap())
}

#[test]
fn the_lazy_fs_loses_exactly_what_was_not_fsynced() {
    let tmp = tempfile::tempdir().unwrap();
    let (disk, mnt, m) = lazy_mount(tmp.path());
    fs::create_dir(mnt.join("d")).unwrap();

    fs::write(mnt.join("d/unsynced"), b"gone after the crash").unwrap();
    let mut f = fs::File::create(mnt.join("d/synced")).unwrap();
    f.write_all(b"kept").unwrap();
    f.sync_all().unwrap();
    drop(f);
    // Synced, then appended to and overwritten in place (redb's pattern) without a sync.
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(mnt.join("d/mixed"))
        .unwrap();
    f.write_all_at(b"0123456789", 0).unwrap();
    f.sync_data().unwrap();
    f.write_all_at(b"ab", 2).unwrap();
    f.write_all_at(b"-tail", 10).unwrap();
    drop(f);
    // Synced, then truncated without a sync.
    let mut f = fs::File::create(mnt.join("d/truncated")).unwrap();
    f.write_all(b"long content").unwrap();
    f.sync_all().unwrap();
    f.set_len(4).unwrap();
    drop(f);

    // Programs see everything; the disk has only what was synced.
    assert_eq!(
        fs::read(mnt.join("d/unsynced")).unwrap(),
        b"gone after the crash"
    );
    assert_eq!(fs::read(mnt.join("d/mixed")).unwrap(), b"01ab456789-tail");
    assert_eq!(fs::read(mnt.join("d/truncated")).unwrap(), b"long");
    assert_eq!(fs::read(disk.join("d/unsynced")).unwrap(), b"");
    assert_eq!(fs::read(disk.join("d/mixed")).unwrap(), b"0123456789");

    let report = m.crash();
    let dirty: Vec<_> = report.dirty.iter().map(|d| d.path.clone()).collect();
    assert_eq!(
        dirty,
        ["d/mixed", "d/truncated", "d/unsynced"].map(PathBuf::from),
        "{report:?}"
    );
    let e = fs::read(mnt.join("d/synced")).unwrap_err();
    assert_eq!(
        e.raw_os_error(),
        Some(5),
        "after the crash every op is EIO: {e}"
    );

    let (_, m) = remount(m, &disk, &mnt);
    assert_eq!(
        fs::read(mnt.join("d/unsynced")).unwrap(),
        b"",
        "name kept, data lost"
    );
    assert_eq!(fs::read(mnt.join("d/synced")).unwrap(), b"kept");
    assert_eq!(fs::read(mnt.join("d/mixed")).unwrap(), b"0123456789");
    assert_eq!(fs::read(mnt.join("d/truncated")).unwrap(), b"long content");
    let mut names: Vec<_> = fs::read_dir(mnt.join("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["mixed", "synced", "truncated", "unsynced"]);
    // Renames and unlinks work (and are durable at once, the documented simplification).
    fs::rename(mnt.join("d/synced"), mnt.join("d/renamed")).unwrap();
    fs::remove_file(mnt.join("d/unsynced")).unwrap();
    let (_, m) = remount(m, &disk, &mnt);
    assert_eq!(fs::read(mnt.join("d/renamed")).unwrap(), b"kept");
    assert!(!mnt.join("d/unsynced").exists());
    m.unmount().unwrap();
}

/// One acknowledged publish: its CID, and when the ack arrived.
struct Ack {
    cid: String,
    at: Instant,
}

/// Publishes from `clients` threads as fast as acks come until `stop`.
fn publish_until(api: &str, clients: usize, round: usize, stop: &AtomicBool) -> (Vec<Ack>, u64) {
    let acks = Mutex::new(Vec::new());
    let failures = Mutex::new(0u64);
    std::thread::scope(|s| {
        for c in 0..clients {
            let (acks, failures) = (&acks, &failures);
            s.spawn(move || {
                let http = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    let value = 15.0 + (i % 100) as f64 / 10.0;
                    let url = format!(
                        "http://{api}/api/v0/reading/pub?topic=temperature&value={value}&source=r{round}c{c}"
                    );
                    let ack = http.post(url).send().ok().and_then(|r| {
                        (r.status().as_u16() == 200)
                            .then(|| r.json::<Value>().ok())
                            .flatten()
                            .and_then(|v| v["Cid"].as_str().map(str::to_string))
                    });
                    let at = Instant::now();
                    match ack {
                        Some(cid) => acks.lock().unwrap().push(Ack { cid, at }),
                        None => {
                            *failures.lock().unwrap() += 1;
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                }
            });
        }
    });
    (acks.into_inner().unwrap(), failures.into_inner().unwrap())
}

#[test]
fn a_node_keeps_every_acknowledged_reading_through_power_loss() {
    const ROUNDS: usize = 3;
    const CLIENTS: usize = 4;
    const PUBLISH_FOR: Duration = Duration::from_secs(3);
    let tmp = tempfile::tempdir().unwrap();
    let (disk, mnt, m) = lazy_mount(tmp.path());
    let mut m = Some(m);
    let mut node = Daemon::start(&mnt, "n0", Opts::default()).unwrap();
    node.wait_ready(Duration::from_secs(30)).unwrap();
    let peer_id = node.peer_id.clone();

    let mut acked: Vec<String> = Vec::new();
    let mut figures = Vec::new();
    for round in 0..ROUNDS {
        let stop = AtomicBool::new(false);
        let mut report = None;
        let api = node.api.clone();
        let mount = m.as_ref().unwrap();
        // Round 0 cuts the power at a moment on the clock; later rounds at one of the
        // publishing's fsyncs, which catches redb with a commit written but not yet synced.
        let armed = (round > 0).then(|| mount.stats().fsyncs + 300 + 97 * round as u64);
        if let Some(n) = armed {
            mount.crash_at_fsync(n);
        }
        let (acks, failures) = std::thread::scope(|s| {
            let publishers = s.spawn(|| publish_until(&api, CLIENTS, round, &stop));
            let cut = match armed {
                Some(_) => eventually(Duration::from_secs(60), "the armed power cut", || {
                    Ok(mount.crashed().then_some(()))
                }),
                None => {
                    std::thread::sleep(PUBLISH_FOR);
                    Ok(())
                }
            };
            // The power cut: the fs freezes (unsynced data gone, EIO from now), then the
            // process dies, as both would when the machine loses power.
            report = Some(mount.crash());
            node.kill9();
            stop.store(true, Ordering::SeqCst);
            let published = publishers.join().unwrap();
            cut.unwrap();
            published
        });
        let report = report.unwrap();
        m = Some(remount(m.take().unwrap(), &disk, &mnt).1);
        let t0 = Instant::now();
        node.spawn().unwrap_or_else(|e| {
            panic!("round {round}: the node does not start after the power loss: {e:#}")
        });
        node.wait_ready(Duration::from_secs(60)).unwrap();
        let restart = t0.elapsed();
        assert_eq!(
            node.peer_id, peer_id,
            "round {round}: the identity survives"
        );
        // `init` fsyncs the config it writes: a cut right after init must not empty it.
        let config_len = fs::metadata(node.repo.join("config.toml")).map_or(0, |m| m.len());
        assert!(
            config_len > 0,
            "round {round}: config.toml was emptied by the cut"
        );

        let after_crash = acks.iter().filter(|a| a.at > report.at).count();
        acked.extend(acks.iter().map(|a| a.cid.clone()));
        let history: HashSet<String> = node
            .history("temperature")
            .unwrap()
            .iter()
            .filter_map(|r| r["cid"].as_str().map(str::to_string))
            .collect();
        let lost: Vec<&String> = acked
            .iter()
            .filter(|c| !history.contains(*c) || !block_matches(&node, c).unwrap_or(false))
            .collect();
        let dirty: Vec<String> = report
            .dirty
            .iter()
            .map(|d| {
                format!(
                    "{} ({} dirty pages, {} -> {} bytes)",
                    d.path.display(),
                    d.dirty_pages,
                    d.view_len,
                    d.synced_len
                )
            })
            .collect();
        let line = format!(
            "round {round} (cut {}): acked {} (total {}, {} acks arrived after the cut), found {}, lost {}; \
             {failures} failed requests; fs since mount: {} writes, {} fsyncs ({} with data), crash \
             dropped {} unsynced bytes in [{}]; restart {restart:.1?}, config.toml now \
             {config_len} bytes",
            armed.map_or("after 3 s".to_string(), |n| format!("at fsync {n}")),
            acks.len(),
            acked.len(),
            after_crash,
            acked.len() - lost.len(),
            lost.len(),
            report.stats.writes,
            report.stats.fsyncs,
            report.stats.fsyncs_applied,
            report.lost_bytes(),
            dirty.join(", "),
        );
        eprintln!("{line}");
        figures.push(line.clone());
        assert!(
            acks.len() > 50,
            "round {round}: too few acks to mean anything: {line}"
        );
        assert!(
            lost.is_empty(),
            "round {round}: acknowledged readings lost in a power cut: {:?}…\n{line}",
            &lost[..lost.len().min(5)]
        );
    }
    eprintln!("power loss, node: {}", figures.join("\n"));
    // Readings are durable once in the store's write-ahead log; redb catches up in
    // checkpoints. Cuts in the middle of publishing must have found some only in the log.
    let replays = node
        .log_text()
        .matches("applied the write-ahead log's batches")
        .count();
    assert!(
        replays >= 1,
        "no restart applied the write-ahead log, so no cut tested it:\n{}",
        figures.join("\n")
    );
    drop(node);
    m.unwrap().unmount().unwrap();
}

/// The readings of a buffer directory's segment files, oldest first; `view` replaces the disk
/// content of the files a crash found dirty.
fn buffer_lines(dir: &Path, view: &HashMap<PathBuf, Vec<u8>>) -> Vec<String> {
    let mut segs: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    let mut lines = Vec::new();
    for p in segs {
        let bytes = view
            .get(p.file_name().map(Path::new).unwrap())
            .cloned()
            .unwrap_or_else(|| fs::read(&p).unwrap());
        let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        lines.extend(
            String::from_utf8_lossy(&bytes[..complete])
                .lines()
                .map(str::to_string),
        );
    }
    lines
}

/// A sensor process, killed when dropped (a failing test leaves none behind, holding the mount).
struct Sensor(Child);

impl Drop for Sensor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sensor(api: &str, buffer: &Path, log: &Arc<Mutex<Vec<String>>>) -> Sensor {
    let mut child = Command::new(bin("sensor"))
        .args(["--kind", "temperature", "--seed", "7", "--interval", "10ms"])
        .args(["--id", "power-sensor", "--api", api, "--buffer-dir"])
        .arg(buffer)
        .env_remove("SENSORNET_API")
        .env_remove("SENSORNET_API_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for out in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let log = log.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                log.lock().unwrap().push(l);
            }
        });
    }
    Sensor(child)
}

fn kill(child: &mut Child, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig);
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs a sensor on `buf` until the power cut armed `after` fsyncs from now, and checks that
/// it then stops on the error (its fsync failed: it must not carry on as if buffered).
/// Returns what the cut dropped and the sensor's log.
fn sensor_until_cut(m: &LazyMount, api: &str, buf: &Path, after: u64) -> (CrashReport, String) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let dump = || log.lock().unwrap().join("\n");
    m.crash_at_fsync(m.stats().fsyncs + after);
    let mut s = sensor(api, buf, &log);
    eventually(Duration::from_secs(30), "the armed power cut", || {
        Ok(m.crashed().then_some(()))
    })
    .unwrap_or_else(|e| panic!("{e}; sensor log:\n{}", dump()));
    let report = m.crash();
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = s.0.try_wait().unwrap() {
            break Some(st);
        }
        if t0.elapsed() > Duration::from_secs(10) {
            kill(&mut s.0, nix::sys::signal::Signal::SIGKILL);
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(
        status.is_some_and(|st| !st.success()),
        "the sensor should exit with an error when its buffer's fsync fails ({status:?}); log:\n{}",
        dump()
    );
    let said = log
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|l| l.contains("error"))
        .cloned();
    eprintln!("power loss, sensor at the cut: {status:?}, {said:?}");
    (report, dump())
}

/// The buffer's readings as the sensor had written them at the cut (the crash-time view of
/// the dirty files) and as the disk has them after it; checks that the disk holds a prefix
/// of what was written, short of at most `max_unsynced` lines.
fn written_and_durable(
    disk_buf: &Path,
    report: &CrashReport,
    max_unsynced: usize,
) -> (Vec<String>, Vec<String>) {
    let view: HashMap<PathBuf, Vec<u8>> = report
        .dirty
        .iter()
        .filter_map(|d| {
            Some((
                d.path.strip_prefix("buf").ok()?.to_path_buf(),
                d.view.clone()?,
            ))
        })
        .collect();
    let written = buffer_lines(disk_buf, &view);
    let durable = buffer_lines(disk_buf, &HashMap::new());
    let unsynced = written.len() - durable.len().min(written.len());
    eprintln!(
        "power loss, sensor: {} readings written to the buffer, {} on disk after the cut ({} \
         unsynced, dropped); dirty files at the cut: {:?}",
        written.len(),
        durable.len(),
        unsynced,
        report
            .dirty
            .iter()
            .map(|d| (&d.path, d.view_len, d.synced_len))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        written[..durable.len().min(written.len())],
        durable[..],
        "the disk holds a prefix of what was written"
    );
    assert!(
        unsynced <= max_unsynced,
        "{unsynced} pushed readings were not fsync'd"
    );
    (written, durable)
}

/// (time, value) of buffer lines.
fn times_values(lines: &[String]) -> Vec<(u64, f64)> {
    lines
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["time"].as_u64().unwrap(), v["value"].as_f64().unwrap())
        })
        .collect()
}

/// The node's readings from the test sensor, oldest first.
fn sensor_history(node: &Daemon) -> anyhow::Result<Vec<Value>> {
    Ok(node
        .history("temperature")?
        .into_iter()
        .filter(|r| r["source"] == "power-sensor")
        .collect())
}

fn node_at(api: &str, dir: &Path) -> Daemon {
    let opts = Opts {
        api_addr: Some(api.to_string()),
        ..Opts::default()
    };
    let node = Daemon::start(dir, "n0", opts).unwrap();
    node.wait_ready(Duration::from_secs(30)).unwrap();
    node
}

#[test]
fn the_sensor_buffer_keeps_every_fsynced_reading_through_power_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let (disk, mnt, m) = lazy_mount(tmp.path());
    let api = format!("127.0.0.1:{}", free_port());

    // The node is down: every reading waits in the buffer on the lazy fs, fsync'd per push.
    // The power goes at the 300th fsync: the first synced the cursor, so this one is a push
    // whose line was written but not yet synced (and so never acknowledged as buffered).
    let (report, log) = sensor_until_cut(&m, &api, &mnt.join("buf"), 300);
    let (_, m) = remount(m, &disk, &mnt);
    let (written, durable) = written_and_durable(&disk.join("buf"), &report, 1);
    assert!(written.len() >= 250, "{log}");
    // Exactly the one being pushed at the cut is missing: the cut came at its fsync.
    assert_eq!(written.len() - durable.len(), 1, "{log}");
    let log = Arc::new(Mutex::new(Vec::new()));
    let dump = |log: &Arc<Mutex<Vec<String>>>| log.lock().unwrap().join("\n");

    // Power back: node up, sensor restarted on the same buffer.
    let node_dir = tempfile::tempdir().unwrap();
    let node = node_at(&api, node_dir.path());
    let log2 = log;
    let mut s = sensor(&api, &mnt.join("buf"), &log2);
    let want = times_values(&durable);
    let last = want.last().unwrap().0;
    let got = eventually(
        Duration::from_secs(60),
        "the buffered readings at the node",
        || {
            let h = sensor_history(&node)?;
            Ok(h.iter()
                .any(|r| r["time"].as_u64() > Some(last))
                .then_some(h))
        },
    )
    .unwrap_or_else(|e| panic!("{e}; sensor log:\n{}", dump(&log2)));
    kill(&mut s.0, nix::sys::signal::Signal::SIGTERM);

    let old: Vec<&Value> = got
        .iter()
        .filter(|r| r["time"].as_u64() <= Some(last))
        .collect();
    let old_tv: Vec<(u64, f64)> = old
        .iter()
        .map(|r| (r["time"].as_u64().unwrap(), r["value"].as_f64().unwrap()))
        .collect();
    let distinct: HashSet<u64> = old_tv.iter().map(|t| t.0).collect();
    eprintln!(
        "power loss, sensor: {} buffered readings reached the node ({} deliveries, {} \
         duplicates); {} newer ones since",
        distinct.len(),
        old.len(),
        old.len() - distinct.len(),
        got.len() - old.len()
    );
    // The node was down before the cut, so nothing was in flight: no duplicate is allowed
    // (at-least-once only repeats a reading whose delivery a kill interrupted).
    assert_eq!(
        old_tv,
        want,
        "every fsync'd reading, once; sensor log:\n{}",
        dump(&log2)
    );
    // Delivered oldest first: the node numbers a source's readings in arrival order.
    let seqs: Vec<u64> = got.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "delivered out of order: seqs by time {seqs:?}"
    );
    drop(node);
    m.unmount().unwrap();
}

#[test]
fn the_sensor_buffer_survives_a_power_cut_while_delivering() {
    let tmp = tempfile::tempdir().unwrap();
    let (disk, mnt, m) = lazy_mount(tmp.path());
    let api = format!("127.0.0.1:{}", free_port());

    // Readings pile up while the node is down (a clean stop keeps them all)...
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut s = sensor(&api, &mnt.join("buf"), &log);
    eventually(Duration::from_secs(30), "200 buffered readings", || {
        Ok((m.stats().fsyncs >= 200).then_some(()))
    })
    .unwrap();
    kill(&mut s.0, nix::sys::signal::Signal::SIGTERM);
    drop(s);
    // ...then the node is up and the power goes while the sensor drains its backlog: each
    // delivery rewrites and fsyncs the cursor, each new sample appends and fsyncs a line.
    let node_dir = tempfile::tempdir().unwrap();
    let node = node_at(&api, node_dir.path());
    let (report, _) = sensor_until_cut(&m, &api, &mnt.join("buf"), 150);
    let delivered_before = sensor_history(&node).unwrap().len();
    let (_, m) = remount(m, &disk, &mnt);
    // Segments are deleted only when fully taken, so the disk still has every line pushed.
    let (_, durable) = written_and_durable(&disk.join("buf"), &report, 1);
    assert!(delivered_before > 0, "the cut should come while delivering");

    // Power back: the sensor resumes from the cursor that was synced.
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut s = sensor(&api, &mnt.join("buf"), &log);
    let want = times_values(&durable);
    let last = want.last().unwrap().0;
    let got = eventually(
        Duration::from_secs(60),
        "every synced reading at the node",
        || {
            let h = sensor_history(&node)?;
            Ok(h.iter()
                .any(|r| r["time"].as_u64() > Some(last))
                .then_some(h))
        },
    )
    .unwrap_or_else(|e| panic!("{e}; sensor log:\n{}", log.lock().unwrap().join("\n")));
    kill(&mut s.0, nix::sys::signal::Signal::SIGTERM);

    // History is by time, so a reading delivered twice shows as two adjacent equal entries.
    let old: Vec<(u64, f64)> = got
        .iter()
        .filter(|r| r["time"].as_u64() <= Some(last))
        .map(|r| (r["time"].as_u64().unwrap(), r["value"].as_f64().unwrap()))
        .collect();
    let mut once = old.clone();
    once.dedup();
    let duplicates = old.len() - once.len();
    eprintln!(
        "power loss, sensor while delivering: {} readings on disk, {delivered_before} delivered \
         before the cut, {} reached the node ({duplicates} delivered twice)",
        durable.len(),
        once.len()
    );
    assert_eq!(once, want, "every fsync'd reading reaches the node");
    // At-least-once: only the reading in flight (or not yet popped) at the cut repeats.
    assert!(duplicates <= 1, "{duplicates} readings delivered twice");
    // Oldest first: in arrival order (the node's seq) the times never go back.
    let mut by_seq: Vec<(u64, u64)> = got
        .iter()
        .map(|r| (r["seq"].as_u64().unwrap(), r["time"].as_u64().unwrap()))
        .collect();
    by_seq.sort_unstable();
    assert!(
        by_seq.windows(2).all(|w| w[0].1 <= w[1].1),
        "delivered out of order: {by_seq:?}"
    );
    drop(node);
    m.unmount().unwrap();
}
