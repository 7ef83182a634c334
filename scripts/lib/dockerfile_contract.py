# Checks that the Dockerfile ships the static binary alone, and tells scripts/check-release how
# its build stage builds, so the script can run that very build:
#   usage: dockerfile_contract.py DOCKERFILE
#   prints: line 1 the build stage's `cargo build …` command, then one line per path it COPYs.
# Exits 1 with a message naming the broken rule.
import re
import shlex
import sys

from dockerfile_parse import DockerfileParser

MUSL_TARGET = "x86_64-unknown-linux-musl"


def fail(message):
    sys.exit(f"Dockerfile: {message}")


def stages(instructions):
    """Splits the instructions into stages, each a (FROM value, [instructions]) pair."""
    result = []
    for instruction in instructions:
        if instruction["instruction"] == "FROM":
            result.append((instruction["value"], []))
        elif instruction["instruction"] != "COMMENT":
            if not result:
                fail(f"{instruction['instruction']} before the first FROM")
            result[-1][1].append(instruction)
    return result


def build_stage_facts(name, body):
    """The cargo command and the copied paths of the build stage; checks its output path."""
    copies, commands = [], []
    for instruction in body:
        if instruction["instruction"] == "COPY":
            words = shlex.split(instruction["value"])
            if any(word.startswith("--from") for word in words):
                fail(f"stage {name} copies from another stage")
            copies.extend(words[:-1])
        elif instruction["instruction"] == "RUN":
            # Drop BuildKit flags (cache mounts), then look at each `&&` step.
            text = re.sub(r"^(\s*--\S+\s+)+", "", instruction["value"])
            commands.extend(step.strip() for step in text.split("&&"))
    builds = [c for c in commands if c.startswith("cargo build")]
    if len(builds) != 1:
        fail(f"stage {name} must run exactly one `cargo build`, found {builds}")
    build = " ".join(builds[0].split())
    for flag in ("--release", "--locked", f"--target {MUSL_TARGET}"):
        if flag not in build:
            fail(f"the build `{build}` lacks {flag}")
    output = f"cp target/{MUSL_TARGET}/release/rowsync /rowsync"
    if output not in (" ".join(c.split()) for c in commands):
        fail(f"stage {name} must `{output}` after building")
    if not copies:
        fail(f"stage {name} copies no sources")
    return build, copies


def check_final_stage(base, body, build_name):
    if base != "scratch":
        fail(f"the final stage must be FROM scratch, not {base}")
    kinds = [i["instruction"] for i in body]
    copies = [i for i in body if i["instruction"] in ("COPY", "ADD")]
    if len(copies) != 1 or shlex.split(copies[0]["value"]) != [f"--from={build_name}", "/rowsync", "/rowsync"]:
        fail(f"the final stage must add only `COPY --from={build_name} /rowsync /rowsync`")
    if "RUN" in kinds:
        fail("the final stage cannot RUN anything: it has no shell")
    users = [i["value"] for i in body if i["instruction"] == "USER"]
    if len(users) != 1 or not re.fullmatch(r"[1-9][0-9]*(:[1-9][0-9]*)?", users[0]):
        fail(f"the final stage needs one numeric, non-root USER (uid[:gid]), found {users}")
    if [i["value"] for i in body if i["instruction"] == "EXPOSE"] != ["8000"]:
        fail("the final stage must EXPOSE 8000")
    health = [i["value"] for i in body if i["instruction"] == "HEALTHCHECK"]
    if len(health) != 1 or not health[0].endswith('CMD ["/rowsync", "healthcheck"]'):
        fail(f'HEALTHCHECK must end with CMD ["/rowsync", "healthcheck"] (exec form), found {health}')
    if [i["value"] for i in body if i["instruction"] == "ENTRYPOINT"] != ['["/rowsync"]']:
        fail('ENTRYPOINT must be ["/rowsync"]')


def main():
    with open(sys.argv[1], "rb") as dockerfile:
        all_stages = stages(DockerfileParser(fileobj=dockerfile).structure)
    if len(all_stages) != 2:
        fail(f"expected two stages (build, scratch), found {len(all_stages)}")
    (build_from, build_body), (final_from, final_body) = all_stages
    match = re.fullmatch(r"(rust:\S+)\s+AS\s+(\S+)", build_from, re.IGNORECASE)
    if not match:
        fail(f"the build stage must be FROM an official rust image AS a name, not {build_from}")
    build, copies = build_stage_facts(match.group(2), build_body)
    check_final_stage(final_from, final_body, match.group(2))
    print(build)
    print("\n".join(copies))


if __name__ == "__main__":
    main()
