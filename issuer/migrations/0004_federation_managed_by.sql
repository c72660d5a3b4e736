-- Who manages a federation relationship: '' for an operator (CLI, issuer.yaml),
-- 'k8s/<name>' for a ClusterFederatedTrustDomain object, which alone may remove it.
ALTER TABLE federation_relationships ADD COLUMN managed_by TEXT NOT NULL DEFAULT '';
