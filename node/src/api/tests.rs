//! The router driven without a socket: an assembled node on an in-memory store, a swarm that
//! listens nowhere, and requests handed straight to the `axum::Router` service.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;

use super::router;
use crate::config::{resolve, DaemonArgs, FileConfig};
use crate::daemon::Node;
use crate::repo::Repo;
use crate::store::Store;

async fn node(token: Option<&str>) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let mut config = resolve(
        &DaemonArgs::default(),
        FileConfig::default(),
        &Repo::at(dir.path()),
        token.map(str::to_string),
    )
    .unwrap();
    // No socket: the swarm listens nowhere and dials no one.
    config.listen.clear();
    config.bootstrap.clear();
    let key = libp2p::identity::Keypair::generate_ed25519();
    Node::assemble(key, Store::in_memory().unwrap(), config)
        .await
        .unwrap()
}

/// Sends one request; returns the status and the body (JSON when it parses).
async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: Option<(&str, Vec<u8>)>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    let body = match body {
        Some((content_type, bytes)) => {
            req = req.header("content-type", content_type);
            Body::from(bytes)
        }
        None => Body::empty(),
    };
    let resp = app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 22)
        .await
        .unwrap();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, v)
}

/// A multipart body with one file part, as Kubo clients send it.
fn multipart(data: &[u8]) -> (&'static str, Vec<u8>) {
    let mut b = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec();
    b.extend_from_slice(data);
    b.extend_from_slice(b"\r\n--XyZ--\r\n");
    ("multipart/form-data; boundary=XyZ", b)
}

/// Asserts a Kubo-shaped error with `status` whose message contains `needle`.
fn assert_error(got: &(StatusCode, Value), status: StatusCode, needle: &str, what: &str) {
    assert_eq!(got.0, status, "{what}: {}", got.1);
    assert_eq!(got.1["Type"], "error", "{what}: {}", got.1);
    let code = if status.is_client_error() { 1 } else { 0 };
    let code = if matches!(status.as_u16(), 401 | 403) {
        4
    } else {
        code
    };
    assert_eq!(got.1["Code"], code, "{what}: {}", got.1);
    let msg = got.1["Message"].as_str().unwrap_or_default();
    assert!(msg.contains(needle), "{what}: {msg:?} lacks {needle:?}");
}

/// base64url multibase of a topic, as Kubo clients encode it.
fn mb(topic: &str) -> String {
    multibase::encode(multibase::Base::Base64Url, topic)
}

const ROUTES: [&str; 19] = [
    "id",
    "version",
    "swarm/peers",
    "swarm/connect",
    "pubsub/pub",
    "pubsub/sub",
    "pubsub/ls",
    "pubsub/peers",
    "block/get",
    "block/put",
    "block/stat",
    "dag/get",
    "dag/put",
    "reading/pub",
    "reading/history",
    "reading/sub",
    "reading/heads",
    "reading/events",
    "node/status",
];

#[tokio::test]
async fn every_route_refuses_get_and_unknown_routes_are_404() {
    let node = node(None).await;
    let app = router(node.api_state());
    for route in ROUTES {
        let got = call(&app, "GET", &format!("/api/v0/{route}"), None).await;
        assert_error(&got, StatusCode::METHOD_NOT_ALLOWED, "POST only", route);
    }
    let got = call(&app, "POST", "/api/v0/nope", None).await;
    assert_error(&got, StatusCode::NOT_FOUND, "docs/api.md", "unknown route");
    node.shutdown().await;
}

