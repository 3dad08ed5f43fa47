//! A typed client of the daemon's API, used by the CLI commands.

use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

/// Client failures, each with what to do.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the sensornet daemon at {0}; start it with `node daemon` (or pass --api HOST:PORT)")]
    Unreachable(String),
    #[error("{0}")]
    Api(String),
    #[error("the daemon at {addr} answered badly: {detail}")]
    Protocol { addr: String, detail: String },
}

/// HTTP client of one daemon.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    addr: String,
    token: Option<String>,
}

impl Client {
    /// A client of the API at HOST:PORT.
    pub fn new(addr: &str, token: Option<String>) -> Client {
        Client {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .build()
                .expect("building an HTTP client"),
            addr: addr.to_string(),
            token,
        }
    }

    fn request(&self, path: &str, args: &[(&str, String)]) -> reqwest::RequestBuilder {
        let mut url = format!("http://{}/api/v0/{path}", self.addr);
        if !args.is_empty() {
            let q: String = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(args.iter().map(|(k, v)| (*k, v.as_str())))
                .finish();
            url.push('?');
            url.push_str(&q);
        }
        let mut req = self.http.post(url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        req
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let resp = req.send().await.map_err(|e| {
            if e.is_connect() || e.is_timeout() {
                ClientError::Unreachable(self.addr.clone())
            } else {
                ClientError::Protocol {
                    addr: self.addr.clone(),
                    detail: e.to_string(),
                }
            }
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let msg = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["Message"].as_str().map(str::to_string))
            .unwrap_or(text);
        Err(ClientError::Api(format!(
            "{msg} (HTTP {})",
            status.as_u16()
        )))
    }

    /// POSTs and returns the raw body.
    pub async fn bytes(&self, path: &str, args: &[(&str, String)]) -> Result<Vec<u8>, ClientError> {
        let resp = self.send(self.request(path, args)).await?;
        resp.bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| ClientError::Protocol {
                addr: self.addr.clone(),
                detail: e.to_string(),
            })
    }

    /// POSTs and parses one JSON answer.
    pub async fn json(&self, path: &str, args: &[(&str, String)]) -> Result<Value, ClientError> {
        let body = self.bytes(path, args).await?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Protocol {
            addr: self.addr.clone(),
            detail: format!("not JSON: {e}"),
        })
    }

    /// POSTs a multipart file and parses the JSON answer.
    pub async fn upload(
        &self,
        path: &str,
        args: &[(&str, String)],
        data: Vec<u8>,
    ) -> Result<Value, ClientError> {
        let form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(data).file_name("data"),
        );
        let resp = self.send(self.request(path, args).multipart(form)).await?;
        let body = resp.bytes().await.map_err(|e| ClientError::Protocol {
            addr: self.addr.clone(),
            detail: e.to_string(),
        })?;
        if body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&body).map_err(|e| ClientError::Protocol {
            addr: self.addr.clone(),
            detail: format!("not JSON: {e}"),
        })
    }

    /// POSTs and calls `each` with every JSON line of a stream until it returns false.
    pub async fn stream(
        &self,
        path: &str,
        args: &[(&str, String)],
        mut each: impl FnMut(Value) -> bool,
    ) -> Result<(), ClientError> {
        let resp = self.send(self.request(path, args)).await?;
        let mut body = resp.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| ClientError::Protocol {
                addr: self.addr.clone(),
                detail: format!("stream broke: {e}; is the daemon still running?"),
            })?;
            buf.extend_from_slice(&chunk);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                let line = &line[..line.len() - 1];
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                if let Ok(v) = serde_json::from_slice(line) {
                    if !each(v) {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }
}
