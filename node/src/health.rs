//! The metrics address: `/metrics` (OpenMetrics text), `/healthz` (liveness) and `/readyz`
//! (readiness = initial catch-up done), kept apart from the API so probes and Prometheus
//! reach it without the API token.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

#[derive(Clone)]
struct HealthState {
    registry: Arc<Registry>,
    ready: watch::Receiver<bool>,
}

/// Router of the metrics address.
pub fn router(registry: Arc<Registry>, ready: watch::Receiver<bool>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(HealthState { registry, ready })
}

/// OpenMetrics for scrapers that ask for it (Prometheus does), the classic text format
/// otherwise (curl, `promtool check metrics`): counters' HELP/TYPE carry the `_total` name
/// there, and there are no `# UNIT`/`# EOF` lines.
async fn metrics(
    State(s): State<HealthState>,
    headers: axum::http::HeaderMap,
) -> impl IntoResponse {
    let mut out = String::new();
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    match prometheus_client::encoding::text::encode(&mut out, &s.registry) {
        Ok(()) if openmetrics => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            out,
        ),
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            to_classic_text(&out),
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            format!("encoding metrics failed: {e}"),
        ),
    }
}

async fn readyz(State(s): State<HealthState>) -> impl IntoResponse {
    if *s.ready.borrow() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "catching up\n")
    }
}

/// Rewrites OpenMetrics text as the classic Prometheus text format.
fn to_classic_text(om: &str) -> String {
    let counters: std::collections::HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let meta = line
            .strip_prefix("# HELP ")
            .map(|r| ("# HELP ", r))
            .or_else(|| line.strip_prefix("# TYPE ").map(|r| ("# TYPE ", r)));
        match meta {
            Some((kind, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let name = if counters.contains(name) {
                    format!("{name}_total")
                } else {
                    name.to_string()
                };
                out.push_str(&format!("{kind}{name} {tail}\n"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn classic_text_names_counters_with_total() {
        let om = "# HELP a_x Things.\n# TYPE a_x counter\na_x_total 1\n# HELP g G.\n# TYPE g gauge\n# UNIT g bytes\ng 2\n# EOF\n";
        assert_eq!(
            super::to_classic_text(om),
            "# HELP a_x_total Things.\n# TYPE a_x_total counter\na_x_total 1\n# HELP g G.\n# TYPE g gauge\ng 2\n"
        );
    }
}
