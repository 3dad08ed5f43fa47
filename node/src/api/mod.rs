//! The HTTP RPC API: Kubo's `/api/v0` wire format plus sensornet's `reading/*` routes.

pub mod client;
pub mod error;
mod events;
mod history;
mod kubo;
pub(crate) mod readings;
mod status;
#[cfg(test)]
mod tests;
mod webui;

use std::collections::HashMap;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{post, MethodRouter};
use axum::Router;
use subtle::ConstantTimeEq;

use crate::bus::Bus;
use crate::metrics::{Metrics, RouteLabel};
use crate::p2p::Handle;
use crate::publish::Publisher;
use crate::store::Store;
pub use error::ApiError;

/// Largest request body: a 1 MiB block plus multipart framing.
pub const MAX_BODY: usize = (1 << 20) + 64 * 1024;

/// Query-string arguments (`arg` may repeat).
#[derive(Debug, Default)]
pub struct Args(HashMap<String, Vec<String>>);

impl Args {
    /// Parses a raw query string.
    pub fn parse(q: Option<&str>) -> Args {
        let mut m: HashMap<String, Vec<String>> = HashMap::new();
        for (k, v) in form_urlencoded::parse(q.unwrap_or("").as_bytes()) {
            m.entry(k.into_owned()).or_default().push(v.into_owned());
        }
        Args(m)
    }
    /// First value of a key.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).and_then(|v| v.first()).map(String::as_str)
    }
    /// A required key.
    pub fn require(&self, k: &str) -> Result<&str, ApiError> {
        self.get(k)
            .ok_or_else(|| ApiError::bad(format!("argument \"{k}\" is required")))
    }
    /// Every value of a key.
    pub fn all<'a>(&'a self, k: &str) -> impl Iterator<Item = &'a str> {
        self.0.get(k).into_iter().flatten().map(String::as_str)
    }
    /// A parsed optional key.
    pub fn parsed<T: std::str::FromStr>(&self, k: &str) -> Result<Option<T>, ApiError>
    where
        T::Err: std::fmt::Display,
    {
        self.get(k)
            .map(|v| {
                v.parse::<T>()
                    .map_err(|e| ApiError::bad(format!("argument \"{k}\" ({v:?}): {e}")))
            })
            .transpose()
    }
    /// A boolean flag (`true`/`1`/present without value).
    pub fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("" | "true" | "1"))
    }
}

/// What the handlers use; cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    /// Publishes readings and raw payloads.
    pub publisher: Publisher,
    /// Local delivery, for `pubsub/sub` and `reading/sub`.
    pub bus: Bus,
    /// Blocks, heads and history.
    pub store: Store,
    /// Peers, dials, topics.
    pub net: Handle,
    /// Request counters.
    pub metrics: Metrics,
    /// This node's public key (`id`).
    pub public_key: libp2p::identity::PublicKey,
    /// Required bearer token, if any.
    pub token: Option<String>,
    /// Topics this node subscribes (history of others is asked of peers).
    pub topics: Vec<String>,
    /// Retention per topic (history before the horizon is asked of peers).
    pub retention: crate::config::RetentionPolicy,
    /// True once the initial catch-up is done.
    pub ready: tokio::sync::watch::Receiver<bool>,
}

/// POST only, as Kubo: any other method is a 405 in Kubo's error shape.
fn rpc<H, T>(handler: H) -> MethodRouter<ApiState>
where
    H: axum::handler::Handler<T, ApiState>,
    T: 'static,
{
    post(handler).fallback(|| async {
        ApiError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            message: "405 - Method Not Allowed: the RPC API takes POST only".into(),
        }
    })
}

