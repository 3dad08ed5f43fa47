//! Kubo-compatible routes: `id`, `version`, `swarm/*`, `pubsub/*`, `block/*`, `dag/*`.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Multipart, RawQuery, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use cid::Cid;
use ipld_core::ipld::Ipld;
use serde_json::{json, Value};

use super::{stream_headers, ApiError, ApiState, Args};
use crate::bus::{Delivery, Received};
use crate::p2p::behaviour::{AGENT_VERSION, PROTOCOL_VERSION};
use crate::reading::{canonical_topic, cid_of, DAG_CBOR, MAX_BLOCK_SIZE, RAW};

const DAG_JSON: u64 = 0x0129;
const DAG_PB: u64 = 0x70;

fn mb(bytes: &[u8]) -> String {
    multibase::encode(multibase::Base::Base64Url, bytes)
}

/// Kubo takes pubsub topics multibase-encoded (`u` + base64url).
fn topic_arg(a: &Args) -> Result<String, ApiError> {
    let raw = a.require("arg")?;
    let (_, bytes) = multibase::decode(raw).map_err(|e| {
        ApiError::bad(format!(
            "topic {raw:?} is not multibase: {e}; encode it as 'u' + base64url, as Kubo clients do"
        ))
    })?;
    let t = String::from_utf8(bytes).map_err(|_| ApiError::bad("topic is not UTF-8"))?;
    Ok(canonical_topic(&t).to_string())
}

fn cid_arg(a: &Args) -> Result<Cid, ApiError> {
    let raw = a.require("arg")?;
    let first = raw
        .trim_start_matches("/ipfs/")
        .split('/')
        .next()
        .unwrap_or("");
    Cid::try_from(first).map_err(|e| ApiError::bad(format!("invalid CID {raw:?}: {e}")))
}

/// The first file of a multipart body (Kubo clients send `file` or `data`).
async fn file_part(req: Request) -> Result<Vec<u8>, ApiError> {
    let mut mp = Multipart::from_request(req, &()).await.map_err(|e| {
        ApiError::bad(format!(
            "expected a multipart/form-data body with the data as a file: {e}"
        ))
    })?;
    let too_big = |e: &axum::extract::multipart::MultipartError| {
        (e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE).then(|| ApiError {
            status: axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            message: format!("request body is larger than the {} byte limit (blocks and messages are at most 1 MiB)", super::MAX_BODY),
        })
    };
    match mp.next_field().await {
        Ok(Some(field)) => Ok(field
            .bytes()
            .await
            .map_err(|e| {
                too_big(&e).unwrap_or_else(|| ApiError::bad(format!("reading the file part: {e}")))
            })?
            .to_vec()),
        Ok(None) => Err(ApiError::bad("file argument 'data' is required")),
        Err(e) => {
            Err(too_big(&e)
                .unwrap_or_else(|| ApiError::bad(format!("malformed multipart body: {e}"))))
        }
    }
}

/// `id`.
pub async fn id(State(s): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let id = s.net.local;
    let addrs: Vec<String> = s
        .net
        .listening()
        .await?
        .iter()
        .map(|a| format!("{a}/p2p/{id}"))
        .collect();
    Ok(Json(json!({
        "ID": id.to_string(),
        "PublicKey": base64::engine::general_purpose::STANDARD.encode(s.public_key.encode_protobuf()),
        "Addresses": addrs,
        "AgentVersion": AGENT_VERSION,
        "ProtocolVersion": PROTOCOL_VERSION,
        "Protocols": ["/ipfs/id/1.0.0", "/ipfs/ping/1.0.0", "/meshsub/1.1.0", "/meshsub/1.0.0", crate::p2p::protocol::PROTOCOL],
    })))
}

/// `version`.
pub async fn version() -> Json<Value> {
    // Kubo's shape: `Version` is the Kubo RPC version sensornet implements (the one in
    // AGENT_VERSION, `kubo/X.Y.Z/...`); sensornet's own version goes in `Commit`, where Kubo
    // clients expect a free-form string, and in the extra `Sensornet` key.
    let kubo = AGENT_VERSION.split('/').nth(1).unwrap_or_default();
    Json(json!({
        "Version": kubo,
        "Commit": concat!("sensornet-", env!("CARGO_PKG_VERSION")),
        "Repo": "1",
        "System": format!("{}/{}", std::env::consts::ARCH, std::env::consts::OS),
        "Golang": "rust",
        "Sensornet": env!("CARGO_PKG_VERSION"),
    }))
}

/// `swarm/peers`.
pub async fn swarm_peers(State(s): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let peers = s.net.peers();
    let mut list: Vec<Value> = Vec::with_capacity(peers.len());
    for p in peers {
        // `Score` (gossipsub peer score) is sensornet's addition; Kubo clients ignore it.
        let score = s.net.score(p.peer).await?;
        list.push(
            json!({"Addr": p.addr.to_string(), "Peer": p.peer.to_string(),
                         "Direction": if p.outbound { 2 } else { 1 }, "Score": score}),
        );
    }
    Ok(Json(json!({ "Peers": list })))
}

