-- Every committed change to some_model notifies channel `rowsync_some_model` (payload: the
-- schema). rowsync listens, and serves the full listing from memory until the table changes,
-- whoever changes it. NOTIFY is delivered at commit, and once per transaction.
CREATE FUNCTION some_model_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('rowsync_some_model', TG_TABLE_SCHEMA);
    RETURN NULL;
END
$$;

CREATE TRIGGER some_model_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON some_model
    FOR EACH STATEMENT EXECUTE FUNCTION some_model_changed();
