//! Removes what crashed tests left behind: every namespace whose name starts with a
//! prefix, and the processes inside them.

use crate::netns::{self, Netns};

/// Deletes the namespaces named `prefix*`; returns their names.
pub fn remove_by_prefix(prefix: &str) -> Vec<String> {
    let mut removed = Vec::new();
    for name in netns::list().into_iter().filter(|n| n.starts_with(prefix)) {
        netns::kill_all(&netns::pids_in(&name));
        // Adopting the name makes `Netns::drop` delete it.
        drop(Netns::adopt(&name));
        removed.push(name);
    }
    removed
}
