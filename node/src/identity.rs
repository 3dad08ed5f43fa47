//! The node's Ed25519 identity, kept in the repo directory with mode 0600.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use libp2p::identity::Keypair;

/// Identity file failures.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read the identity key {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write the identity key {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("the identity key {0} is not a libp2p Ed25519 key; restore it from a backup or re-run `node init` in a new repo")]
    Invalid(String),
}

/// Creates a new key file; fails if one exists, so an identity is never overwritten.
pub fn create(path: &Path) -> Result<Keypair, IdentityError> {
    let key = Keypair::generate_ed25519();
    let bytes = key
        .to_protobuf_encoding()
        .expect("ed25519 keys always encode");
    let werr = |source| IdentityError::Write {
        path: path.display().to_string(),
        source,
    };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(werr)?;
    f.write_all(&bytes).map_err(werr)?;
    f.sync_all().map_err(werr)?;
    Ok(key)
}

/// Loads the key, tightening its mode to 0600 if someone loosened it.
pub fn load(path: &Path) -> Result<Keypair, IdentityError> {
    let rerr = |source| IdentityError::Read {
        path: path.display().to_string(),
        source,
    };
    let bytes = fs::read(path).map_err(rerr)?;
    let meta = fs::metadata(path).map_err(rerr)?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(path = %path.display(), "identity key was readable by others; setting mode 0600");
        let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o600));
    }
    Keypair::from_protobuf_encoding(&bytes)
        .map_err(|_| IdentityError::Invalid(path.display().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_then_load_is_stable_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        let a = create(&path).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let b = load(&path).unwrap();
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
        assert!(create(&path).is_err(), "never overwrite an identity");
        fs::write(&path, b"junk").unwrap();
        assert!(matches!(load(&path), Err(IdentityError::Invalid(_))));
    }
}