/// `swarm/connect?arg=MULTIADDR`.
pub async fn swarm_connect(
    State(s): State<ApiState>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let a = Args::parse(q.as_deref());
    let raw = a.require("arg")?;
    let addr: libp2p::Multiaddr = raw
        .parse()
        .map_err(|e| ApiError::bad(format!("invalid multiaddr {raw:?}: {e}")))?;
    match s.net.dial(addr).await {
        Ok(_) => Ok(Json(json!({"Strings": [format!("connect {raw} success")]}))),
        Err(crate::p2p::NetError::Dial(e)) => {
            Err(ApiError::internal(format!("connect {raw} failure: {e}")))
        }
        Err(e) => Err(e.into()),
    }
}

/// `pubsub/pub?arg=<topic>` with the data as a multipart file.
pub async fn pubsub_pub(State(s): State<ApiState>, req: Request) -> Result<Response, ApiError> {
    let a = Args::parse(req.uri().query());
    let topic = topic_arg(&a)?;
    let data = file_part(req).await?;
    if data.len() > MAX_BLOCK_SIZE {
        return Err(ApiError::bad("message is larger than the 1 MiB limit"));
    }
    // Kubo's publisher joins the topic: later messages from its peers reach it.
    s.net.subscribe(&topic).await;
    s.publisher.publish_raw(&topic, data).await?;
    Ok(().into_response())
}

/// `pubsub/sub?arg=<topic>`: one JSON object per message, Kubo's fields multibase-encoded.
pub async fn pubsub_sub(
    State(s): State<ApiState>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let a = Args::parse(q.as_deref());
    let topic = topic_arg(&a)?;
    let mut sub = s.bus.subscribe(&topic).await;
    let topic_mb = mb(topic.as_bytes());
    let stream = async_stream::stream! {
        while let Some(got) = sub.recv().await {
            match got {
                Received::Delivery(d) => {
                    let (from, seqno, data) = match d.as_ref() {
                        Delivery::Reading { from, seqno, data, backfilled: false, .. } => (from, seqno, data),
                        Delivery::Raw { from, seqno, data } => (from, seqno, data),
                        Delivery::Reading { .. } => continue,
                    };
                    let line = json!({
                        "from": from.map(|p| p.to_string()).unwrap_or_default(),
                        "data": mb(data),
                        "seqno": mb(&seqno.unwrap_or(0).to_be_bytes()),
                        "topicIDs": [topic_mb.clone()],
                    });
                    yield Ok::<_, std::convert::Infallible>(format!("{line}\n"));
                }
                // Kubo's stream has no way to say so; the bus counted and logged it.
                Received::Dropped(_) => {}
            }
        }
    };
    Ok((stream_headers(), Body::from_stream(stream)).into_response())
}

/// `pubsub/ls`.
pub async fn pubsub_ls(State(s): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let topics: Vec<String> = s
        .net
        .topics()
        .await?
        .iter()
        .map(|t| mb(t.as_bytes()))
        .collect();
    Ok(Json(json!({ "Strings": topics })))
}

/// `pubsub/peers[?arg=<topic>]`.
pub async fn pubsub_peers(
    State(s): State<ApiState>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let a = Args::parse(q.as_deref());
    let topic = if a.get("arg").is_some() {
        Some(topic_arg(&a)?)
    } else {
        None
    };
    let peers: Vec<String> = s
        .net
        .topic_peers(topic)
        .await?
        .iter()
        .map(|p| p.to_string())
        .collect();
    Ok(Json(json!({ "Strings": peers })))
}

fn get_block(s: &ApiState, cid: &Cid) -> Result<Vec<u8>, ApiError> {
    s.store.get(cid)?.ok_or_else(|| {
        ApiError::internal(format!(
            "block {cid} was not found locally: not in this node's store"
        ))
    })
}

/// `block/get?arg=<cid>`.
pub async fn block_get(
    State(s): State<ApiState>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let cid = cid_arg(&Args::parse(q.as_deref()))?;
    let bytes = get_block(&s, &cid)?;
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Bytes::from(bytes),
    )
        .into_response())
}

/// `block/stat?arg=<cid>`.
pub async fn block_stat(
    State(s): State<ApiState>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let cid = cid_arg(&Args::parse(q.as_deref()))?;
    let bytes = get_block(&s, &cid)?;
    Ok(Json(json!({"Key": cid.to_string(), "Size": bytes.len()})))
}

fn codec_by_name(name: &str) -> Result<u64, ApiError> {
    match name {
        "raw" => Ok(RAW),
        "dag-cbor" | "cbor" => Ok(DAG_CBOR),
        "dag-json" => Ok(DAG_JSON),
        "dag-pb" | "v0" | "protobuf" => Ok(DAG_PB),
        other => Err(ApiError::bad(format!(
            "unknown codec {other:?}: use raw, dag-cbor, dag-json or dag-pb"
        ))),
    }
}

