-- runledger's PostgreSQL schema, version 2: pipelines, pipeline versions, recurring runs (the
-- "catalog"), their tags, and leases.
--
-- One table holds the three kinds (`kind`: 'i' pipeline, 'v' pipeline version, 'j' recurring
-- run), each record as protobuf bytes (`record`; a recurring run's with its schedule state)
-- beside the fields lists filter and sort on, as columns written from the record (a field a
-- kind does not have holds ''). Text is bytea and timestamps are two columns, as in version 1.
CREATE TABLE catalog (
    kind                 "char" NOT NULL,
    id                   bytea NOT NULL,
    namespace            bytea NOT NULL,
    experiment_id        bytea NOT NULL,
    pipeline_id          bytea NOT NULL,
    pipeline_version_id  bytea NOT NULL,
    name                 bytea NOT NULL,
    display_name         bytea NOT NULL,
    description          bytea NOT NULL,
    service_account      bytea NOT NULL,
    status               bytea NOT NULL,
    created_s            bigint NOT NULL,
    created_ns           integer NOT NULL,
    updated_s            bigint NOT NULL,
    updated_ns           integer NOT NULL,
    revision             bigint NOT NULL,
    -- A version's or recurring run's record is without its pipeline spec, which is in `specs`
    -- (whose reference counts every record holding it).
    record               bytea NOT NULL,
    spec_digest          bytea,
    PRIMARY KEY (kind, id)
);
-- Names are unique: a pipeline's in its namespace, a version's in its pipeline.
CREATE UNIQUE INDEX pipeline_names ON catalog (namespace, name) WHERE kind = 'i';
CREATE UNIQUE INDEX pipeline_version_names ON catalog (pipeline_id, name) WHERE kind = 'v';
-- Creation order per scope (a namespace's pipelines, a pipeline's versions, every recurring
-- run, an experiment's, a namespace's).
CREATE INDEX pipelines_by_created ON catalog (namespace, created_s, created_ns, id)
    WHERE kind = 'i';
CREATE INDEX pipeline_versions_by_created ON catalog (pipeline_id, created_s, created_ns, id)
    WHERE kind = 'v';
CREATE INDEX recurring_runs_by_created ON catalog (created_s, created_ns, id) WHERE kind = 'j';
CREATE INDEX recurring_runs_in_experiment_by_created
    ON catalog (experiment_id, created_s, created_ns, id) WHERE kind = 'j';
CREATE INDEX recurring_runs_in_namespace_by_created
    ON catalog (namespace, created_s, created_ns, id) WHERE kind = 'j';
CREATE INDEX specs_of_versions ON catalog (spec_digest) WHERE spec_digest IS NOT NULL;

-- The tags of pipelines and versions (also in their records), for filters on `tags.KEY`;
-- they go with their record.
CREATE TABLE catalog_tags (
    kind   "char" NOT NULL,
    id     bytea NOT NULL,
    key    bytea NOT NULL,
    value  bytea NOT NULL,
    PRIMARY KEY (kind, id, key),
    FOREIGN KEY (kind, id) REFERENCES catalog (kind, id) ON DELETE CASCADE
);

-- Leases (the scheduler's): one holder at a time, until it expires.
CREATE TABLE leases (
    name      bytea PRIMARY KEY,
    holder    bytea NOT NULL,
    until_s   bigint NOT NULL,
    until_ns  integer NOT NULL
);
