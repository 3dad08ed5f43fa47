//! Test hosts in network namespaces: two bridges joined by a trunk link, so cutting the trunk
//! partitions the hosts into two halves. Traffic stays inside these namespaces.

use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::CommandExt;

/// How long an `ip` command may run (`curl` inside a namespace gives up after 30 s itself).
const IP_TIMEOUT: Duration = Duration::from_secs(60);

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output_within(IP_TIMEOUT)
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Runs curl inside a namespace; returns status and body.
pub fn curl(ns: &str, method: &str, url: &str) -> Result<(u16, String)> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "curl",
            "-s",
            "-m",
            "30",
            "-X",
            method,
            "-w",
            "\n%{http_code}",
            url,
        ])
        .output_within(IP_TIMEOUT)?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    Ok((code.trim().parse().unwrap_or(0), body.to_string()))
}

/// A set of namespaced hosts on two bridged halves.
pub struct Net {
    /// Namespace names of the hosts.
    pub hosts: Vec<String>,
    /// Their addresses.
    pub addrs: Vec<String>,
    hub: String,
}

impl Net {
    /// Hosts `0..left` go on side A, the rest on side B.
    pub fn new(n: usize, left: usize) -> Result<Net> {
        // Unique per network, also between tests of one process running at once.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n_made = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = (std::process::id() * 7 + n_made) % 100_000;
        let hub = format!("snhub{tag}");
        let mut net = Net {
            hosts: Vec::new(),
            addrs: Vec::new(),
            hub: hub.clone(),
        };
        ip(&["netns", "add", &hub]).context("network namespaces need root and iproute2")?;
        for br in ["bra", "brb"] {
            ip(&["-n", &hub, "link", "add", br, "type", "bridge"])?;
            ip(&["-n", &hub, "link", "set", br, "up"])?;
        }
        ip(&[
            "-n", &hub, "link", "add", "trunka", "type", "veth", "peer", "name", "trunkb",
        ])?;
        ip(&["-n", &hub, "link", "set", "trunka", "master", "bra", "up"])?;
        ip(&["-n", &hub, "link", "set", "trunkb", "master", "brb", "up"])?;
        for i in 0..n {
            let ns = format!("sn{tag}h{i}");
            ip(&["netns", "add", &ns])?;
            net.hosts.push(ns.clone());
            let hv = format!("h{i}");
            ip(&[
                "-n", &hub, "link", "add", &hv, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ])?;
            let br = if i < left { "bra" } else { "brb" };
            ip(&["-n", &hub, "link", "set", &hv, "master", br, "up"])?;
            let addr = format!("10.77.{}.{}", tag % 200, i + 1);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            net.addrs.push(addr);
        }
        Ok(net)
    }

    /// Cuts (false) or restores (true) the link between the halves.
    pub fn connect_halves(&self, up: bool) -> Result<()> {
        ip(&[
            "-n",
            &self.hub,
            "link",
            "set",
            "trunka",
            if up { "up" } else { "down" },
        ])
    }

    /// Cuts (false) or restores (true) the link of host `i` alone, cutting it off from all.
    pub fn connect_host(&self, i: usize, up: bool) -> Result<()> {
        let port = format!("h{i}");
        ip(&[
            "-n",
            &self.hub,
            "link",
            "set",
            &port,
            if up { "up" } else { "down" },
        ])
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for h in &self.hosts {
            let _ = ip(&["netns", "del", h]);
        }
        let _ = ip(&["netns", "del", &self.hub]);
    }
}
