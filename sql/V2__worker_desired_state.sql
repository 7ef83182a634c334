-- Whether each worker should be running: written by start and stop before they answer, and
-- read at start-up, so a started worker keeps running across restarts and a stopped one stays stopped.
CREATE TABLE worker_desired_state (
    worker     text        PRIMARY KEY,
    running    boolean     NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
