-- One start/stop for every replica: each change to a worker's desired state notifies channel
-- `rowsync_workers` (payload: the schema) at commit; every replica listens and follows at once,
-- and re-reads the table periodically should a notification be missed.
CREATE FUNCTION worker_desired_state_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('rowsync_workers', TG_TABLE_SCHEMA);
    RETURN NULL;
END
$$;

CREATE TRIGGER worker_desired_state_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON worker_desired_state
    FOR EACH STATEMENT EXECUTE FUNCTION worker_desired_state_changed();
