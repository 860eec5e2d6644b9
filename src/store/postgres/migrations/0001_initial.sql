-- runledger's PostgreSQL schema, version 1.
--
-- Records are protobuf bytes (`record`); the fields lists filter and sort on are copied into
-- columns beside them ("hot fields"), written from the record in the same statement. Text a
-- client chose is bytea: it compares byte by byte like the embedded store (UTF-8 order, no
-- collation) and may hold any character, NUL included. A timestamp is two columns, seconds
-- and nanos (full precision); an unset one is (-9223372036854775808, 0), earlier than every
-- set one, as lists compare it.

-- Aborts the statement (and its transaction) with `message`: how a write's SQL refuses a
-- result it must never produce (a counter below zero), so that COMMIT can be sent with it.
CREATE FUNCTION runledger_fail(message text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%', message USING ERRCODE = 'check_violation';
END
$$;

-- The page-token signing key and other per-database values.
CREATE TABLE settings (
    name  text PRIMARY KEY,
    value bytea NOT NULL
);

-- Every record write takes a new number from here: a revision is never reused, not even by a
-- record deleted and created again with the same id.
CREATE SEQUENCE revisions;

CREATE TABLE experiments (
    experiment_id  bytea PRIMARY KEY,
    namespace      bytea NOT NULL,
    display_name   bytea NOT NULL,
    description    bytea NOT NULL,
    created_s      bigint NOT NULL,
    created_ns     integer NOT NULL,
    storage_state  bytea NOT NULL,
    -- Raised by every new run in the experiment, never lowered; the record's own value is
    -- replaced by this one when read.
    last_run_s     bigint NOT NULL,
    last_run_ns    integer NOT NULL,
    revision       bigint NOT NULL,
    record         bytea NOT NULL,
    CONSTRAINT experiment_name_unique UNIQUE (namespace, display_name)
);
CREATE INDEX experiments_by_created ON experiments (created_s, created_ns, experiment_id);
CREATE INDEX experiments_by_namespace_created
    ON experiments (namespace, created_s, created_ns, experiment_id);
CREATE INDEX experiments_by_name ON experiments (display_name, experiment_id);

-- The experiment a namespace's runs go to when they name none; set once per namespace.
CREATE TABLE default_experiments (
    namespace      bytea PRIMARY KEY,
    experiment_id  bytea NOT NULL REFERENCES experiments (experiment_id) ON DELETE CASCADE
);
CREATE INDEX default_experiments_by_experiment ON default_experiments (experiment_id);

-- Pipeline specs (google.protobuf.Struct encodings), each distinct one stored once, keyed by
-- its SHA-256. `refs` counts the runs that hold it. A spec whose count fell to 0 is removed
-- once no retained change names it either (see `changes`).
CREATE TABLE specs (
    digest  bytea PRIMARY KEY,
    bytes   bytea NOT NULL,
    refs    bigint NOT NULL CHECK (refs >= 0)
);
CREATE INDEX specs_unreferenced ON specs (digest) WHERE refs = 0;

CREATE TABLE runs (
    run_id            bytea PRIMARY KEY,
    experiment_id     bytea NOT NULL REFERENCES experiments (experiment_id),
    namespace         bytea NOT NULL,
    display_name      bytea NOT NULL,
    description       bytea NOT NULL,
    pipeline_id       bytea NOT NULL,
    pipeline_version_id bytea NOT NULL,
    service_account   bytea NOT NULL,
    recurring_run_id  bytea NOT NULL,
    created_s         bigint NOT NULL,
    created_ns        integer NOT NULL,
    scheduled_s       bigint NOT NULL,
    scheduled_ns      integer NOT NULL,
    finished_s        bigint NOT NULL,
    finished_ns       integer NOT NULL,
    -- Enum value names, as lists compare and sort them.
    state             bytea NOT NULL,
    storage_state     bytea NOT NULL,
    revision          bigint NOT NULL,
    -- The run without its pipeline spec; the spec, if any, is in `specs`.
    record            bytea NOT NULL,
    spec_digest       bytea
);
-- One set per scope (every run, an experiment's, a namespace's), so that a page of the common
-- queries reads about a page of an index: creation order; state and storage_state filters in
-- creation order, merged from one range per (state, storage_state) group the filter admits;
-- display_name order and finished_at order (both directions).
CREATE INDEX runs_by_created ON runs (created_s, created_ns, run_id);
CREATE INDEX runs_by_group_created
    ON runs (state, storage_state, created_s, created_ns, run_id);
CREATE INDEX runs_by_name ON runs (display_name, run_id);
CREATE INDEX runs_by_finished ON runs (finished_s, finished_ns, run_id);
CREATE INDEX runs_in_experiment_by_created
    ON runs (experiment_id, created_s, created_ns, run_id);
CREATE INDEX runs_in_experiment_by_group_created
    ON runs (experiment_id, state, storage_state, created_s, created_ns, run_id);
CREATE INDEX runs_in_experiment_by_name ON runs (experiment_id, display_name, run_id);
CREATE INDEX runs_in_experiment_by_finished
    ON runs (experiment_id, finished_s, finished_ns, run_id);
CREATE INDEX runs_in_namespace_by_created ON runs (namespace, created_s, created_ns, run_id);
CREATE INDEX runs_in_namespace_by_group_created
    ON runs (namespace, state, storage_state, created_s, created_ns, run_id);
CREATE INDEX runs_in_namespace_by_name ON runs (namespace, display_name, run_id);
CREATE INDEX runs_in_namespace_by_finished
    ON runs (namespace, finished_s, finished_ns, run_id);

-- How many records each scope holds per (state, storage_state), so that total_size of a list
-- with no filter, or one on those fields only, needs no COUNT. Scopes (`kind`, `key`):
-- 'a' '' every run, 'x' experiment_id, 'n' namespace; 'e' '' every experiment, 'p' namespace
-- (experiments have state '').
CREATE TABLE counts (
    kind           "char" NOT NULL,
    key            bytea NOT NULL,
    state          bytea NOT NULL,
    storage_state  bytea NOT NULL,
    -- Never below zero; checked by the writer (a CHECK would also reject the -1 an upsert
    -- proposes before it finds the row to add it to).
    n              bigint NOT NULL,
    PRIMARY KEY (kind, key, state, storage_state)
);

-- The change log WatchRuns reads on every replica: one row per committed run change. Appends
-- are serialized on the single `change_seq` row, taken as a transaction's last statement
-- before COMMIT, so sequence order is commit order and numbers have no gaps. Old rows are
-- pruned (bounded retention).
CREATE TABLE change_seq (
    only_row  boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    last      bigint NOT NULL
);
INSERT INTO change_seq (last) VALUES (0);

CREATE TABLE changes (
    seq            bigint PRIMARY KEY,
    -- 1 created, 2 updated, 3 deleted.
    kind           smallint NOT NULL,
    run_id         bytea NOT NULL,
    experiment_id  bytea NOT NULL,
    namespace      bytea NOT NULL,
    revision       bigint NOT NULL,
    -- The run after the change (before it, for a deletion), as in `runs`.
    record         bytea NOT NULL,
    spec_digest    bytea,
    committed_at   timestamptz NOT NULL DEFAULT now()
);
