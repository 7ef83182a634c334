-- The synchronised table, as the Django service had it, and the consumers' stored offsets.
CREATE TABLE some_model (
    id   bigint PRIMARY KEY,
    name varchar(200) NOT NULL
);

-- rskafka has no consumer groups: each worker stores the next offset to read per partition,
-- written in the same transaction as the rows that batch changed.
CREATE TABLE kafka_offsets (
    worker      text        NOT NULL,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    next_offset bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (worker, topic, partition)
);
