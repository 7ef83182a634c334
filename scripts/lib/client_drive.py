# Drives every operation of openapi/openapi.json through the client openapi-python-client
# generated from it, against a running rowsync with a fresh schema and topics (scripts/check-client
# starts it, requiring a bearer token for every /api call, and inserts one row). Checks each status
# code and that each body parses into the generated types with no field the spec does not
# describe. Fails when the spec has an operation this file does not exercise.
#   usage: ROWSYNC_API_TOKEN=… client_drive.py SPEC CLIENT_PARENT_DIR BASE_URL ROW_ID ROW_NAME
import datetime
import importlib
import json
import os
import sys
import time

import attrs


def operation_ids(spec_path):
    with open(spec_path, encoding="utf-8") as file:
        spec = json.load(file)
    return {
        operation["operationId"]
        for path in spec["paths"].values()
        for operation in path.values()
        if isinstance(operation, dict) and "operationId" in operation
    }


def fully_typed(value, where="body"):
    """Asserts a parsed body holds no field outside the spec, recursively."""
    if attrs.has(type(value)):
        extra = getattr(value, "additional_properties", {})
        assert not extra, f"{where}: fields the spec does not describe: {sorted(extra)}"
        for field in attrs.fields(type(value)):
            if field.name != "additional_properties":
                fully_typed(getattr(value, field.name), f"{where}.{field.name}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            fully_typed(item, f"{where}[{index}]")


class Driver:
    def __init__(self, client_module, base_url, token):
        self.pkg = client_module
        self.models = importlib.import_module(f"{client_module}.models")
        self.unset = importlib.import_module(f"{client_module}.types").Unset
        generated = importlib.import_module(client_module)
        options = {"base_url": base_url, "raise_on_unexpected_status": True, "timeout": 30.0}
        self.client = generated.AuthenticatedClient(token=token, **options)
        self.anonymous = generated.Client(**options)
        self.exercised = set()

    def call(self, tag, operation, status, model, *args, anonymous=False, **kwargs):
        """Calls `operation` (with the token unless `anonymous`), checks the status and the
        body's type; returns the parsed body."""
        module = importlib.import_module(f"{self.pkg}.api.{tag}.{operation}")
        client = self.anonymous if anonymous else self.client
        response = module.sync_detailed(*args, client=client, **kwargs)
        shown = ", ".join([*map(repr, args), *(f"{k}={v!r}" for k, v in kwargs.items())])
        shown += ") without a token" if anonymous else ")"
        assert response.status_code == status, (
            f"{operation}({shown} answered {int(response.status_code)}, not {status}: {response.content!r}"
        )
        parsed = response.parsed
        if isinstance(model, list):
            assert isinstance(parsed, list), f"{operation}: body is {type(parsed).__name__}, not a list"
            assert all(isinstance(item, model[0]) for item in parsed), f"{operation}: items are not {model[0].__name__}"
        else:
            assert isinstance(parsed, model), f"{operation}: body is {type(parsed).__name__}, not {model.__name__}"
        fully_typed(parsed, operation)
        self.exercised.add(operation)
        print(f"  {operation}({shown} -> {int(response.status_code)} {type(parsed).__name__}")
        return parsed

    def worker_state(self, operation, worker, state):
        """Calls a start or stop operation and checks the state it reports."""
        body = self.call("some_models", operation, 200, self.models.WorkerStateBody)
        assert (body.worker, body.state) == (worker, state), f"{operation}: {body}"

    def run(self, row_id, row_name):
        m = self.models
        running, stopped = m.WorkerState.RUNNING, m.WorkerState.STOPPED

        # Health and metrics are for orchestrators and scrapers: no token needed.
        live = self.call("health", "health_live", 200, m.HealthBody, anonymous=True)
        assert live.status == "ok", live
        ready = self.call("health", "health_ready", 200, m.HealthBody, anonymous=True)
        assert ready.status == "ok", ready
        assert (ready.checks.postgres, ready.checks.migrations, ready.checks.kafka) == ("ok",) * 3, ready
        metrics = self.call("health", "metrics", 200, str, anonymous=True)
        names = {line.split("{")[0].split()[0] for line in metrics.splitlines() if line and not line.startswith("#")}
        assert names and all(name.startswith("rowsync_") for name in names), sorted(names)[:10]

        # Every /api call needs the token (API_TOKEN with API_TOKEN_FOR_READS).
        for operation in ("list_some_models", "start_upcreate_from_kafka"):
            refused = self.call("some_models", operation, 401, m.ErrorBody, anonymous=True)
            assert refused.error == "unauthorized", refused

        rows = self.call("some_models", "list_some_models", 200, [m.Row])
        assert [(row.id, row.name) for row in rows] == [(row_id, row_name)], rows
        row = self.call("some_models", "write_to_kafka", 200, m.Row, row_id)
        assert (row.id, row.name) == (row_id, row_name), row
        missing = self.call("some_models", "write_to_kafka", 404, m.ErrorBody, row_id + 1)
        assert missing.error == "not_found", missing

        self.worker_state("start_upcreate_from_kafka", "upcreate", running)
        workers = self.call("workers", "list_workers", 200, [m.WorkerStatus])
        states = {worker.name: worker.state for worker in workers}
        assert states == {"upcreate": running, "delete": stopped}, states
        upcreate = self.call("workers", "get_worker", 200, m.WorkerStatus, "upcreate")
        assert (upcreate.name, upcreate.state) == ("upcreate", running), upcreate
        assert isinstance(upcreate.since, datetime.datetime), upcreate.since
        # A partition is reported once the group assigns it, and gains its next offset once its
        # loop is positioned; the generated models must parse each state (a field the spec
        # types as a date-time must never arrive as null).
        deadline = time.monotonic() + 10
        while len(upcreate.partitions) < 3 or not all(
            isinstance(partition.next_offset, int) for partition in upcreate.partitions
        ):
            assert time.monotonic() < deadline, f"partitions not positioned in 10 s: {upcreate}"
            time.sleep(0.05)
            upcreate = self.call("workers", "get_worker", 200, m.WorkerStatus, "upcreate")
        for partition in upcreate.partitions:
            assert isinstance(partition.next_offset, int), partition
            assert isinstance(partition.last_error_at, self.unset), partition
        unknown = self.call("workers", "get_worker", 404, m.ErrorBody, "no_such_worker")
        assert unknown.error == "not_found", unknown
        busy = self.call(
            "workers", "reset_worker_offsets", 409, m.ErrorBody, "upcreate",
            body=m.ResetOffsetsRequest(to=m.OffsetPosition.EARLIEST),
        )
        assert busy.error == "conflict", busy
        self.worker_state("stop_upcreate_from_kafka", "upcreate", stopped)

        # Start the delete worker both ways its path allows (DELETE, kept from Django, and POST).
        self.worker_state("start_delete_from_kafka", "delete", running)
        self.worker_state("stop_delete_from_kafka", "delete", stopped)
        self.worker_state("start_delete_from_kafka_post", "delete", running)
        self.worker_state("stop_delete_from_kafka", "delete", stopped)
        delete = self.call("workers", "get_worker", 200, m.WorkerStatus, "delete")
        assert delete.state == stopped, delete

        reset = self.call(
            "workers", "reset_worker_offsets", 200, m.ResetOffsetsBody, "delete",
            body=m.ResetOffsetsRequest(to=m.OffsetPosition.LATEST),
        )
        assert reset.worker == "delete", reset
        assert all(isinstance(offset, m.PartitionOffset) for offset in reset.offsets), reset
        # Explicit offsets: the generator names the map branch of ResetTarget's oneOf this way.
        target = m.ResetTargetType1()
        target.additional_properties = {"0": 0}
        reset = self.call(
            "workers", "reset_worker_offsets", 200, m.ResetOffsetsBody, "delete",
            body=m.ResetOffsetsRequest(to=target),
        )
        assert [(o.partition, o.next_offset) for o in reset.offsets] == [(0, 0)], reset


def main():
    spec, parent, base_url, row_id, row_name = sys.argv[1:6]
    sys.path.insert(0, parent)
    driver = Driver("rowsync_client", base_url, os.environ["ROWSYNC_API_TOKEN"])
    driver.run(int(row_id), row_name)
    missing = operation_ids(spec) - driver.exercised
    assert not missing, f"operations in the spec this check does not exercise: {sorted(missing)}"
    print(f"all {len(driver.exercised)} operations of the spec exercised through the generated client")


if __name__ == "__main__":
    main()
