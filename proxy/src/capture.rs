//! Capture: the daemon's own iptables chains in the node's network namespace,
//! applied with `iptables-restore --noflush` (iptables-nft on current EKS AMIs and
//! Debian), removed on exit, idempotent on restart.
//!
//! - from a pod interface (`<prefix>+`), to anything but the node itself: TPROXY
//!   (mangle table) to the outbound port. Pod-side interfaces have no address on
//!   EKS (VPC CNI), and REDIRECT needs one; TPROXY does not. The policy route
//!   `fwmark tproxy_mark -> local delivery` comes with it. The listener must be
//!   transparent ([`transparent_listener`]); the original destination is the
//!   accepted socket's local address.
//! - forwarded to a local pod on the HBONE port: REDIRECT (nat) to the inbound HBONE port
//! - forwarded to a local pod otherwise (plaintext): REDIRECT to the inbound plaintext port
//! - the daemon's own HBONE connections to a pod on this node: REDIRECT to the HBONE port
//! - the daemon's own sockets (fwmark `mark`/0xfff): never captured
//! - replies to the daemon's tunnels, which leave from their source pod's address
//!   (transparent sockets): marked like TPROXYed packets (mangle,
//!   `-m socket --transparent`), so the same policy route delivers them to the
//!   daemon instead of forwarding them to the pod
//! - the daemon's passthrough sockets (also [`PASSTHROUGH_MARK`]) towards a pod
//!   interface: dropped (mangle POSTROUTING, where the output interface is the one
//!   after any DNAT; in OUTPUT `-o` still names the route before it). Bytes from a
//!   caller without identity reach a local pod only through that pod's inbound
//!   checks, never by a passthrough that a DNAT (kube-proxy's, say) turned towards
//!   a pod of this node; the daemon's connect then times out and the caller is reset.
//!
//! For REDIRECTed connections the original destination comes back with
//! `SO_ORIGINAL_DST` ([`original_destination`]).

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use crate::config::CaptureConfig;

const PREROUTING: &str = "MESHWARD_PREROUTING";
const OUTPUT: &str = "MESHWARD_OUTPUT";
const DIVERT: &str = "MESHWARD_DIVERT";
const GUARD: &str = "MESHWARD_GUARD";
const REPLIES: &str = "MESHWARD_REPLIES";
/// Added to the daemon's mark on passthrough sockets; outside the 0xfff mask the
/// other rules match, so those sockets are otherwise the daemon's like any other.
pub const PASSTHROUGH_MARK: u32 = 0x1000;
/// fwmark of TPROXYed packets, and the routing table that delivers them locally.
const TPROXY_MARK: u32 = 0x53a;
const TPROXY_TABLE: &str = "1337";
/// Before the VPC CNI's policy rules (to-pod 512, from-pod 1536 and the per-ENI
/// tables), or TPROXYed packets would follow an ENI's table instead of local delivery.
const TPROXY_RULE_PREF: &str = "100";

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{command}: {reason}")]
    Command { command: String, reason: String },
}

