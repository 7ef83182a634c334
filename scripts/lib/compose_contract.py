# Parses a Compose file with compose-spec (the Rust compose_spec parser: every field typed and
# validated) and checks what the Compose schema cannot: the stack rowsync documents.
#   usage: compose_contract.py COMPOSE_FILE ENV_EXAMPLE
# Exits 1 with one line per broken rule.
import re
import sys

from compose_spec import PyCompose

SERVICES = {
    "postgres": "postgres:",
    "kafka": "apache/kafka:",
    "kafka-ui": "provectuslabs/kafka-ui:",
}
PUBLISHED = {"kafka-ui": ("14080", "8080"), "rowsync": ("8000", "8000")}
ROWSYNC_HEALTHCHECK = ["CMD", "/rowsync", "healthcheck"]


def documented_variables(env_example):
    """Every variable .env.example names, set or commented out."""
    with open(env_example, encoding="utf-8") as file:
        return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", file.read(), re.MULTILINE))


def port_pairs(service):
    """(published, container) pairs of a service's ports, in short or long syntax."""
    pairs = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            pairs.append((str(port.get("published")), str(port.get("target"))))
        else:
            parts = str(port).split(":")
            pairs.append((parts[-2], parts[-1]))
    return pairs


def check(compose, variables):
    errors = []
    services = compose.get("services") or {}
    if set(services) != set(SERVICES) | {"rowsync"}:
        errors.append(f"services are {sorted(services)}, expected {sorted(set(SERVICES) | {'rowsync'})}")
    for name, prefix in SERVICES.items():
        image = (services.get(name) or {}).get("image") or ""
        if not image.startswith(prefix) or image.endswith(":latest") or image == prefix:
            errors.append(f"{name} must use a pinned {prefix}<tag> image, not {image!r}")
    for name, service in services.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            if dependency not in services:
                errors.append(f"{name} depends on {dependency}, which is not a service")
            elif spec.get("condition") == "service_healthy" and not services[dependency].get("healthcheck"):
                errors.append(f"{name} waits for {dependency} to be healthy, but it has no healthcheck")
        for volume in service.get("volumes") or []:
            source = volume.get("source") if isinstance(volume, dict) else str(volume).split(":")[0]
            if source and not source.startswith((".", "/", "~")) and source not in (compose.get("volumes") or {}):
                errors.append(f"{name} mounts volume {source}, which is not declared")
    for name, (published, target) in PUBLISHED.items():
        if (published, target) not in port_pairs(services.get(name) or {}):
            errors.append(f"{name} must publish container port {target} on {published}")

    kafka = services.get("kafka") or {}
    roles = str((kafka.get("environment") or {}).get("KAFKA_PROCESS_ROLES", ""))
    if set(roles.split(",")) != {"broker", "controller"}:
        errors.append("kafka must be a single KRaft node (KAFKA_PROCESS_ROLES: broker,controller)")
    for name in ("postgres", "kafka"):
        if not (services.get(name) or {}).get("healthcheck"):
            errors.append(f"{name} needs a healthcheck")
    ui_waits_for = ((services.get("kafka-ui") or {}).get("depends_on") or {}).get("kafka") or {}
    if ui_waits_for.get("condition") != "service_healthy":
        errors.append("kafka-ui must wait for kafka to be healthy")

    rowsync = services.get("rowsync") or {}
    if rowsync.get("build") not in (".", {"context": "."}):
        errors.append("rowsync must be built from this repository's Dockerfile (build: .)")
    test = (rowsync.get("healthcheck") or {}).get("test")
    if test != ROWSYNC_HEALTHCHECK:
        errors.append(f"rowsync's healthcheck must be {ROWSYNC_HEALTHCHECK} (its image has no shell), not {test}")
    for dependency in ("postgres", "kafka"):
        if ((rowsync.get("depends_on") or {}).get(dependency) or {}).get("condition") != "service_healthy":
            errors.append(f"rowsync must wait for {dependency} to be healthy")
    env_files = [f.get("path") if isinstance(f, dict) else f for f in rowsync.get("env_file") or []]
    if ".env" not in env_files:
        errors.append("rowsync must read .env (env_file)")
    environment = rowsync.get("environment") or {}
    unknown = sorted(set(environment) - variables)
    if unknown:
        errors.append(f"rowsync sets variables .env.example does not document: {unknown}")
    listen = str(environment.get("LISTEN_ADDR", ""))
    if not listen.endswith(":8000"):
        errors.append(f"rowsync must listen on port 8000 (LISTEN_ADDR), not {listen!r}")
    return errors


def main():
    compose_file, env_example = sys.argv[1:3]
    with open(compose_file, encoding="utf-8") as file:
        try:
            parsed = PyCompose.from_yaml(file.read())
            parsed.validate()
        except ValueError as error:
            sys.exit(f"{compose_file}: not a valid Compose file: {error}")
    errors = check(parsed.to_dict(), documented_variables(env_example))
    if errors:
        sys.exit("\n".join(f"{compose_file}: {error}" for error in errors))
    print(f"{compose_file}: parsed and checked: services {', '.join(parsed.service_names())}")


if __name__ == "__main__":
    main()
