//! Who is calling the Workload API: the kernel says (SO_PEERCRED: pid, uid, gid);
//! the pid then names the pod, by its cgroup (the pod UID, on a real node) or its
//! network namespace (the integration environment's pods). The workload does
//! nothing to be recognized.

use std::os::unix::fs::MetadataExt;

use crate::agent::{PodIdentities, Snapshot};

/// The pod of a calling process, if it is one of this node's.
pub(crate) fn pod_of(snapshot: &Snapshot, pid: i32) -> Option<&PodIdentities> {
    if let Some(uid) = cgroup_pod_uid(pid) {
        if let Some(pod) = snapshot.pods.values().find(|p| p.pod.uid == uid) {
            return Some(pod);
        }
    }
    let caller_netns = std::fs::metadata(format!("/proc/{pid}/ns/net")).ok()?;
    snapshot.pods.values().find(|p| {
        p.pod
            .netns
            .as_ref()
            .and_then(|path| std::fs::metadata(path).ok())
            .is_some_and(|m| m.ino() == caller_netns.ino() && m.dev() == caller_netns.dev())
    })
}

/// A local process's selectors, as SPIRE's unix workload attestor names them:
/// `unix:uid:<n>`, `unix:gid:<n>` (real IDs) and `unix:path:<executable>`.
pub(crate) fn unix_selectors(pid: i32) -> Vec<meshward_spiffe::Selector> {
    let mut out = Vec::new();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    for (key, kind) in [("Uid:", "uid"), ("Gid:", "gid")] {
        if let Some(real) = status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
        {
            out.push(unix(format!("{kind}:{real}")));
        }
    }
    if let Ok(path) = std::fs::read_link(format!("/proc/{pid}/exe")) {
        out.push(unix(format!("path:{}", path.display())));
    }
    out
}

fn unix(value: String) -> meshward_spiffe::Selector {
    meshward_spiffe::Selector {
        kind: "unix".into(),
        value,
    }
}

/// The pod UID in `/proc/<pid>/cgroup` (cgroupfs `.../pod<uid>/...` or systemd
/// `...-pod<uid with _>.slice`), as kubelet names pod cgroups.
fn cgroup_pod_uid(pid: i32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines().find_map(parse_pod_uid)
}

fn parse_pod_uid(line: &str) -> Option<String> {
    let path = line.rsplit(':').next()?;
    path.split('/').find_map(|segment| {
        // the last "pod": "kubepods-besteffort-pod<uid>.slice" holds two
        let start = segment.rfind("pod")? + 3;
        let rest = &segment[start..];
        let uid = rest
            .strip_suffix(".slice")
            .unwrap_or(rest)
            .replace('_', "-");
        let is_uid = uid.len() == 36 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
        is_uid.then_some(uid)
    })
}

#[cfg(test)]
mod tests {
    use super::parse_pod_uid;

    #[test]
    fn this_process_has_unix_selectors() {
        let selectors: Vec<String> = super::unix_selectors(std::process::id() as i32)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(
            selectors.iter().any(|s| s.starts_with("unix:uid:")),
            "{selectors:?}"
        );
        assert!(
            selectors.iter().any(|s| s.starts_with("unix:gid:")),
            "{selectors:?}"
        );
        let exe = std::env::current_exe().unwrap();
        assert!(
            selectors.contains(&format!("unix:path:{}", exe.display())),
            "{selectors:?}"
        );
    }

    #[test]
    fn kubelet_cgroup_layouts() {
        let uid = "0b6c8d3e-2f4a-4c1e-9a7b-5e3d2c1b0a99";
        for line in [
            format!("0::/kubepods/besteffort/pod{uid}/4b2f0c"),
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0b6c8d3e_2f4a_4c1e_9a7b_5e3d2c1b0a99.slice/cri-containerd-1.scope".to_owned(),
            format!("11:cpu:/kubepods/pod{uid}/abc"),
        ] {
            assert_eq!(parse_pod_uid(&line).as_deref(), Some(uid), "{line}");
        }
        assert_eq!(
            parse_pod_uid("0::/user.slice/user-0.slice/session-1.scope"),
            None
        );
    }
}
