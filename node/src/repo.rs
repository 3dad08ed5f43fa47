//! The repo directory: where it is, what it holds, `init`, and the `api` file the CLI reads.

use std::fs;
use std::path::{Path, PathBuf};

use libp2p::identity::Keypair;

use crate::config::FileConfig;
use crate::identity;

/// Repo failures; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("a sensornet repo already exists at {0}; use it with `node daemon`, or pass --repo DIR for a new one")]
    Exists(String),
    #[error("no sensornet repo at {0}; run `node init` first (or `node daemon --init`)")]
    Missing(String),
    #[error("cannot create the repo directory {path}: {source}")]
    Create {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    #[error("config file {path}: {detail}")]
    Config { path: String, detail: String },
}

/// A repo directory and the files in it.
#[derive(Debug, Clone)]
pub struct Repo {
    root: PathBuf,
}

impl Repo {
    /// The repo at `root` (not checked).
    pub fn at(root: impl Into<PathBuf>) -> Repo {
        Repo { root: root.into() }
    }

    /// `--repo`, else `$SENSORNET_PATH` (clap fills both into `flag`), else `~/.sensornet`.
    pub fn locate(flag: Option<&Path>) -> Repo {
        if let Some(p) = flag {
            return Repo::at(p);
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| ".".into());
        Repo::at(home.join(".sensornet"))
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// `config.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    /// `identity.key` (mode 0600).
    pub fn identity_path(&self) -> PathBuf {
        self.root.join("identity.key")
    }
    /// `blocks.redb`, the block store.
    pub fn store_path(&self) -> PathBuf {
        self.root.join("blocks.redb")
    }
    /// `api`: the running daemon's API multiaddr.
    pub fn api_file(&self) -> PathBuf {
        self.root.join("api")
    }
    /// `daemon.json`: the running daemon's [`DaemonInfo`] (peer id, every address, pid).
    pub fn daemon_file(&self) -> PathBuf {
        self.root.join("daemon.json")
    }
    /// `mqtt-sessions.json`: the MQTT listener's persistent sessions.
    pub fn mqtt_sessions_path(&self) -> PathBuf {
        self.root.join("mqtt-sessions.json")
    }
    /// `swarm.key`: the private-network key, if the swarm is private.
    pub fn swarm_key_path(&self) -> PathBuf {
        self.root.join("swarm.key")
    }

    /// Whether the repo has been initialised.
    pub fn exists(&self) -> bool {
        self.identity_path().exists()
    }

    /// Creates the directory, a default config and a new identity; refuses an existing repo.
    pub fn init(&self) -> Result<Keypair, RepoError> {
        if self.exists() {
            return Err(RepoError::Exists(self.root.display().to_string()));
        }
        let cerr = |source| RepoError::Create {
            path: self.root.display().to_string(),
            source,
        };
        fs::create_dir_all(&self.root).map_err(cerr)?;
        if !self.config_path().exists() {
            // Durable before init reports success: a power cut must not leave an empty file.
            write_synced(&self.config_path(), FileConfig::default_toml().as_bytes())
                .map_err(cerr)?;
        }
        Ok(identity::create(&self.identity_path())?)
    }

    /// Loads the identity of an initialised repo.
    pub fn identity(&self) -> Result<Keypair, RepoError> {
        if !self.exists() {
            return Err(RepoError::Missing(self.root.display().to_string()));
        }
        Ok(identity::load(&self.identity_path())?)
    }

    /// Reads `config.toml` (defaults when absent).
    pub fn file_config(&self) -> Result<FileConfig, RepoError> {
        let path = self.config_path();
        match fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| RepoError::Config {
                path: path.display().to_string(),
                detail: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileConfig::default()),
            Err(e) => Err(RepoError::Config {
                path: path.display().to_string(),
                detail: e.to_string(),
            }),
        }
    }