/// The `iptables-restore --noflush` input that installs the chains and jumps.
pub fn rules(config: &CaptureConfig) -> String {
    let pods = format!("{}+", config.pod_interface_prefix);
    let mut r = vec![
        "*mangle".to_owned(),
        format!(":{DIVERT} - [0:0]"),
        // traffic for the node itself (kubelet, the daemon's own listeners) is not pod traffic
        format!("-A {DIVERT} -m addrtype --dst-type LOCAL -j RETURN"),
        // a pod answering a connection made to it (an excluded port, say) is not
        // making one: only what the pod originates is taken
        format!("-A {DIVERT} -m conntrack --ctdir REPLY -j RETURN"),
    ];
    let exclusions = |chain: &str, r: &mut Vec<String>| {
        for cidr in &config.exclude_cidrs {
            r.push(format!("-A {chain} -p tcp -d {cidr} -j RETURN"));
        }
        for port in &config.exclude_ports {
            r.push(format!("-A {chain} -p tcp --dport {port} -j RETURN"));
        }
    };
    exclusions(DIVERT, &mut r);
    r.extend([
        format!(
            "-A {DIVERT} -p tcp -j TPROXY --on-port {} --on-ip 0.0.0.0 --tproxy-mark {TPROXY_MARK:#x}/0xfff",
            config.outbound_port
        ),
        format!("-I PREROUTING 1 -i {pods} -p tcp -j {DIVERT}"),
        format!(":{REPLIES} - [0:0]"),
        format!(
            "-A {REPLIES} -p tcp -m socket --transparent -j MARK --set-xmark {TPROXY_MARK:#x}/0xfff"
        ),
        format!("-I PREROUTING 1 ! -i {pods} -p tcp -j {REPLIES}"),
        format!(":{GUARD} - [0:0]"),
        format!(
            "-A {GUARD} -o {pods} -p tcp -m mark --mark {PASSTHROUGH_MARK:#x}/{PASSTHROUGH_MARK:#x} -j DROP"
        ),
        format!("-I POSTROUTING 1 -p tcp -j {GUARD}"),
        "COMMIT".to_owned(),
        "*nat".to_owned(),
        format!(":{PREROUTING} - [0:0]"),
        format!(":{OUTPUT} - [0:0]"),
        format!("-A {PREROUTING} -m addrtype --dst-type LOCAL -j RETURN"),
    ]);
    exclusions(PREROUTING, &mut r);
    r.extend([
        format!(
            "-A {PREROUTING} -p tcp --dport {0} -j REDIRECT --to-ports {0}",
            config.inbound_hbone_port
        ),
        format!(
            "-A {PREROUTING} -p tcp -j REDIRECT --to-ports {}",
            config.inbound_plaintext_port
        ),
        // same-node HBONE: the daemon tunnels to a pod here, so it must reach itself
        format!(
            "-A {OUTPUT} -p tcp -o {pods} --dport {0} -j REDIRECT --to-ports {0}",
            config.inbound_hbone_port
        ),
        format!(
            "-A {OUTPUT} -m mark --mark {:#x}/0xfff -j RETURN",
            config.mark
        ),
        // pods' own traffic is TPROXYed in mangle; only what comes from elsewhere is inbound
        format!("-I PREROUTING 1 ! -i {pods} -p tcp -j {PREROUTING}"),
        format!("-I OUTPUT 1 -p tcp -j {OUTPUT}"),
        "COMMIT".to_owned(),
    ]);
    r.join("\n") + "\n"
}

/// Which iptables the node's kubelet, kube-proxy and CNI program: rules of the
/// other backend would be invisible to them and mixing both breaks pod traffic
/// (Bottlerocket's switch to nf_tables showed it). Detected by whose tables hold
/// Kubernetes or VPC CNI chains; `iptables` (the system's alternative) when
/// neither does, as in a fresh network namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Nft,
    Legacy,
    System,
}

impl Backend {
    fn detect() -> Self {
        let save = |command: &str| {
            Command::new(command)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        Self::choose(&save("iptables-nft-save"), &save("iptables-legacy-save"))
    }

    fn choose(nft_rules: &str, legacy_rules: &str) -> Self {
        let kubernetes = |rules: &str| {
            rules
                .lines()
                .filter(|l| l.starts_with(':') && (l.contains("KUBE-") || l.contains("AWS-")))
                .count()
        };
        match (kubernetes(nft_rules), kubernetes(legacy_rules)) {
            (0, 0) => Self::System,
            (nft, legacy) if nft >= legacy => Self::Nft,
            _ => Self::Legacy,
        }
    }

    fn command(self) -> &'static str {
        match self {
            Self::Nft => "iptables-nft",
            Self::Legacy => "iptables-legacy",
            Self::System => "iptables",
        }
    }
}

/// The policy routing TPROXY needs: marked packets are delivered locally.
fn route_commands() -> [Vec<String>; 2] {
    [
        [
            "rule",
            "add",
            "fwmark",
            &format!("{TPROXY_MARK:#x}/0xfff"),
            "lookup",
            TPROXY_TABLE,
            "pref",
            TPROXY_RULE_PREF,
        ]
        .map(str::to_owned)
        .to_vec(),
        [
            "route",
            "add",
            "local",
            "0.0.0.0/0",
            "dev",
            "lo",
            "table",
            TPROXY_TABLE,
        ]
        .map(str::to_owned)
        .to_vec(),
    ]
}

