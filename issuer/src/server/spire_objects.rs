//! The one watch both ClusterSPIFFEID and ClusterFederatedTrustDomain objects come
//! through: cluster-scoped `spire.spiffe.io/v1alpha1` kinds, as
//! spire-controller-manager defines them, retried with kube's backoff.

use futures_util::{Stream, StreamExt as _};
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};

/// Every event of `kind` (`plural` in URLs) until the process ends.
pub(crate) fn watch(
    client: kube::Client,
    kind: &str,
    plural: &str,
) -> impl Stream<Item = Result<Event<DynamicObject>, watcher::Error>> + Send + Unpin {
    let resource = ApiResource {
        group: "spire.spiffe.io".into(),
        version: "v1alpha1".into(),
        api_version: "spire.spiffe.io/v1alpha1".into(),
        kind: kind.into(),
        plural: plural.into(),
    };
    let api: kube::Api<DynamicObject> = kube::Api::all_with(client, &resource);
    watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed()
}