async fn put_block(s: &ApiState, codec: u64, bytes: Vec<u8>) -> Result<Cid, ApiError> {
    if bytes.len() > MAX_BLOCK_SIZE {
        return Err(ApiError::bad("block is larger than the 1 MiB limit"));
    }
    let cid = cid_of(codec, &bytes);
    s.store
        .write(crate::store::Batch {
            blocks: vec![(cid, bytes)],
            ..Default::default()
        })
        .await?;
    Ok(cid)
}

/// `block/put[?cid-codec=raw][&mhtype=sha2-256]` with the block as a multipart file.
pub async fn block_put(State(s): State<ApiState>, req: Request) -> Result<Json<Value>, ApiError> {
    let a = Args::parse(req.uri().query());
    if let Some(mh) = a.get("mhtype") {
        if mh != "sha2-256" {
            return Err(ApiError::bad(format!(
                "mhtype {mh:?} is not supported: sensornet hashes with sha2-256"
            )));
        }
    }
    let codec = codec_by_name(a.get("cid-codec").or(a.get("format")).unwrap_or("raw"))?;
    let bytes = file_part(req).await?;
    let size = bytes.len();
    let cid = put_block(&s, codec, bytes).await?;
    Ok(Json(json!({"Key": cid.to_string(), "Size": size})))
}

fn decode_ipld(codec: u64, bytes: &[u8]) -> Result<Ipld, ApiError> {
    match codec {
        DAG_CBOR => serde_ipld_dagcbor::from_slice(bytes)
            .map_err(|e| ApiError::internal(format!("stored block is not DAG-CBOR: {e}"))),
        DAG_JSON => serde_ipld_dagjson::from_slice(bytes)
            .map_err(|e| ApiError::internal(format!("stored block is not DAG-JSON: {e}"))),
        RAW => Ok(Ipld::Bytes(bytes.to_vec())),
        other => Err(ApiError::bad(format!(
            "dag/get of codec 0x{other:x} is not supported; use block/get"
        ))),
    }
}

/// `dag/get?arg=<cid>[/path][&output-codec=dag-json|dag-cbor]`.
pub async fn dag_get(
    State(s): State<ApiState>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let a = Args::parse(q.as_deref());
    let cid = cid_arg(&a)?;
    let raw = a.require("arg")?.trim_start_matches("/ipfs/");
    let mut node = decode_ipld(cid.codec(), &get_block(&s, &cid)?)?;
    for seg in raw.split('/').skip(1).filter(|s| !s.is_empty()) {
        node = match node {
            Ipld::Map(mut m) => m.remove(seg),
            Ipld::List(mut l) => seg
                .parse::<usize>()
                .ok()
                .filter(|i| *i < l.len())
                .map(|i| l.swap_remove(i)),
            _ => None,
        }
        .ok_or_else(|| ApiError::bad(format!("no link named {seg:?} under {cid}")))?;
    }
    let out = match a.get("output-codec").unwrap_or("dag-json") {
        "dag-json" | "json" => serde_ipld_dagjson::to_vec(&node).map_err(ApiError::internal)?,
        "dag-cbor" | "cbor" => serde_ipld_dagcbor::to_vec(&node).map_err(ApiError::internal)?,
        other => {
            return Err(ApiError::bad(format!(
                "output-codec {other:?}: use dag-json or dag-cbor"
            )))
        }
    };
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Bytes::from(out),
    )
        .into_response())
}

/// `dag/put[?store-codec=dag-cbor][&input-codec=dag-json]` with the node as a multipart file.
pub async fn dag_put(State(s): State<ApiState>, req: Request) -> Result<Json<Value>, ApiError> {
    let a = Args::parse(req.uri().query());
    let store = codec_by_name(a.get("store-codec").unwrap_or("dag-cbor"))?;
    let input = codec_by_name(a.get("input-codec").unwrap_or("dag-json"))?;
    let bytes = file_part(req).await?;
    let node: Ipld = match input {
        DAG_JSON => serde_ipld_dagjson::from_slice(&bytes)
            .map_err(|e| ApiError::bad(format!("input is not DAG-JSON: {e}")))?,
        DAG_CBOR => serde_ipld_dagcbor::from_slice(&bytes)
            .map_err(|e| ApiError::bad(format!("input is not DAG-CBOR: {e}")))?,
        _ => return Err(ApiError::bad("input-codec must be dag-json or dag-cbor")),
    };
    let encoded = match store {
        DAG_CBOR => serde_ipld_dagcbor::to_vec(&node).map_err(ApiError::internal)?,
        DAG_JSON => serde_ipld_dagjson::to_vec(&node).map_err(ApiError::internal)?,
        _ => return Err(ApiError::bad("store-codec must be dag-cbor or dag-json")),
    };
    let cid = put_block(&s, store, encoded).await?;
    Ok(Json(json!({"Cid": {"/": cid.to_string()}})))
}
