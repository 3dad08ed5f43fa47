//! Chaos: five nodes in network namespaces, each with an in-pod sensor, and acknowledged
//! publishers (pinned to one node, or spread over all like a Kubernetes Service) while a seeded
//! schedule SIGKILLs, SIGTERMs, replaces pods with an emptied repo and partitions the network
//! for longer than it takes the connections to drop. Afterwards, within [`CONVERGE`], every node
//! holds every acknowledged reading, the same readings and the same heads, no source has a
//! hole, and no reading of a source is left outside its history (two readings competing for one
//! place).
//!
//! `SENSORNET_CHAOS_SEED=N` repeats a run; `SENSORNET_SLOW=1` injects faults for minutes instead
//! of [`QUICK_FAULTS`]. On failure the seed, the fault schedule and every failed check are
//! printed (and the daemons' logs by the harness).
//!
//! Why connections really drop: the node closes a connection after three missed pings (about
//! 50 s; `tests/tests/partition.rs` shows it), and TCP gives up its retransmissions after
//! `tcp_retries2` (15 by default: about 15 minutes). To keep partitions short, the hosts'
//! namespaces get `tcp_retries2 = 4` (about 6 s once a segment goes unanswered; the sensors
//! gossip every 200 ms), and a partition lasts [`CUT`], longer than that; each partition checks
//! that the peers across it were really dropped.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use sensornet_tests::netns::{self, Net};
use sensornet_tests::{block_matches, eventually, CommandExt, Daemon, Opts};
use serde_json::Value;

const N: usize = 5;
const TOPIC: &str = "temperature";
/// Every node's API, on the loopback of its own namespace.
const API: &str = "127.0.0.1:5001";
/// Faults are injected for this long in the quick (CI) run.
const QUICK_FAULTS: Duration = Duration::from_secs(40);
/// ... and for this long with `SENSORNET_SLOW=1`.
const SLOW_FAULTS: Duration = Duration::from_secs(300);
/// How long a partition lasts: longer than the 20 s ping timeout and than TCP's retransmission
/// timeout with [`TCP_RETRIES2`] (about 6 s).
const CUT: Duration = Duration::from_secs(22);
const TCP_RETRIES2: u32 = 4;
/// The convergence time: once every node is back and ready, all checks must hold within it.
const CONVERGE: Duration = Duration::from_secs(60);
/// Pinned sources: `pinnedI` always goes to node I.
const PINNED: usize = N;
/// Spread sources: each reading goes to a random live node.
const SPREAD: usize = 3;
/// Pause between a publisher's readings.
const PUBLISH_EVERY: Duration = Duration::from_millis(150);

/// Network namespaces are named after the process: one scenario at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// SplitMix64: small, seedable, good enough to pick faults.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo + 1))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    /// SIGKILL, then a restart on the same repo.
    Kill,
    /// SIGTERM (graceful), then a restart on the same repo.
    Term,
    /// SIGKILL, then a restart on an emptied repo (a replacement pod with a new volume).
    Wipe,
    /// The trunk between hosts {0,1} and {2,3,4} is cut for [`CUT`].
    Split,
    /// One host is cut off from all others for [`CUT`].
    Isolate,
}

#[derive(Clone, Debug)]
struct Planned {
    /// Offset from the start of the fault phase.
    at: Duration,
    fault: Fault,
    node: usize,
    /// Down time of the process, or the length of the cut.
    hold: Duration,
}

