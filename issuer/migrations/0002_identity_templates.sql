-- ClusterSPIFFEID-like identity templates: one row per template, the spec as JSON.
CREATE TABLE identity_templates (
    name       TEXT PRIMARY KEY,
    spec       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