/// The whole router (the dashboard, then the RPC API behind its checks); `tests.rs` drives it
/// without a socket.
pub fn router(state: ApiState) -> Router {
    let api = Router::new()
        .route("/api/v0/id", rpc(kubo::id))
        .route("/api/v0/version", rpc(kubo::version))
        .route("/api/v0/swarm/peers", rpc(kubo::swarm_peers))
        .route("/api/v0/swarm/connect", rpc(kubo::swarm_connect))
        .route("/api/v0/pubsub/pub", rpc(kubo::pubsub_pub))
        .route("/api/v0/pubsub/sub", rpc(kubo::pubsub_sub))
        .route("/api/v0/pubsub/ls", rpc(kubo::pubsub_ls))
        .route("/api/v0/pubsub/peers", rpc(kubo::pubsub_peers))
        .route("/api/v0/block/get", rpc(kubo::block_get))
        .route("/api/v0/block/put", rpc(kubo::block_put))
        .route("/api/v0/block/stat", rpc(kubo::block_stat))
        .route("/api/v0/dag/get", rpc(kubo::dag_get))
        .route("/api/v0/dag/put", rpc(kubo::dag_put))
        .route("/api/v0/reading/pub", rpc(readings::publish))
        .route(
            "/api/v0/reading/pub-batch",
            rpc(readings::publish_batch).layer(axum::extract::DefaultBodyLimit::max(
                readings::MAX_BATCH_BODY,
            )),
        )
        .route("/api/v0/reading/history", rpc(history::history))
        .route("/api/v0/reading/sub", rpc(readings::subscribe))
        .route("/api/v0/reading/heads", rpc(readings::heads))
        .route("/api/v0/reading/events", rpc(events::events))
        .route("/api/v0/node/status", rpc(status::status))
        .fallback(|| async {
            ApiError::not_found(
                "404 page not found: see `node --help` or docs/api.md for the routes",
            )
        })
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth))
        .layer(axum::middleware::from_fn(same_origin))
        .layer(axum::middleware::from_fn_with_state(state.clone(), count))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state);
    webui::router().merge(api)
}

/// Refuses requests a browser sends from another site's page (Kubo's Origin check): the API
/// on loopback has no token, so without this any web page could publish through it. The
/// dashboard, served from this address, and non-browser clients (no `Origin`) pass.
async fn same_origin(req: Request, next: Next) -> Response {
    let origin = req.headers().get(header::ORIGIN).map(|o| o.as_bytes());
    let host = req.headers().get(header::HOST).map(|h| h.as_bytes());
    let same = match (origin, host) {
        (None, _) => true,
        (Some(o), Some(h)) => {
            let o = o
                .strip_prefix(b"http://")
                .or_else(|| o.strip_prefix(b"https://"));
            o == Some(h)
        }
        (Some(_), None) => false,
    };
    if same {
        return next.run(req).await;
    }
    ApiError {
        status: StatusCode::FORBIDDEN,
        message: "cross-origin request refused: the API answers this node's own dashboard (/webui) and non-browser clients".into(),
    }
    .into_response()
}

async fn count(State(s): State<ApiState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "other".into());
    let resp = next.run(req).await;
    s.metrics
        .api_requests
        .get_or_create(&RouteLabel {
            route,
            status: resp.status().as_u16(),
        })
        .inc();
    resp
}

/// Bearer-token check (Kubo's `API.Authorizations` idea): 401 without, 403 with a wrong one.
async fn auth(State(s): State<ApiState>, req: Request, next: Next) -> Response {
    let Some(token) = &s.token else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        None => ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: "this API requires a token: send \"Authorization: Bearer <token>\" (node --api-token)".into(),
        }
        .into_response(),
        Some(g) if !bool::from(g.as_bytes().ct_eq(token.as_bytes())) => ApiError {
            status: StatusCode::FORBIDDEN,
            message: "the API token is wrong".into(),
        }
        .into_response(),
        Some(_) => next.run(req).await,
    }
}

/// Headers of a Kubo stream.
pub fn stream_headers() -> [(header::HeaderName, &'static str); 3] {
    [
        (header::CONTENT_TYPE, "application/json"),
        (header::HeaderName::from_static("x-chunked-output"), "1"),
        (header::TRAILER, "X-Stream-Error"),
    ]
}
