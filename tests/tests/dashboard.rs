//! The dashboard in a real headless Chromium (scripts/install-chromium.sh) over the DevTools
//! protocol: a 3-node cluster's readings appear with their latest values and live, the status
//! panel shows peers and readiness, the range picker draws a downsampled day, no console
//! errors and no request leaving the node, readable on a phone width, and the token prompt
//! off loopback. `SENSORNET_SCREENSHOT=$PWD/docs/dashboard.png` also saves a screenshot
//! (`SENSORNET_SCREENSHOT_PHONE=FILE`: the phone-width page).

use std::time::Duration;

use anyhow::{Context, Result};
use sensornet_tests::browser::{self, Browser};
use sensornet_tests::{cluster, Daemon, Opts};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

fn require_chromium() {
    assert!(
        browser::available(),
        "chromium is not installed: run scripts/install-chromium.sh (scripts/test.sh does)"
    );
}

/// A day of readings 5 minutes apart for a source, then a recent one.
fn backfill_day(node: &Daemon, topic: &str, source: &str, base: f64) -> Result<()> {
    let now = sensornet::clock::now_ms();
    for i in (1..288u64).rev() {
        let t = now - i * 300_000;
        let v = base + 3.0 * ((i as f64) / 20.0).sin();
        node.post_json(&format!(
            "reading/pub?topic={topic}&value={v:.2}&source={source}&time={t}"
        ))?;
    }
    Ok(())
}

#[test]
fn the_dashboard_shows_a_cluster_live() -> Result<()> {
    require_chromium();
    let dir = tempfile::tempdir()?;
    let nodes = cluster(dir.path(), 3)?;
    backfill_day(&nodes[1], "temperature", "roof", 18.0)?;
    backfill_day(&nodes[2], "temperature", "cellar", 12.0)?;
    nodes[1].publish("temperature", 21.5, "roof")?;
    nodes[2].publish("temperature", 13.25, "cellar")?;
    for (i, v) in [8.0, 20.0, 41.0].iter().enumerate() {
        nodes[0].publish("air-quality", *v, &format!("street-{i}"))?;
    }
    nodes[1].publish("humidity", 55.0, "roof")?;
    // node 0 holds everything before the page opens.
    sensornet_tests::eventually(WAIT, "node 0 holding the cluster's readings", || {
        Ok((nodes[0].history("temperature")?.len() >= 2 * 288).then_some(()))
    })?;

    let api = &nodes[0].api;
    let mut b = Browser::start(1280, 1000)?;
    b.goto(&format!("http://{api}/"))?;
    b.wait_for(
        WAIT,
        "the page to load its data",
        "document.body.dataset.ready === '1'",
    )?;
    assert_eq!(b.eval("location.pathname")?, json!("/webui"), "/ redirects");

    // The latest value of every source.
    let row = |src: &str| {
        let topic = if src.starts_with("street") {
            "air-quality"
        } else {
            "temperature"
        };
        format!("(document.querySelector('#sources tr[data-topic=\"{topic}\"][data-source=\"{src}\"] td.value') || {{}}).textContent")
    };
    if let Err(e) = b.wait_for(
        WAIT,
        "roof's latest value",
        &format!("({}||'').includes('21.50 °C')", row("roof")),
    ) {
        let table = b.eval("document.querySelector('#sources tbody').innerText")?;
        anyhow::bail!("{e:#}; the sources table: {table}");
    }
    assert!(b
        .eval(&row("cellar"))?
        .as_str()
        .unwrap_or("")
        .contains("13.25 °C"));
    assert!(b
        .eval(&row("street-2"))?
        .as_str()
        .unwrap_or("")
        .contains("41.00"));
    // AQI colours: 41 µg/m³ is "unhealthy for sensitive groups" (orange).
    let colour = b.eval("getComputedStyle(document.querySelector('#sources tr[data-source=\"street-2\"] .aqi')).backgroundColor")?;
    assert_eq!(colour, json!("rgb(255, 126, 0)"));

    // The status panel: readiness, two peers, the node's topics.
    b.wait_for(
        WAIT,
        "two peers in the status panel",
        "(document.querySelector('#status-list dd[data-key=\"peers\"]')||{}).textContent === '2'",
    )?;
    assert_eq!(
        b.eval("document.querySelector('#ready').textContent")?,
        json!("ready")
    );
    let topics = b.eval(
        "[...document.querySelectorAll('#topics tbody tr')].map(r => r.dataset.topic).join(',')",
    )?;
    assert!(topics.as_str().unwrap().contains("temperature"), "{topics}");
    b.wait_for(
        WAIT,
        "a gossip mesh on temperature",
        "Number(document.querySelector('#topics tr[data-topic=\"temperature\"] td.mesh').textContent) >= 1",
    )?;
    assert!(b.eval("!!document.querySelector('.chart[data-topic=\"temperature\"] path[data-source=\"roof\"]')")? == json!(true));

    // A reading published on another node after load arrives live.
    let cid = nodes[2].publish("temperature", 14.75, "cellar")?;
    b.wait_for(
        WAIT,
        "the new reading in the live list",
        &format!("!!document.querySelector('#recent li[data-cid=\"{cid}\"]')"),
    )?;
    b.wait_for(
        WAIT,
        "cellar's new latest value",
        &format!("({}||'').includes('14.75')", row("cellar")),
    )?;

    // The range picker draws a downsampled day: ~240 buckets per line, one unbroken line.
    b.eval("(() => { const s = document.querySelector('#range'); s.value = '24h'; s.dispatchEvent(new Event('change')); })()")?;
    b.wait_for(
        WAIT,
        "the day drawn",
        "document.body.dataset.range === '24h'",
    )?;
    let segs = b.eval("(() => { const d = document.querySelector('.chart[data-topic=\"temperature\"] path[data-source=\"roof\"]').getAttribute('d'); return [d.split('M').length - 1, d.split('L').length - 1]; })()")?;
    let (moves, lines) = (segs[0].as_u64().unwrap(), segs[1].as_u64().unwrap());
    assert!(
        lines >= 200,
        "a day of 5-minute readings in ~6-minute buckets: {segs}"
    );
    assert!(moves <= 3, "no gaps in a day without any: {segs}");

    if let Some(path) = std::env::var_os("SENSORNET_SCREENSHOT") {
        std::thread::sleep(Duration::from_millis(500));
        std::fs::write(&path, b.screenshot()?).with_context(|| format!("writing {path:?}"))?;
    }

    let problems = b.problems.lock().unwrap().clone();
    assert!(
        problems.is_empty(),
        "console errors or warnings: {problems:#?}"
    );
    assert_eq!(b.eval("document.body.dataset.errors")?, json!("0"));
    let requests = b.requests.lock().unwrap().clone();
    let own = format!("http://{api}/");
    let foreign: Vec<_> = requests
        .iter()
        .filter(|u| !u.starts_with(&own) && !u.starts_with("data:") && *u != "about:blank")
        .collect();
    assert!(foreign.is_empty(), "requests leaving the node: {foreign:?}");
    assert!(
        requests.iter().any(|u| u.contains("reading/events")),
        "{requests:?}"
    );

    // On a phone: nothing wider than the screen.
    let mut phone = Browser::start(390, 844)?;
    phone.goto(&format!("http://{api}/webui"))?;
    phone.wait_for(
        WAIT,
        "the page on a phone",
        "document.body.dataset.ready === '1'",
    )?;
    if let Some(path) = std::env::var_os("SENSORNET_SCREENSHOT_PHONE") {
        std::fs::write(&path, phone.screenshot()?).with_context(|| format!("writing {path:?}"))?;
    }
    let width = phone.eval("document.documentElement.scrollWidth")?;
    assert!(
        width.as_u64().unwrap() <= 390,
        "the page is {width} px wide on a 390 px screen"
    );
    Ok(())
}