/// The fault schedule of one run: every kind of the mode at least once, then random ones.
fn plan(rng: &mut Rng, kinds: &[Fault], span: Duration) -> Vec<Planned> {
    let procs: Vec<Fault> = kinds
        .iter()
        .copied()
        .filter(|f| matches!(f, Fault::Kill | Fault::Term | Fault::Wipe))
        .collect();
    let cuts = [Fault::Split, Fault::Isolate];
    // The quick run has time for one partition; the slow one for all kinds, again and again.
    let mut first: Vec<Fault> = procs.clone();
    if slow() {
        first.extend(cuts);
    } else {
        first.push(cuts[rng.below(2)]);
    }
    for i in (1..first.len()).rev() {
        first.swap(i, rng.below(i + 1));
    }
    let mut out = Vec::new();
    let mut t = rng.millis(1000, 3000);
    let mut i = 0;
    while t < span {
        let fault = if i < first.len() {
            first[i]
        } else if slow() && rng.below(4) == 0 {
            cuts[rng.below(2)]
        } else {
            procs[rng.below(procs.len())]
        };
        i += 1;
        let hold = match fault {
            Fault::Split | Fault::Isolate => CUT,
            _ => rng.millis(200, 2000),
        };
        out.push(Planned {
            at: t,
            fault,
            node: rng.below(N),
            hold,
        });
        // Restarts take a while; the schedule is a plan, the log has the real times.
        t += hold + rng.millis(2000, 5000);
    }
    out
}

fn slow() -> bool {
    std::env::var_os("SENSORNET_SLOW").is_some_and(|v| v != "0" && !v.is_empty())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    Pinned,
    Spread,
    Sensor,
}

fn kind_of(source: &str) -> Kind {
    if source.starts_with("pinned") {
        Kind::Pinned
    } else if source.starts_with("spread") {
        Kind::Spread
    } else {
        Kind::Sensor
    }
}

#[derive(Clone, Debug)]
struct Acked {
    cid: String,
    source: String,
    node: usize,
}

#[derive(Default)]
struct Counters {
    attempts: AtomicU64,
    status_503: AtomicU64,
    other_status: AtomicU64,
    unreachable: AtomicU64,
}