/// Installs the chains. Where they are in place already, with every jump (a
/// daemon still serving the node during an upgrade, or one that kept them on
/// exit), only the chains' contents are replaced, one atomic restore per table,
/// so no packet passes uncaptured meanwhile; otherwise what an earlier run left is
/// removed first.
pub fn install(config: &CaptureConfig) -> Result<(), CaptureError> {
    let backend = Backend::detect();
    if jumps_installed(config, backend) {
        tracing::info!("capture rules in place: refilling the chains without a gap");
        return restore(backend, &without_jumps(&rules(config)));
    }
    remove_with(config, backend);
    restore(backend, &rules(config))?;
    for args in route_commands() {
        let out = Command::new("ip")
            .args(&args)
            .output()
            .map_err(|e| CaptureError::Command {
                command: format!("ip {}", args.join(" ")),
                reason: format!("{e} (install iproute2)"),
            })?;
        if !out.status.success() {
            return Err(CaptureError::Command {
                command: format!("ip {}", args.join(" ")),
                reason: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
    }
    Ok(())
}

/// `iptables-restore --noflush` of `input`; a chain it declares is flushed and
/// refilled in the same transaction.
fn restore(backend: Backend, input: &str) -> Result<(), CaptureError> {
    let restore = format!("{}-restore", backend.command());
    let failed = |reason: String| CaptureError::Command {
        command: format!("{restore} --noflush"),
        reason,
    };
    let mut child = Command::new(&restore)
        .arg("--noflush")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(format!("{e} (install iptables)")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| failed(e.to_string()))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| failed(e.to_string()))?;
    if !out.status.success() {
        return Err(failed(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    Ok(())
}

/// The jumps from the built-in chains (`-I <chain> 1 <rule>`) of `rules`, with
/// their tables.
fn jumps(rules: &str) -> Vec<(&str, &str, &str)> {
    let mut table = "";
    let mut jumps = Vec::new();
    for line in rules.lines() {
        if let Some(name) = line.strip_prefix('*') {
            table = name;
        } else if let Some(rest) = line.strip_prefix("-I ")
            && let Some((chain, rule)) = rest.split_once(" 1 ")
        {
            jumps.push((table, chain, rule));
        }
    }
    jumps
}

fn without_jumps(rules: &str) -> String {
    rules
        .lines()
        .filter(|line| !line.starts_with("-I "))
        .map(|line| format!("{line}\n"))
        .collect()
}

/// Whether every jump into the daemon's chains is in place (`iptables -C`).
fn jumps_installed(config: &CaptureConfig, backend: Backend) -> bool {
    let rules = rules(config);
    jumps(&rules).iter().all(|(table, chain, rule)| {
        Command::new(backend.command())
            .args(["-t", table, "-C", chain])
            .args(rule.split_whitespace())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Removes the jumps, the chains and the policy route; quiet when they are not there.
pub fn remove(config: &CaptureConfig) {
    remove_with(config, Backend::detect());
}

fn remove_with(config: &CaptureConfig, backend: Backend) {
    let pods = format!("{}+", config.pod_interface_prefix);
    let table = |table: &str, args: &[&str]| {
        Command::new(backend.command())
            .args(["-w", "5", "-t", table])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let iptables = |args: &[&str]| table("nat", args);
    let mangle = |args: &[&str]| table("mangle", args);
    // a jump may have been added more than once by a crashed run: delete until gone
    for _ in 0..16 {
        if !iptables(&[
            "-D",
            "PREROUTING",
            "!",
            "-i",
            &pods,
            "-p",
            "tcp",
            "-j",
            PREROUTING,
        ]) {
            break;
        }
    }
    for _ in 0..16 {
        if !iptables(&["-D", "OUTPUT", "-p", "tcp", "-j", OUTPUT]) {
            break;
        }
    }
    for chain in [PREROUTING, OUTPUT] {
        iptables(&["-F", chain]);
        iptables(&["-X", chain]);
    }
    for _ in 0..16 {
        if !mangle(&["-D", "POSTROUTING", "-p", "tcp", "-j", GUARD]) {
            break;
        }
    }
    // the jump carries the pod interface match: find it by listing
    let listed = Command::new(backend.command())
        .args(["-w", "5", "-t", "mangle", "-S", "PREROUTING"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for line in listed
        .lines()
        .filter(|l| l.ends_with(&format!("-j {DIVERT}")) || l.ends_with(&format!("-j {REPLIES}")))
    {
        let spec: Vec<&str> = line
            .trim_start_matches("-A PREROUTING ")
            .split_whitespace()
            .collect();
        let mut args = vec!["-D", "PREROUTING"];
        args.extend(spec);
        mangle(&args);
    }
    for chain in [DIVERT, REPLIES, GUARD] {
        mangle(&["-F", chain]);
        mangle(&["-X", chain]);
    }
    for args in route_commands() {
        let mut delete: Vec<String> = args.clone();
        delete[1] = "del".into();
        let _ = Command::new("ip")
            .args(&delete)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A listener for TPROXYed connections (IP_TRANSPARENT: it accepts connections
/// to any address); the original destination is each accepted socket's local
/// address. Blocking, as `std`'s; shared with a successor daemon like every
/// listener ([`listener`]).
pub fn transparent_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = listener(addr, true)?;
    listener.set_nonblocking(false)?;
    Ok(listener)
}

/// A listening socket on `addr` (non-blocking) that a second daemon on the node
/// may bind too (SO_REUSEPORT): during an upgrade the new daemon listens beside
/// the old one, and the kernel hands connections to both until the old one closes
/// its listener, when those still queued on it move to the new one
/// (`net.ipv4.tcp_migrate_req`, [`enable_listener_handover`]).
pub fn listener(addr: SocketAddr, transparent: bool) -> std::io::Result<std::net::TcpListener> {
    bind(addr, transparent)?.listen()
}

/// A socket bound as [`listener`]'s, not yet listening: until it listens, the
/// kernel gives it no connection, so a daemon claims its ports at start and
/// takes connections only once it can serve them.
pub struct BoundSocket(BoundKind);

enum BoundKind {
    V4(std::os::fd::OwnedFd),
    /// The data path is IPv4; an admin or metrics address may not be.
    V6(std::net::TcpListener),
}

pub fn bind(addr: SocketAddr, transparent: bool) -> std::io::Result<BoundSocket> {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn, setsockopt, socket, sockopt,
    };
    let v4 = match addr {
        SocketAddr::V4(v4) => v4,
        SocketAddr::V6(_) if !transparent => {
            let listener = std::net::TcpListener::bind(addr)?;
            listener.set_nonblocking(true)?;
            return Ok(BoundSocket(BoundKind::V6(listener)));
        }
        SocketAddr::V6(_) => {
            return Err(std::io::Error::other("transparent listeners are IPv4 here"));
        }
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    setsockopt(&fd, sockopt::ReusePort, &true)?;
    if transparent {
        setsockopt(&fd, sockopt::IpTransparent, &true)?;
    }
    nix::sys::socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(v4))?;
    Ok(BoundSocket(BoundKind::V4(fd)))
}

impl BoundSocket {
    pub fn listen(self) -> std::io::Result<std::net::TcpListener> {
        use nix::sys::socket::{Backlog, listen};
        match self.0 {
            BoundKind::V4(fd) => {
                listen(&fd, Backlog::new(1024).unwrap_or(Backlog::MAXCONN))?;
                Ok(std::net::TcpListener::from(fd))
            }
            BoundKind::V6(listener) => Ok(listener),
        }
    }
}

/// `net.ipv4.tcp_migrate_req = 1` in this network namespace: when a daemon closes
/// a listener it shares with a successor, the connections queued on it (and those
/// mid-handshake) move to the successor's instead of being reset. Linux 5.14+; on
/// an older kernel, or without the right to write it, an upgrade may reset the few
/// connections queued at that instant (logged).
pub fn enable_listener_handover() {
    const SYSCTL: &str = "/proc/sys/net/ipv4/tcp_migrate_req";
    if let Err(e) = std::fs::write(SYSCTL, "1") {
        tracing::warn!(
            "cannot set {SYSCTL}: {e}: an upgrade may reset connections queued on the old daemon's listeners"
        );
    }
}

/// The destination a REDIRECTed connection was made to.
pub fn original_destination(stream: &impl std::os::fd::AsFd) -> std::io::Result<SocketAddr> {
    let addr = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::OriginalDst)?;
    let ip = std::net::Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
    Ok(SocketAddr::from((ip, u16::from_be(addr.sin_port))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_jumps_are_the_rules_inserted_into_built_in_chains() {
        let rules = rules(&CaptureConfig::default());
        let jumps = jumps(&rules);
        assert_eq!(jumps.len(), 5, "{jumps:?}");
        assert!(jumps.contains(&("mangle", "PREROUTING", "-i eni+ -p tcp -j MESHWARD_DIVERT")));
        assert!(jumps.contains(&("nat", "OUTPUT", "-p tcp -j MESHWARD_OUTPUT")));
        let refill = without_jumps(&rules);
        assert!(!refill.contains("-I "));
        assert_eq!(refill.lines().count() + 5, rules.lines().count());
    }

    #[test]
    fn the_backend_is_the_one_kubernetes_uses() {
        let kube = "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-POSTROUTING - [0:0]\nCOMMIT\n";
        let cni = "*nat\n:AWS-SNAT-CHAIN-0 - [0:0]\nCOMMIT\n";
        assert_eq!(Backend::choose(kube, ""), Backend::Nft);
        assert_eq!(Backend::choose("", cni), Backend::Legacy);
        assert_eq!(Backend::choose("*nat\nCOMMIT\n", ""), Backend::System);
        assert_eq!(Backend::choose(cni, kube), Backend::Legacy);
    }

    #[test]
    fn rules_read_as_documented() {
        let config = CaptureConfig {
            pod_interface_prefix: "veth".into(),
            exclude_ports: vec![10250],
            exclude_cidrs: vec!["169.254.0.0/16".into()],
            ..CaptureConfig::default()
        };
        let text = rules(&config);
        let expected = [
            "*mangle",
            ":MESHWARD_DIVERT - [0:0]",
            "-A MESHWARD_DIVERT -m addrtype --dst-type LOCAL -j RETURN",
            "-A MESHWARD_DIVERT -m conntrack --ctdir REPLY -j RETURN",
            "-A MESHWARD_DIVERT -p tcp -d 169.254.0.0/16 -j RETURN",
            "-A MESHWARD_DIVERT -p tcp --dport 10250 -j RETURN",
            "-A MESHWARD_DIVERT -p tcp -j TPROXY --on-port 15001 --on-ip 0.0.0.0 --tproxy-mark 0x53a/0xfff",
            "-I PREROUTING 1 -i veth+ -p tcp -j MESHWARD_DIVERT",
            ":MESHWARD_REPLIES - [0:0]",
            "-A MESHWARD_REPLIES -p tcp -m socket --transparent -j MARK --set-xmark 0x53a/0xfff",
            "-I PREROUTING 1 ! -i veth+ -p tcp -j MESHWARD_REPLIES",
            ":MESHWARD_GUARD - [0:0]",
            "-A MESHWARD_GUARD -o veth+ -p tcp -m mark --mark 0x1000/0x1000 -j DROP",
            "-I POSTROUTING 1 -p tcp -j MESHWARD_GUARD",
            "COMMIT",
            "*nat",
            ":MESHWARD_PREROUTING - [0:0]",
            ":MESHWARD_OUTPUT - [0:0]",
            "-A MESHWARD_PREROUTING -m addrtype --dst-type LOCAL -j RETURN",
            "-A MESHWARD_PREROUTING -p tcp -d 169.254.0.0/16 -j RETURN",
            "-A MESHWARD_PREROUTING -p tcp --dport 10250 -j RETURN",
            "-A MESHWARD_PREROUTING -p tcp --dport 15008 -j REDIRECT --to-ports 15008",
            "-A MESHWARD_PREROUTING -p tcp -j REDIRECT --to-ports 15006",
            "-A MESHWARD_OUTPUT -p tcp -o veth+ --dport 15008 -j REDIRECT --to-ports 15008",
            "-A MESHWARD_OUTPUT -m mark --mark 0x539/0xfff -j RETURN",
            "-I PREROUTING 1 ! -i veth+ -p tcp -j MESHWARD_PREROUTING",
            "-I OUTPUT 1 -p tcp -j MESHWARD_OUTPUT",
            "COMMIT",
        ];
        assert_eq!(text.lines().collect::<Vec<_>>(), expected);
    }
}
