//! Builds the swarm: TCP + Noise + Yamux and QUIC-v1, or TCP behind a pre-shared key
//! (libp2p pnet) when the swarm is private; DNS names resolve at dial time.

use std::path::Path;
use std::time::Duration;

use libp2p::core::upgrade;
use libp2p::identity::Keypair;
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::{noise, tcp, yamux, Swarm, SwarmBuilder, Transport};
use prometheus_client::registry::Registry;

use super::behaviour::Behaviour;

/// Reads an IPFS `swarm.key` (`/key/swarm/psk/1.0.0/`, `/base16/`, 64 hex digits).
pub fn read_swarm_key(path: &Path) -> anyhow::Result<PreSharedKey> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read swarm key {}: {e}", path.display()))?;
    text.parse().map_err(|e| {
        anyhow::anyhow!(
            "swarm key {} is not in the IPFS swarm.key format ({e:?}); generate one with `node swarm-key`",
            path.display()
        )
    })
}

/// A new random key in the IPFS `swarm.key` format.
pub fn generate_swarm_key() -> String {
    let key: [u8; 32] = rand::random();
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    format!("/key/swarm/psk/1.0.0/\n/base16/\n{hex}\n")
}

/// The swarm with every transport; `psk` turns the network private and QUIC off.
pub fn build(
    key: Keypair,
    psk: Option<PreSharedKey>,
    behaviour: Behaviour,
    registry: &mut Registry,
) -> anyhow::Result<Swarm<Behaviour>> {
    let tcp_config = tcp::Config::default().nodelay(true);
    let idle = |c: libp2p::swarm::Config| c.with_idle_connection_timeout(Duration::from_secs(120));
    let swarm = match psk {
        None => SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_tcp(tcp_config, noise::Config::new, yamux::Config::default)?
            .with_quic()
            .with_dns()?
            .with_bandwidth_metrics(registry)
            .with_behaviour(|_| behaviour)?
            .with_swarm_config(idle)
            .build(),
        Some(psk) => SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_other_transport(
                move |key| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
                    let noise = noise::Config::new(key)?;
                    Ok(tcp::tokio::Transport::new(tcp_config)
                        .and_then(move |socket, _| PnetConfig::new(psk).handshake(socket))
                        .upgrade(upgrade::Version::V1Lazy)
                        .authenticate(noise)
                        .multiplex(yamux::Config::default()))
                },
            )?
            .with_dns()?
            .with_bandwidth_metrics(registry)
            .with_behaviour(|_| behaviour)?
            .with_swarm_config(idle)
            .build(),
    };
    Ok(swarm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_parses() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("swarm.key");
        std::fs::write(&p, generate_swarm_key()).unwrap();
        assert!(read_swarm_key(&p).is_ok());
        std::fs::write(&p, "nonsense").unwrap();
        assert!(read_swarm_key(&p)
            .unwrap_err()
            .to_string()
            .contains("node swarm-key"));
    }
}