/// One publish through node `node`'s API: `Some(cid)` only for an HTTP 200 with a CID.
fn publish_once(ns: &str, source: &str, value: f64, c: &Counters) -> Option<String> {
    c.attempts.fetch_add(1, Ordering::Relaxed);
    let url =
        format!("http://{API}/api/v0/reading/pub?topic={TOPIC}&value={value}&source={source}");
    match netns::curl(ns, "POST", &url) {
        Ok((200, body)) => {
            let v: Value = serde_json::from_str(&body).ok()?;
            v["Cid"].as_str().map(str::to_string)
        }
        Ok((503, _)) => {
            c.status_503.fetch_add(1, Ordering::Relaxed);
            None
        }
        Ok((0, _)) | Err(_) => {
            c.unreachable.fetch_add(1, Ordering::Relaxed);
            None
        }
        Ok(_) => {
            c.other_status.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// Runs a process's fault: down, `hold`, up again (retrying a failed start).
fn restart(d: &mut Daemon, fault: Fault, hold: Duration) -> anyhow::Result<()> {
    match fault {
        Fault::Kill => d.kill9(),
        Fault::Term => {
            d.stop_with(Signal::SIGTERM, Duration::from_secs(15));
        }
        Fault::Wipe => {
            d.kill9();
            std::fs::remove_dir_all(&d.repo)?;
        }
        _ => unreachable!(),
    }
    std::thread::sleep(hold);
    let mut last = None;
    for _ in 0..3 {
        match d.spawn() {
            Ok(()) => return Ok(()),
            Err(e) => {
                last = Some(e);
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
    Err(last.unwrap())
}

/// The parents a reading names: `prev` and any further parent links (`joins`, `parents`),
/// each a CID string or a `{"/": CID}` link, alone or in an array.
fn parents(r: &Value) -> Vec<String> {
    fn links(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Object(o) => {
                if let Some(Value::String(s)) = o.get("/") {
                    out.push(s.clone());
                }
            }
            Value::Array(a) => a.iter().for_each(|x| links(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for key in ["prev", "joins", "parents"] {
        if let Some(v) = r.get(key) {
            links(v, &mut out);
        }
    }
    out
}

/// What one node answers after the faults.
struct Snapshot {
    /// CID → reading.
    readings: HashMap<String, Value>,
    /// The readings that must be the same on every node: all but the sensors' newest.
    settled: HashSet<String>,
    /// The heads of the publishers' sources, each entry as canonical JSON, sorted.
    heads: Vec<String>,
    /// Head entries.
    head_entries: Vec<Value>,
}

fn snapshot(d: &Daemon, cutoff_ms: u64) -> anyhow::Result<Snapshot> {
    // Heads first: every head is then in the history read next. Errors are errors here, never
    // an empty list of heads.
    let h = d.post_json(&format!("reading/heads?topic={TOPIC}"))?;
    let head_entries = h["Heads"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("heads on {}: no Heads array: {h}", d.name))?
        .clone();
    // The in-pod sensors go on publishing after the faults stop: their heads move, so heads
    // are compared for the publishers' sources, and the sensors' readings up to the end of the
    // faults (`cutoff_ms`) must be the same everywhere.
    let mut heads: Vec<String> = head_entries
        .iter()
        .filter(|h| kind_of(h["source"].as_str().unwrap_or("")) != Kind::Sensor)
        .map(Value::to_string)
        .collect();
    heads.sort();
    let (st, body) = d.post(&format!("reading/history?topic={TOPIC}"))?;
    anyhow::ensure!(st == 200, "history on {}: HTTP {st}: {body}", d.name);
    let mut readings = HashMap::new();
    let mut settled = HashSet::new();
    for l in body.lines().filter(|l| !l.is_empty()) {
        let v: Value = serde_json::from_str(l)?;
        let cid = v["cid"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("history line without a cid: {l}"))?
            .to_string();
        let sensor = kind_of(v["source"].as_str().unwrap_or("")) == Kind::Sensor;
        if !sensor || v["time"].as_u64().unwrap_or(0) <= cutoff_ms {
            settled.insert(cid.clone());
        }
        readings.insert(cid, v);
    }
    Ok(Snapshot {
        readings,
        settled,
        heads,
        head_entries,
    })
}

/// The convergence checks: every acknowledged reading everywhere, the same readings and heads
/// on every node, no holes. Returns the failures (empty: converged).
fn convergence_failures(snaps: &[anyhow::Result<Snapshot>], acked: &[Acked]) -> Vec<String> {
    let mut fails = Vec::new();
    let mut ok = Vec::new();
    for (i, s) in snaps.iter().enumerate() {
        match s {
            Ok(s) => ok.push((i, s)),
            Err(e) => fails.push(format!("node {i}: query failed: {e:#}")),
        }
    }
    let union: BTreeSet<&String> = ok.iter().flat_map(|(_, s)| s.settled.iter()).collect();
    let lost: Vec<&Acked> = acked.iter().filter(|a| !union.contains(&a.cid)).collect();
    if !lost.is_empty() {
        let mut by: BTreeMap<Kind, usize> = BTreeMap::new();
        for a in &lost {
            *by.entry(kind_of(&a.source)).or_default() += 1;
        }
        fails.push(format!(
            "{} acknowledged readings are on no node at all ({by:?}), e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        ));
    }
    for (i, s) in &ok {
        let missing: Vec<&Acked> = acked
            .iter()
            .filter(|a| !s.readings.contains_key(&a.cid))
            .collect();
        if !missing.is_empty() {
            let mut by: BTreeMap<Kind, usize> = BTreeMap::new();
            for a in &missing {
                *by.entry(kind_of(&a.source)).or_default() += 1;
            }
            fails.push(format!(
                "node {i} lacks {} acknowledged readings ({by:?}), e.g. {:?}",
                missing.len(),
                &missing[..missing.len().min(3)]
            ));
        }
        let absent = union
            .iter()
            .filter(|c| !s.readings.contains_key(**c))
            .count();
        if absent > 0 {
            fails.push(format!(
                "node {i} lacks {absent} of the {} readings the nodes hold together",
                union.len()
            ));
        }
        for h in &s.head_entries {
            let holes = h.get("holes").and_then(Value::as_u64).unwrap_or(0);
            if holes > 0 {
                fails.push(format!("node {i}: {holes} holes below head {h}"));
            }
        }
    }
    if let Some((_, first)) = ok.first() {
        for (i, s) in &ok[1..] {
            if s.heads != first.heads {
                let a: BTreeSet<&String> = first.heads.iter().collect();
                let b: BTreeSet<&String> = s.heads.iter().collect();
                fails.push(format!(
                    "node {i}'s heads differ from node {}'s: only on node {i}: {:?}; only on node {}: {:?}",
                    ok[0].0,
                    b.difference(&a).collect::<Vec<_>>(),
                    ok[0].0,
                    a.difference(&b).collect::<Vec<_>>()
                ));
            }
        }
    }
    fails
}

/// Per-source structure on one node: seqs held by more than one reading, readings that no
/// head reaches through parent links, and parents the node does not hold (holes).
#[derive(Default, Debug)]
struct Structure {
    /// (source, seq) → CIDs, for seqs with more than one reading.
    shared_seqs: BTreeMap<(String, u64), Vec<String>>,
    /// Source → readings not reachable from its heads.
    unreachable: BTreeMap<String, Vec<(u64, String)>>,
    /// Source → parent CIDs named but not held.
    dangling: BTreeMap<String, BTreeSet<String>>,
}

fn structure(s: &Snapshot) -> Structure {
    let mut out = Structure::default();
    let mut by_source: BTreeMap<String, Vec<(&String, &Value)>> = BTreeMap::new();
    for (cid, r) in &s.readings {
        let src = r["source"].as_str().unwrap_or("").to_string();
        by_source.entry(src).or_default().push((cid, r));
    }
    for (src, rs) in &by_source {
        let mut seqs: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for (cid, r) in rs {
            seqs.entry(r["seq"].as_u64().unwrap_or(0))
                .or_default()
                .push((*cid).clone());
        }
        for (seq, mut cids) in seqs {
            if cids.len() > 1 {
                cids.sort();
                out.shared_seqs.insert((src.clone(), seq), cids);
            }
        }
        let mut seen: HashSet<String> = HashSet::new();
        let mut todo: VecDeque<String> = s
            .head_entries
            .iter()
            .filter(|h| h["source"].as_str() == Some(src.as_str()))
            .filter_map(|h| h["cid"].as_str().map(str::to_string))
            .collect();
        while let Some(c) = todo.pop_front() {
            if !seen.insert(c.clone()) {
                continue;
            }
            match s.readings.get(&c) {
                Some(r) => todo.extend(parents(r)),
                None => {
                    out.dangling.entry(src.clone()).or_default().insert(c);
                }
            }
        }
        // Readings newer than the heads (a sensor's, stored after the heads were read) are
        // not judged.
        let top = s
            .head_entries
            .iter()
            .filter(|h| h["source"].as_str() == Some(src.as_str()))
            .filter_map(|h| h["seq"].as_u64())
            .max()
            .unwrap_or(0);
        let mut lone: Vec<(u64, String)> = rs
            .iter()
            .filter(|(cid, r)| !seen.contains(*cid) && r["seq"].as_u64().unwrap_or(0) <= top)
            .map(|(cid, r)| (r["seq"].as_u64().unwrap_or(0), (*cid).clone()))
            .collect();
        if !lone.is_empty() {
            lone.sort();
            out.unreachable.insert(src.clone(), lone);
        }
    }
    out
}

struct Mode {
    name: &'static str,
    spread: bool,
    faults: &'static [Fault],
    /// One writer per source: no two readings of a source may share a seq.
    single_writer: bool,
}

fn sysctl_in(ns: &str, setting: &str) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "sysctl", "-q", "-w", setting])
        .output_within(Duration::from_secs(30))?;
    anyhow::ensure!(
        out.status.success(),
        "sysctl {setting} in {ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn metric(d: &Daemon, name: &str) -> f64 {
    d.get_metrics("/metrics")
        .ok()
        .and_then(|(_, text)| {
            text.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().last())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0.0)
}

fn run(mode: Mode) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let wall = Instant::now();
    let seed: u64 = match std::env::var("SENSORNET_CHAOS_SEED") {
        Ok(s) => s.parse().expect("SENSORNET_CHAOS_SEED is a number"),
        Err(_) => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            t.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32)
        }
    };
    let span = if slow() { SLOW_FAULTS } else { QUICK_FAULTS };
    let mut rng = Rng(seed ^ mode.name.len() as u64);
    let schedule = plan(&mut rng, mode.faults, span);
    let mut header = format!(
        "chaos {}: seed {seed} (SENSORNET_CHAOS_SEED={seed} repeats it), {span:?} of faults, \
         partitions of {CUT:?}, convergence within {CONVERGE:?}\nplanned schedule:\n",
        mode.name
    );
    for p in &schedule {
        let _ = writeln!(
            header,
            "  +{:>6.1}s {:?} node {} for {:?}",
            p.at.as_secs_f64(),
            p.fault,
            p.node,
            p.hold
        );
    }
    println!("{header}");

    let net = Net::new(N, 2).expect("creating network namespaces (needs root)");
    for ns in &net.hosts {
        sysctl_in(ns, &format!("net.ipv4.tcp_retries2={TCP_RETRIES2}")).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let all: Vec<String> = net
        .addrs
        .iter()
        .map(|a| format!("/ip4/{a}/tcp/4001"))
        .collect();
    let mut nodes: Vec<Daemon> = (0..N)
        .map(|i| {
            Daemon::start(
                dir.path(),
                &format!("c{i}"),
                Opts {
                    listen: Some(all[i].clone()),
                    bootstrap: all
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| *j != i)
                        .map(|(_, a)| a.clone())
                        .collect(),
                    netns: Some(net.hosts[i].clone()),
                    api_addr: Some(API.into()),
                    extra: [
                        "--sensor",
                        TOPIC,
                        "--sensor-interval",
                        "200ms",
                        "--sensor-id",
                        &format!("node{i}-temp"),
                        "--seed",
                        &(seed % 1000 + i as u64).to_string(),
                    ]
                    .map(String::from)
                    .to_vec(),
                    ..Opts::default()
                },
            )
            .unwrap()
        })
        .collect();
    for n in &nodes {
        n.wait_ready(Duration::from_secs(60)).unwrap();
        eventually(Duration::from_secs(60), "4 peers", || {
            Ok((n.peer_count()? >= N - 1).then_some(()))
        })
        .unwrap();
    }
    println!("chaos {}: cluster up in {:?}", mode.name, wall.elapsed());

    let hosts = net.hosts.clone();
    let up: Vec<AtomicBool> = (0..N).map(|_| AtomicBool::new(true)).collect();
    let stop = AtomicBool::new(false);
    let counters = Counters::default();
    let acked: Mutex<Vec<Acked>> = Mutex::new(Vec::new());
    let mut log: Vec<String> = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    let mut done: BTreeMap<Fault, usize> = BTreeMap::new();
    let t0 = Instant::now();
    std::thread::scope(|s| {
        let publishers = PINNED + if mode.spread { SPREAD } else { 0 };
        for p in 0..publishers {
            let (hosts, up, stop, counters, acked) = (&hosts, &up, &stop, &counters, &acked);
            s.spawn(move || {
                let pinned = p < PINNED;
                let source = if pinned {
                    format!("pinned{p}")
                } else {
                    format!("spread{}", p - PINNED)
                };
                let mut rng = Rng(seed ^ (0x1000 + p as u64));
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let node = if pinned {
                        p
                    } else {
                        let live: Vec<usize> =
                            (0..N).filter(|&n| up[n].load(Ordering::Relaxed)).collect();
                        if live.is_empty() {
                            std::thread::sleep(PUBLISH_EVERY);
                            continue;
                        }
                        live[rng.below(live.len())]
                    };
                    let value = 20.0 + (i % 100) as f64 / 10.0;
                    i += 1;
                    match publish_once(&hosts[node], &source, value, counters) {
                        Some(cid) => acked.lock().unwrap().push(Acked {
                            cid,
                            source: source.clone(),
                            node,
                        }),
                        None => std::thread::sleep(Duration::from_millis(300)),
                    }
                    std::thread::sleep(PUBLISH_EVERY);
                }
            });
        }

        for p in &schedule {
            if let Some(wait) = p.at.checked_sub(t0.elapsed()) {
                std::thread::sleep(wait);
            }
            let at = t0.elapsed().as_secs_f64();
            let i = p.node;
            let outcome: anyhow::Result<String> = match p.fault {
                Fault::Kill | Fault::Term | Fault::Wipe => {
                    up[i].store(false, Ordering::Relaxed);
                    let r = restart(&mut nodes[i], p.fault, p.hold);
                    up[i].store(true, Ordering::Relaxed);
                    r.map(|()| format!("down {:?}, restarted", p.hold))
                }
                Fault::Split | Fault::Isolate => {
                    let across: Vec<usize> = match p.fault {
                        Fault::Split if i < 2 => (2..N).collect(),
                        Fault::Split => (0..2).collect(),
                        _ => (0..N).filter(|&j| j != i).collect(),
                    };
                    let cut = |up: bool| match p.fault {
                        Fault::Split => net.connect_halves(up),
                        _ => net.connect_host(i, up),
                    };
                    cut(false).unwrap();
                    std::thread::sleep(p.hold);
                    // The peers across the cut must really be gone from node i.
                    let across_ids: HashSet<&str> =
                        across.iter().map(|&j| nodes[j].peer_id.as_str()).collect();
                    let still = nodes[i].post_json("swarm/peers").map(|v| {
                        v["Peers"]
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .filter(|p| {
                                        let id = p["Peer"].as_str().unwrap_or("");
                                        across_ids.contains(id)
                                    })
                                    .count()
                            })
                            .unwrap_or(0)
                    });
                    cut(true).unwrap();
                    match still {
                        Ok(0) => Ok(format!(
                            "cut {:?}: node {i} had dropped its peers across ({across:?}); healed",
                            p.hold
                        )),
                        Ok(k) => {
                            problems.push(format!(
                                "+{at:.1}s {:?}: after {:?} node {i} was still connected to {k} peers across the cut",
                                p.fault, p.hold
                            ));
                            Ok(format!("cut {:?}: {k} connections across survived", p.hold))
                        }
                        Err(e) => Err(e),
                    }
                }
            };
            *done.entry(p.fault).or_default() += 1;
            match outcome {
                Ok(what) => log.push(format!("+{at:>6.1}s {:?} node {i}: {what}", p.fault)),
                Err(e) => {
                    log.push(format!("+{at:>6.1}s {:?} node {i}: FAILED {e:#}", p.fault));
                    problems.push(format!("fault {:?} on node {i} failed: {e:#}", p.fault));
                }
            }
        }
        if let Some(wait) = span.checked_sub(t0.elapsed()) {
            std::thread::sleep(wait);
        }
        stop.store(true, Ordering::Relaxed);
    });
    let fault_phase = t0.elapsed();
    let acked = acked.into_inner().unwrap();

    let cutoff_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let t1 = Instant::now();
    for n in &nodes {
        if let Err(e) = n.wait_ready(CONVERGE) {
            problems.push(format!("{e:#}"));
        }
    }
    let (last, converged) = loop {
        let snaps: Vec<anyhow::Result<Snapshot>> =
            nodes.iter().map(|n| snapshot(n, cutoff_ms)).collect();
        let fails = convergence_failures(&snaps, &acked);
        let elapsed = t1.elapsed();
        if fails.is_empty() {
            break (snaps, Ok(elapsed));
        }
        if elapsed > CONVERGE {
            break (snaps, Err(fails));
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let convergence = match &converged {
        Ok(t) => format!("converged in {t:?} after the last fault"),
        Err(_) => format!("NOT converged within {CONVERGE:?}"),
    };
    if let Err(fails) = converged {
        problems.extend(fails);
    }

    // Structure: the same on every node once converged; checked on each that answered.
    let mut shared_by: BTreeMap<Kind, usize> = BTreeMap::new();
    let mut unreachable_by: BTreeMap<Kind, usize> = BTreeMap::new();
    let mut readings_by: BTreeMap<Kind, usize> = BTreeMap::new();
    for (i, s) in last.iter().enumerate() {
        let Ok(s) = s else { continue };
        let st = structure(s);
        if i == 0 {
            for r in s.readings.values() {
                *readings_by
                    .entry(kind_of(r["source"].as_str().unwrap_or("")))
                    .or_default() += 1;
            }
            for (src, _) in st.shared_seqs.keys() {
                *shared_by.entry(kind_of(src)).or_default() += 1;
            }
            for (src, l) in &st.unreachable {
                *unreachable_by.entry(kind_of(src)).or_default() += l.len();
            }
        }
        if mode.single_writer && !st.shared_seqs.is_empty() {
            problems.push(format!(
                "node {i}: {} seqs of single-writer sources hold more than one reading: {:?}",
                st.shared_seqs.len(),
                st.shared_seqs.iter().take(10).collect::<Vec<_>>()
            ));
        }
        for (src, lone) in &st.unreachable {
            problems.push(format!(
                "node {i}: {} readings of {src} are not reachable from its heads (competing for a place in its history), (seq, cid): {:?}",
                lone.len(),
                &lone[..lone.len().min(8)]
            ));
        }
        for (src, missing) in &st.dangling {
            // Whether the block is in the node's store at all tells a reading it never got
            // from one its history index lacks.
            let probed: Vec<String> = missing
                .iter()
                .take(3)
                .map(|c| match block_matches(&nodes[i], c) {
                    Ok(held) => format!("{c} (block in its store: {held})"),
                    Err(e) => format!("{c} (block/get failed: {e})"),
                })
                .collect();
            problems.push(format!(
                "node {i}: source {src} names {} parents the node does not hold (a hole), e.g. {probed:?}",
                missing.len(),
            ));
        }
    }

    let mut acked_by: BTreeMap<Kind, usize> = BTreeMap::new();
    for a in &acked {
        *acked_by.entry(kind_of(&a.source)).or_default() += 1;
    }
    let spread_nodes: BTreeSet<usize> = acked
        .iter()
        .filter(|a| kind_of(&a.source) == Kind::Spread)
        .map(|a| a.node)
        .collect();
    let fetched: f64 = nodes
        .iter()
        .map(|n| metric(n, "sensornet_catchup_blocks_fetched_total"))
        .sum();
    let c = &counters;
    let mut report = header;
    let _ = writeln!(report, "fault log:");
    for l in &log {
        let _ = writeln!(report, "  {l}");
    }
    let _ = writeln!(
        report,
        "figures of {}:\n  faults injected: {done:?} over {fault_phase:?}\n  acknowledged: {acked_by:?} (spread over nodes {spread_nodes:?}); attempts {}, 503 {}, unreachable {}, other status {}\n  readings in node 0's history: {readings_by:?}\n  seqs held by more than one reading (sources×seq): {shared_by:?}\n  readings not reachable from their heads: {unreachable_by:?}\n  catch-up blocks fetched (since each node's last start): {fetched}\n  {convergence}; wall time {:?}",
        mode.name,
        c.attempts.load(Ordering::Relaxed),
        c.status_503.load(Ordering::Relaxed),
        c.unreachable.load(Ordering::Relaxed),
        c.other_status.load(Ordering::Relaxed),
        wall.elapsed(),
    );
    if !problems.is_empty() {
        let _ = writeln!(report, "{} failed checks:", problems.len());
        for p in &problems {
            let _ = writeln!(report, "  - {p}");
        }
    }
    println!("{report}");
    assert!(
        acked_by.get(&Kind::Pinned).copied().unwrap_or(0) > 0,
        "nothing was acknowledged\n{report}"
    );
    assert!(problems.is_empty(), "chaos {} failed\n{report}", mode.name);
}

/// One writer per source: pinned publishers and the in-pod sensors; kills and partitions.
#[test]
fn chaos_pinned_writers() {
    run(Mode {
        name: "pinned",
        spread: false,
        faults: &[Fault::Kill, Fault::Term, Fault::Split, Fault::Isolate],
        single_writer: true,
    });
}

/// Many writers per source: spread publishers go through any live node.
#[test]
fn chaos_spread_writers() {
    run(Mode {
        name: "spread",
        spread: true,
        faults: &[Fault::Kill, Fault::Term, Fault::Split, Fault::Isolate],
        single_writer: false,
    });
}

/// Replacement pods: besides kills and partitions, pods come back with an emptied repo.
#[test]
fn chaos_replacement_pods() {
    run(Mode {
        name: "replacement",
        spread: true,
        faults: &[
            Fault::Kill,
            Fault::Term,
            Fault::Wipe,
            Fault::Split,
            Fault::Isolate,
        ],
        single_writer: false,
    });
}
