-- Federation relationships (SPIRE's `federation create`): where each foreign
-- trust domain's bundle is fetched from, and how its endpoint is authenticated.
CREATE TABLE federation_relationships (
    trust_domain        TEXT PRIMARY KEY,
    bundle_endpoint_url TEXT NOT NULL,
    profile             TEXT NOT NULL,
    endpoint_spiffe_id  TEXT NOT NULL,
    updated_at          BIGINT NOT NULL
);
