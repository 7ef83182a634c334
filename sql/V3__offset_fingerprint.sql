-- A fingerprint (timestamp and value hash) of the last record applied per partition: on resume,
-- a different record at that offset means the topic was recreated, and consumption restarts
-- from the earliest offset instead of silently skipping the new topic's first records.
ALTER TABLE kafka_offsets ADD COLUMN last_fingerprint bigint;