#[test]
fn off_loopback_the_page_asks_for_the_token_once() -> Result<()> {
    require_chromium();
    let dir = tempfile::tempdir()?;
    let node = Daemon::start(
        dir.path(),
        "remote",
        Opts {
            api_addr: Some("0.0.0.0:0".into()),
            extra: vec!["--api-token".into(), "s3cret-token".into()],
            ..Opts::default()
        },
    )?;
    node.wait_ready(WAIT)?;
    let port = node.api.rsplit(':').next().unwrap().to_string();
    let url = format!("http://127.0.0.1:{port}/webui");
    // The API itself refuses requests without the token.
    let r = sensornet_tests::http()
        .post(format!("http://127.0.0.1:{port}/api/v0/node/status"))
        .send()?;
    assert_eq!(r.status().as_u16(), 401);
    let r = sensornet_tests::http()
        .post(format!("http://127.0.0.1:{port}/api/v0/node/status"))
        .bearer_auth("s3cret-token")
        .send()?;
    assert_eq!(r.status().as_u16(), 200);
    let r = sensornet_tests::http()
        .post(format!("http://127.0.0.1:{port}/api/v0/node/status"))
        .bearer_auth("s3cret-token")
        .header("origin", "http://evil.example")
        .send()?;
    assert_eq!(
        r.status().as_u16(),
        403,
        "another site's page may not call the API"
    );

    let mut b = Browser::start(1024, 800)?;
    b.goto(&url)?;
    b.wait_for(
        WAIT,
        "the token prompt",
        "!document.querySelector('#token-form').hidden",
    )?;
    b.eval("(() => { document.querySelector('#token').value = 's3cret-token'; document.querySelector('#token-form').requestSubmit(); })()")?;
    b.wait_for(
        WAIT,
        "the page to load with the token",
        "document.body.dataset.ready === '1'",
    )?;
    assert_eq!(
        b.eval("sessionStorage.getItem('sensornet-api-token')")?,
        json!("s3cret-token")
    );
    // Reloaded in the same tab: no second prompt.
    b.goto(&url)?;
    std::thread::sleep(Duration::from_millis(300));
    b.wait_for(
        WAIT,
        "the page to load again",
        "document.body && document.body.dataset.ready === '1'",
    )?;
    assert_eq!(
        b.eval("document.querySelector('#token-form').hidden")?,
        json!(true)
    );
    let problems = b.problems.lock().unwrap().clone();
    // The first load's 401 is the prompt's cue, logged by the browser as a failed request.
    assert!(
        problems.iter().all(|p| p.contains("401")),
        "unexpected console errors: {problems:#?}"
    );
    Ok(())
}
