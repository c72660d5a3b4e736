//! `cluster-cleanup [PREFIX]`: removes the network namespaces (and their processes)
//! that crashed tests left behind. PREFIX defaults to the tests' own (`mwt`).

fn main() {
    let prefix = std::env::args()
        .nth(1)
        .unwrap_or_else(|| meshward_integration::TEST_PREFIX.to_owned());
    let removed = meshward_integration::remove_by_prefix(&prefix);
    for name in &removed {
        println!("removed namespace {name}");
    }
    println!(
        "{} namespace(s) with prefix {prefix:?} removed",
        removed.len()
    );
}