#[tokio::test]
async fn missing_and_malformed_arguments_are_400_with_advice() {
    let node = node(None).await;
    let app = router(node.api_state());
    let cases: [(&str, &str); 21] = [
        ("swarm/connect", "\"arg\" is required"),
        ("swarm/connect?arg=not-a-multiaddr", "invalid multiaddr"),
        ("pubsub/pub", "\"arg\" is required"),
        ("pubsub/pub?arg=temperature", "not multibase"),
        ("pubsub/sub", "\"arg\" is required"),
        ("pubsub/sub?arg=%25%25", "not multibase"),
        ("pubsub/peers?arg=%25%25", "not multibase"),
        ("block/get", "\"arg\" is required"),
        ("block/get?arg=bafynope", "invalid CID"),
        ("block/stat?arg=bafynope", "invalid CID"),
        ("block/put?cid-codec=zip", "unknown codec"),
        ("block/put?mhtype=md5", "sha2-256"),
        ("dag/get?arg=xyz", "invalid CID"),
        ("dag/put?input-codec=yaml", "unknown codec"),
        ("reading/pub?value=1", "\"topic\" is required"),
        ("reading/pub?topic=temp", "\"value\" is required"),
        ("reading/pub?topic=temp&value=warm", "argument \"value\""),
        (
            "reading/pub?topic=temp&value=1&time=yesterday",
            "argument \"time\"",
        ),
        ("reading/history", "\"topic\" is required"),
        ("reading/history?topic=temp&since=forever", "use e.g. 10m"),
        ("reading/sub?topic=temp&since=-1", "use e.g. 10m"),
    ];
    for (uri, needle) in cases {
        let got = call(&app, "POST", &format!("/api/v0/{uri}"), None).await;
        assert_error(&got, StatusCode::BAD_REQUEST, needle, uri);
    }
    let got = call(
        &app,
        "POST",
        "/api/v0/reading/history?topic=temp&limit=-3",
        None,
    )
    .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "argument \"limit\"", "limit");
    node.shutdown().await;
}

#[tokio::test]
async fn bad_bodies_and_values_are_refused_and_nothing_is_stored() {
    let node = node(None).await;
    let app = router(node.api_state());
    // A value out of the topic's range.
    let got = call(
        &app,
        "POST",
        "/api/v0/reading/pub?topic=temp&value=900",
        None,
    )
    .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "temperature", "out of range");
    // pubsub/pub without a multipart body, and a sensor topic fed a word.
    let topic = mb("temperature");
    let got = call(
        &app,
        "POST",
        &format!("/api/v0/pubsub/pub?arg={topic}"),
        None,
    )
    .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "multipart", "no body");
    let got = call(
        &app,
        "POST",
        &format!("/api/v0/pubsub/pub?arg={topic}"),
        Some(multipart(b"warm")),
    )
    .await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        "send a number",
        "a word on temperature",
    );
    // A body over the limit.
    let got = call(
        &app,
        "POST",
        &format!("/api/v0/pubsub/pub?arg={}", mb("chat")),
        Some(multipart(&vec![b'x'; super::MAX_BODY + 1])),
    )
    .await;
    assert_error(&got, StatusCode::PAYLOAD_TOO_LARGE, "limit", "oversized");
    // dag/put of something that is not DAG-JSON.
    let got = call(&app, "POST", "/api/v0/dag/put", Some(multipart(b"{nope"))).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "not DAG-JSON", "dag/put");
    // Nothing of it was stored.
    let (st, heads) = call(&app, "POST", "/api/v0/reading/heads", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(heads["Heads"], serde_json::json!([]));
    // A block this node does not hold: Kubo answers 500 too.
    let (_, bytes) = crate::reading::Reading {
        joins: Vec::new(),
        aqi: None,
        seq: 1,
        prev: None,
        time: 1,
        unit: "°C".into(),
        topic: "temperature".into(),
        value: 1.0,
        source: "x".into(),
    }
    .encode();
    let missing = crate::reading::cid_of(crate::reading::DAG_CBOR, &bytes);
    for route in ["block/get", "block/stat", "dag/get"] {
        let got = call(
            &app,
            "POST",
            &format!("/api/v0/{route}?arg={missing}"),
            None,
        )
        .await;
        assert_error(&got, StatusCode::INTERNAL_SERVER_ERROR, "not found", route);
    }
    node.shutdown().await;
}