    /// The API address a running daemon wrote, as HOST:PORT.
    pub fn read_api_file(&self) -> Option<String> {
        let text = fs::read_to_string(self.api_file()).ok()?;
        multiaddr_to_host_port(text.trim())
    }
}

/// What a running daemon writes to `REPO/daemon.json` once every listener is bound (before
/// the `api` file, so a present `api` file means this one is complete); removed at exit.
/// Scripts and the test harness read it instead of scraping the daemon's output.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DaemonInfo {
    /// The daemon's process id (tells a stale file from a crashed run apart).
    pub pid: u32,
    /// Peer id.
    #[serde(rename = "ID")]
    pub id: String,
    /// Swarm listen addresses, without `/p2p/…`.
    pub swarm: Vec<String>,
    /// API multiaddr.
    #[serde(rename = "API")]
    pub api: String,
    /// Metrics/health multiaddr.
    pub metrics: String,
    /// MQTT listener multiaddr; absent when `--mqtt-addr off` (and in older files).
    #[serde(rename = "MQTT", default, skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<String>,
}

impl DaemonInfo {
    /// Writes the file atomically (temporary file, then rename).
    pub fn write(&self, repo: &Repo) -> std::io::Result<()> {
        let tmp = repo.root.join(".daemon.json.tmp");
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        write_synced(&tmp, text.as_bytes())?;
        fs::rename(&tmp, repo.daemon_file())
    }

    /// Reads the file of a running (or crashed) daemon.
    pub fn read(repo: &Repo) -> Option<DaemonInfo> {
        let text = fs::read_to_string(repo.daemon_file()).ok()?;
        serde_json::from_str(&text).ok()
    }
}

/// Writes a file and fsyncs it, so a rename or a success report after it is durable.
pub fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// `/ip4/127.0.0.1/tcp/5001` → `127.0.0.1:5001` (also `/ip6/…` and `/dns4/…`).
pub fn multiaddr_to_host_port(ma: &str) -> Option<String> {
    let parts: Vec<&str> = ma.split('/').collect();
    match parts.as_slice() {
        ["", "ip4" | "dns4" | "dns", host, "tcp", port, ..] => Some(format!("{host}:{port}")),
        ["", "ip6" | "dns6", host, "tcp", port, ..] => Some(format!("[{host}]:{port}")),
        _ => None,
    }
}

/// `127.0.0.1:5001` → `/ip4/127.0.0.1/tcp/5001`.
pub fn socket_to_multiaddr(addr: &std::net::SocketAddr) -> String {
    match addr {
        std::net::SocketAddr::V4(a) => format!("/ip4/{}/tcp/{}", a.ip(), a.port()),
        std::net::SocketAddr::V6(a) => format!("/ip6/{}/tcp/{}", a.ip(), a.port()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_refuses_existing_and_addresses_convert() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo::at(dir.path().join("r"));
        let id = repo.init().unwrap();
        assert_eq!(repo.identity().unwrap().public(), id.public());
        let err = repo.init().unwrap_err().to_string();
        assert!(err.contains("already exists"), "{err}");
        assert!(repo.file_config().is_ok());
        assert_eq!(
            multiaddr_to_host_port("/ip4/127.0.0.1/tcp/5001").as_deref(),
            Some("127.0.0.1:5001")
        );
        let info = DaemonInfo {
            pid: 7,
            id: "12D3KooW".into(),
            swarm: vec!["/ip4/127.0.0.1/tcp/4001".into()],
            api: "/ip4/127.0.0.1/tcp/5001".into(),
            metrics: "/ip4/127.0.0.1/tcp/9090".into(),
            mqtt: Some("/ip4/127.0.0.1/tcp/1883".into()),
        };
        info.write(&repo).unwrap();
        assert_eq!(DaemonInfo::read(&repo), Some(info));
        let sa: std::net::SocketAddr = "127.0.0.1:5001".parse().unwrap();
        assert_eq!(socket_to_multiaddr(&sa), "/ip4/127.0.0.1/tcp/5001");
    }
}
