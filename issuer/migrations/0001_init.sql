-- The issuer's state. Portable SQL for SQLite and PostgreSQL: TEXT, BIGINT (times
-- are Unix seconds, booleans 0/1, lists are canonical JSON text).

CREATE TABLE registration_entries (
    id             TEXT PRIMARY KEY,
    spiffe_id      TEXT NOT NULL,
    parent_id      TEXT NOT NULL,
    selectors      TEXT NOT NULL,
    x509_svid_ttl  BIGINT NOT NULL,
    jwt_svid_ttl   BIGINT NOT NULL,
    dns_names      TEXT NOT NULL,
    federates_with TEXT NOT NULL,
    admin          BIGINT NOT NULL,
    downstream     BIGINT NOT NULL,
    hint           TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    revision       BIGINT NOT NULL,
    UNIQUE (spiffe_id, parent_id, selectors)
);
CREATE INDEX registration_entries_parent ON registration_entries (parent_id);

CREATE TABLE attested_nodes (
    spiffe_id        TEXT PRIMARY KEY,
    attestation_type TEXT NOT NULL,
    selectors        TEXT NOT NULL,
    serial           TEXT NOT NULL,
    expires_at       BIGINT NOT NULL,
    banned           BIGINT NOT NULL,
    can_reattest     BIGINT NOT NULL,
    created_at       BIGINT NOT NULL
);

CREATE TABLE join_tokens (
    token      TEXT PRIMARY KEY,
    spiffe_id  TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE TABLE federated_bundles (
    trust_domain TEXT PRIMARY KEY,
    bundle       TEXT NOT NULL,
    updated_at   BIGINT NOT NULL
);

-- spiffe_sequence of the own bundle: bumped on every change
CREATE TABLE bundle_sequence (
    trust_domain TEXT PRIMARY KEY,
    sequence     BIGINT NOT NULL
);

-- the public half of every CA generation of every issuer instance (HA: all of them
-- are in the bundle)
CREATE TABLE ca_journal (
    id           TEXT PRIMARY KEY,
    instance     TEXT NOT NULL,
    certificate  TEXT NOT NULL,
    jwt_kid      TEXT NOT NULL,
    jwt_x        TEXT NOT NULL,
    jwt_y        TEXT NOT NULL,
    not_before   BIGINT NOT NULL,
    not_after    BIGINT NOT NULL
);

-- leader leases, e.g. who may rotate the CA now
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