#[tokio::test]
async fn a_published_reading_is_served_by_every_read_route() {
    let node = node(None).await;
    let app = router(node.api_state());
    let (st, v) = call(
        &app,
        "POST",
        "/api/v0/reading/pub?topic=temp&value=21.5&source=t1",
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        (v["Topic"].as_str(), v["Seq"].as_u64()),
        (Some("temperature"), Some(1))
    );
    let cid = v["Cid"].as_str().unwrap().to_string();
    let (st, v) = call(
        &app,
        "POST",
        "/api/v0/reading/pub?topic=temp&value=22&source=t1",
        None,
    )
    .await;
    assert_eq!((st, v["Seq"].as_u64()), (StatusCode::OK, Some(2)));
    let (st, stat) = call(&app, "POST", &format!("/api/v0/block/stat?arg={cid}"), None).await;
    assert_eq!(
        (st, stat["Key"].as_str()),
        (StatusCode::OK, Some(cid.as_str()))
    );
    let second = v["Cid"].as_str().unwrap();
    let (st, prev) = call(
        &app,
        "POST",
        &format!("/api/v0/dag/get?arg={second}/prev"),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        prev["/"].as_str(),
        Some(cid.as_str()),
        "prev links the first reading"
    );
    let (st, heads) = call(&app, "POST", "/api/v0/reading/heads?topic=temp", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(heads["Heads"][0]["seq"], 2);
    let (st, history) = call(
        &app,
        "POST",
        "/api/v0/reading/history?topic=temperature",
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let lines: Vec<&str> = history.as_str().unwrap_or_default().lines().collect();
    assert_eq!(lines.len(), 2, "{history}");
    node.shutdown().await;
}

#[tokio::test]
async fn a_token_is_required_and_checked() {
    let node = node(Some("s3cret")).await;
    let app = router(node.api_state());
    let got = call(&app, "POST", "/api/v0/id", None).await;
    assert_error(
        &got,
        StatusCode::UNAUTHORIZED,
        "requires a token",
        "no token",
    );
    let req = |token: &str| {
        Request::builder()
            .method("POST")
            .uri("/api/v0/id")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap()
    };
    let wrong = app.clone().oneshot(req("s3cres")).await.unwrap();
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    let short = app.clone().oneshot(req("s3")).await.unwrap();
    assert_eq!(short.status(), StatusCode::FORBIDDEN);
    let right = app.clone().oneshot(req("s3cret")).await.unwrap();
    assert_eq!(right.status(), StatusCode::OK);
    node.shutdown().await;
}

#[tokio::test]
async fn a_node_still_catching_up_answers_503_with_retry_after_and_writes_nothing() {
    let node = node(None).await;
    let (_never, not_ready) = tokio::sync::watch::channel(false);
    let (ingest, _blocks) = crate::sync::local_channel();
    let mut state = node.api_state();
    state.publisher = crate::publish::Publisher::new(
        node.store.clone(),
        node.net.clone(),
        node.bus.clone(),
        ingest,
        node.metrics.clone(),
        not_ready,
        "test".into(),
    )
    .with_ready_wait(std::time::Duration::from_millis(200));
    let app = router(state);
    let resp = app
        .clone()
        .oneshot(
            Request::builder()
                .method("POST")
                .uri("/api/v0/reading/pub?topic=temp&value=20&source=t9")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let got = call(
        &app,
        "POST",
        "/api/v0/reading/pub?topic=temp&value=20&source=t9",
        None,
    )
    .await;
    assert_error(
        &got,
        StatusCode::SERVICE_UNAVAILABLE,
        "catching up",
        "not ready",
    );
    assert!(
        node.store.head("temperature", "t9").unwrap().is_none(),
        "nothing written"
    );
    node.shutdown().await;
}

/// JSON lines of a streamed answer.
fn lines(v: &Value) -> Vec<Value> {
    v.as_str()
        .map(|s| {
            s.lines()
                .filter(|l| !l.is_empty())
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        })
        .unwrap_or_else(|| vec![v.clone()])
}

#[tokio::test]
async fn history_by_range_source_and_buckets_matches_the_raw_readings() {
    let node = node(None).await;
    let app = router(node.api_state());
    let now = crate::clock::now_ms();
    // Two sources, one reading a minute for the last 30 minutes, at minute-aligned times.
    let base = now - now % 60_000 - 30 * 60_000;
    for i in 0..30u64 {
        for (src, off) in [("a", 0.0), ("b", 100.0)] {
            let uri = format!(
                "/api/v0/reading/pub?topic=temperature&value={}&source={src}&time={}",
                off + i as f64,
                base + i * 60_000
            );
            let (st, v) = call(&app, "POST", &uri, None).await;
            assert_eq!(st, StatusCode::OK, "{v}");
        }
    }
    let get = |q: &str| {
        let app = app.clone();
        let uri = format!("/api/v0/reading/history?topic=temperature&{q}");
        async move {
            let (st, v) = call(&app, "POST", &uri, None).await;
            assert_eq!(st, StatusCode::OK, "{uri}: {v}");
            lines(&v)
        }
    };
    assert_eq!(get("since=1h").await.len(), 60);
    // 20 minutes back to 10 minutes back: readings 10..20 of each source.
    let window = get("since=20m&until=10m&source=a").await;
    assert!(window.iter().all(|r| r["source"] == "a"));
    let got: Vec<u64> = window.iter().map(|r| r["time"].as_u64().unwrap()).collect();
    assert!(
        got.iter()
            .all(|t| *t >= now - 20 * 60_000 && *t < now - 10 * 60_000),
        "{got:?}"
    );
    assert!((9..=11).contains(&got.len()), "{got:?}");
    // 10-minute buckets: three per source, summarising 10 readings each.
    let buckets = get(&format!("since={}&every=10m", rfc3339(base))).await;
    let a: Vec<&Value> = buckets.iter().filter(|b| b["source"] == "a").collect();
    assert_eq!(
        a.iter().map(|b| b["count"].as_u64().unwrap()).sum::<u64>(),
        30,
        "{buckets:?}"
    );
    for b in &a {
        let start = b["start"].as_u64().unwrap();
        let raw: Vec<f64> = (0..30u64)
            .filter(|i| (base + i * 60_000) / 600_000 * 600_000 == start)
            .map(|i| i as f64)
            .collect();
        assert_eq!(b["count"].as_u64().unwrap() as usize, raw.len(), "{b}");
        assert_eq!(b["min"].as_f64().unwrap(), raw[0], "{b}");
        assert_eq!(b["max"].as_f64().unwrap(), *raw.last().unwrap(), "{b}");
        let mean = raw.iter().sum::<f64>() / raw.len() as f64;
        assert!((b["mean"].as_f64().unwrap() - mean).abs() < 1e-9, "{b}");
    }
    let bad: [(&str, &str); 5] = [
        ("since=1h&until=2h", "range is empty"),
        ("since=1000days", "at most 400 days"),
        ("since=30days&every=1s", "at most 10000"),
        ("every=5m", "needs --since"),
        ("since=1h&until=tomorrow", "RFC 3339"),
    ];
    for (q, needle) in bad {
        let uri = format!("/api/v0/reading/history?topic=temperature&{q}");
        let got = call(&app, "POST", &uri, None).await;
        assert_error(&got, StatusCode::BAD_REQUEST, needle, q);
    }
    node.shutdown().await;
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

#[tokio::test]
async fn the_dashboard_is_served_without_the_token_and_the_api_refuses_other_origins() {
    let node = node(Some("s3cret")).await;
    let app = router(node.api_state());
    let get = |uri: &'static str| {
        let app = app.clone();
        async move {
            let req = Request::builder().uri(uri).body(Body::empty()).unwrap();
            app.oneshot(req).await.unwrap()
        }
    };
    let root = get("/").await;
    assert!(root.status().is_redirection());
    assert_eq!(root.headers()["location"], "/webui");
    for (uri, kind) in [
        ("/webui", "text/html"),
        ("/webui/app.js", "text/javascript"),
        ("/webui/style.css", "text/css"),
    ] {
        let r = get(uri).await;
        assert_eq!(r.status(), StatusCode::OK, "{uri}");
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with(kind));
        let csp = r.headers()["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("connect-src 'self'") && csp.contains("default-src 'none'"),
            "{csp}"
        );
    }
    // The data still needs the token.
    let got = call(&app, "POST", "/api/v0/node/status", None).await;
    assert_error(&got, StatusCode::UNAUTHORIZED, "requires a token", "status");
    let req = |origin: &str| {
        Request::builder()
            .method("POST")
            .uri("/api/v0/node/status")
            .header("host", "127.0.0.1:5001")
            .header("origin", origin)
            .header("authorization", "Bearer s3cret")
            .body(Body::empty())
            .unwrap()
    };
    let other = app
        .clone()
        .oneshot(req("http://evil.example"))
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::FORBIDDEN);
    let own = app
        .clone()
        .oneshot(req("http://127.0.0.1:5001"))
        .await
        .unwrap();
    assert_eq!(own.status(), StatusCode::OK);
    let body = axum::body::to_bytes(own.into_body(), 1 << 20)
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert!(v["Topics"].as_array().is_some_and(|t| !t.is_empty()), "{v}");
    assert!(
        v["Ready"].is_boolean() && v["Store"]["Blocks"].is_u64(),
        "{v}"
    );
    node.shutdown().await;
}
