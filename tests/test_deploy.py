"""The deployment files: the container image, compose.yaml, the systemd units and the sdist.

Each file is read the way its tool reads it and checked for what an operator relies on,
and the commands in them are run here: the image's health check against a live server,
each unit's ExecStart as the service manager would start it. Building the image needs a
Docker daemon (and a registry) and runs only where `docker info` answers; it is not one of
the peers SMSINBOX_TEST_REQUIRE_PEERS makes required, so CI passes without a daemon.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import tomllib
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

import smsinbox
from smsinbox.config import Settings
from tests.conftest import LiveServer, free_port

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "deploy" / "systemd"
SMSINBOX = Path(sys.executable).with_name("smsinbox")
SETTINGS = {field.name: field for field in dataclasses.fields(Settings)}
# The exit statuses systemd counts as a clean stop: Restart=on-failure leaves them be.
CLEAN_STOP = {0, -signal.SIGHUP, -signal.SIGINT, -signal.SIGTERM, -signal.SIGPIPE}


# --- the Dockerfile, read as docker reads it --------------------------------------------


@dataclasses.dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str
    stage: int


def dockerfile() -> list[Instruction]:
    """The Dockerfile's instructions: comment lines dropped, continuation lines joined."""
    instructions: list[Instruction] = []
    stage = -1
    pending = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.lstrip().startswith("#") or (not pending and not line.strip()):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).strip().partition(" ")
        pending = ""
        if keyword.upper() == "FROM":
            stage += 1
        instructions.append(Instruction(keyword.upper(), arguments.strip(), stage))
    return instructions


def final_stage() -> list[Instruction]:
    instructions = dockerfile()
    return [i for i in instructions if i.stage == instructions[-1].stage]


def image_environment() -> dict[str, str]:
    environment: dict[str, str] = {}
    for instruction in final_stage():
        if instruction.keyword == "ENV":
            for assignment in shlex.split(instruction.arguments):
                name, _, value = assignment.partition("=")
                environment[name] = value
    return environment


def exec_form(instruction: Instruction) -> list[str]:
    words = json.loads(instruction.arguments)
    assert isinstance(words, list), f"{instruction.keyword} is not in exec form"
    return [str(word) for word in words]


def healthcheck_command() -> list[str]:
    """The HEALTHCHECK's command line (its options, such as --interval, left aside)."""
    (check,) = [i for i in final_stage() if i.keyword == "HEALTHCHECK"]
    _, _, command = check.arguments.partition("CMD ")
    return exec_form(Instruction("CMD", command, check.stage))


def test_the_image_is_a_slim_python_and_runs_smsinbox_serve() -> None:
    instructions = dockerfile()
    for base in [i.arguments.split()[0] for i in instructions if i.keyword == "FROM"]:
        assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", base), base
    final = final_stage()
    (entrypoint,) = [exec_form(i) for i in final if i.keyword == "ENTRYPOINT"]
    (command,) = [exec_form(i) for i in final if i.keyword == "CMD"]
    assert entrypoint + command == ["smsinbox", "serve"]


def test_the_image_runs_as_a_user_of_its_own_once_everything_is_installed() -> None:
    final = final_stage()
    keywords = [i.keyword for i in final]
    (user,) = [i.arguments for i in final if i.keyword == "USER"]
    uid = user.partition(":")[0]
    assert uid not in {"root", "0"}
    assert keywords.index("USER") > max(
        index for index, keyword in enumerate(keywords) if keyword in {"RUN", "COPY", "ADD"}
    )
    # The user is made in the image, under the uid it runs as.
    assert any(i.keyword == "RUN" and f"--uid {uid}" in i.arguments for i in final)


def test_the_image_listens_on_the_port_it_exposes_and_keeps_its_store_in_the_volume() -> None:
    final = final_stage()
    environment = image_environment()
    (exposed,) = [i.arguments for i in final if i.keyword == "EXPOSE"]
    assert int(exposed.partition("/")[0]) == int(environment["SMSINBOX_PORT"])
    assert environment["SMSINBOX_HOST"] == "0.0.0.0"
    (volume,) = [i.arguments for i in final if i.keyword == "VOLUME"]
    database = environment["SMSINBOX_DATABASE_URL"]
    assert database.startswith(f"sqlite:///{volume}/"), database
    assert "/healthz" in " ".join(healthcheck_command())


def run_check(command: list[str], **environment: str) -> subprocess.CompletedProcess[str]:
    """A container health check's command line, run here with `environment` added."""
    command = [sys.executable if word == "python" else word for word in command]
    # A proxy in the environment must not come between the check and the server.
    proxy = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, **environment, "http_proxy": proxy, "HTTP_PROXY": proxy}
    env.update(no_proxy="", NO_PROXY="")
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)


def test_the_health_check_passes_while_the_server_answers_and_fails_once_it_is_down(
    tmp_path: Path,
) -> None:
    with LiveServer(Settings(database_url=f"sqlite:///{tmp_path / 'smsinbox.db'}")) as server:
        up = run_check(healthcheck_command(), SMSINBOX_PORT=str(server.port))
    assert up.returncode == 0, up.stderr
    down = run_check(healthcheck_command(), SMSINBOX_PORT=str(server.port))
    assert down.returncode != 0


# --- compose.yaml ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert isinstance(document, dict)
    return document


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose["services"]
    assert isinstance(found, dict)
    return found


def test_compose_runs_the_server_a_worker_postgresql_and_redis(
    compose: dict[str, Any],
) -> None:
    running = services(compose)
    assert set(running) >= {"smsinbox", "smsinbox-worker", "postgres", "redis", "migrate"}
    assert running["smsinbox"]["command"] == ["serve"]
    assert running["smsinbox"]["environment"]["SMSINBOX_PUSH_WORKER"] == "false"
    assert running["smsinbox-worker"]["command"] == ["worker"]
    metrics_port = running["smsinbox-worker"]["environment"]["SMSINBOX_WORKER_METRICS_PORT"]
    assert int(metrics_port) > 0
    assert re.fullmatch(r"postgres:1[56](\.\d+)*(-\w+)?", str(running["postgres"]["image"]))
    # PostgreSQL's data outlives its container, in a named volume.
    (mount,) = running["postgres"]["volumes"]
    volume, _, path = str(mount).partition(":")
    assert path == "/var/lib/postgresql/data"
    assert volume in compose["volumes"]


def test_compose_starts_each_service_once_what_it_needs_is_healthy(
    compose: dict[str, Any],
) -> None:
    running = services(compose)
    for name in ("postgres", "redis", "smsinbox", "smsinbox-worker"):
        assert running[name]["healthcheck"]["test"][0] in {"CMD", "CMD-SHELL"}, name
    # The server's is the image's own check, run against a live server above.
    assert running["smsinbox"]["healthcheck"]["test"] == ["CMD", *healthcheck_command()]
    needs = {
        "migrate": {"postgres": "service_healthy"},
        "smsinbox": {
            "migrate": "service_completed_successfully",
            "postgres": "service_healthy",
            "redis": "service_healthy",
        },
        "smsinbox-worker": {
            "migrate": "service_completed_successfully",
            "postgres": "service_healthy",
        },
    }
    for name, wanted in needs.items():
        depends_on = running[name]["depends_on"]
        assert {other: depends_on[other]["condition"] for other in depends_on} == wanted


def test_compose_migrates_the_schema_once_before_the_server_and_worker_start(
    compose: dict[str, Any],
) -> None:
    running = services(compose)
    assert running["migrate"]["command"] == ["db", "upgrade"]
    assert running["migrate"].get("restart", "no") == "no"
    for name in ("smsinbox", "smsinbox-worker"):
        assert running[name]["environment"]["SMSINBOX_MIGRATE_ON_START"] == "false"


def test_compose_hands_each_secret_file_to_the_service_that_reads_it(
    compose: dict[str, Any],
) -> None:
    declared = compose["secrets"]
    assert isinstance(declared, dict)
    image_defaults = image_environment()
    for name, service in services(compose).items():
        environment: dict[str, str] = service.get("environment", {})
        given = set(service.get("secrets", []))
        assert given <= set(declared), name
        for variable, value in environment.items():
            if not (variable.startswith("SMSINBOX_") and variable.endswith("_FILE")):
                continue
            secret = value.removeprefix("/run/secrets/")
            assert secret in given, f"{name}: {variable} names {value}, not a secret it is given"
            # The image's own value for the setting would win over the file.
            plain = variable.removesuffix("_FILE")
            if plain in image_defaults:
                assert environment.get(plain) == "", f"{name}: {plain} must be emptied"


def setting_variable_problem(variable: str) -> str | None:
    """Why `variable` is not something smsinbox reads, or None when it is."""
    name = variable.removeprefix("SMSINBOX_").lower()
    if name in SETTINGS or name == "config":
        return None
    if name.endswith("_file") and name.removesuffix("_file") in SETTINGS:
        if SETTINGS[name.removesuffix("_file")].repr:
            return f"{variable}: only secret settings may come from a file"
        return None
    return f"{variable}: no such setting"


def deployment_variables(compose: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, variable) for every SMSINBOX_ variable a deployment file sets."""
    for name, service in services(compose).items():
        for variable in service.get("environment", {}):
            yield f"compose.yaml {name}", variable
    for instruction in final_stage():
        if instruction.keyword == "ENV":
            for assignment in shlex.split(instruction.arguments):
                yield "Dockerfile", assignment.partition("=")[0]
    for path in sorted(UNITS.iterdir()):
        text = path.read_text()
        for variable in re.findall(r"(?<![A-Z0-9_])(SMSINBOX_[A-Z0-9_]+)=", text, re.M):
            yield path.name, variable


def test_every_smsinbox_variable_the_deployment_files_set_is_a_setting(
    compose: dict[str, Any],
) -> None:
    problems = []
    for where, variable in deployment_variables(compose):
        if variable.startswith("SMSINBOX_"):
            problem = setting_variable_problem(variable)
            if problem:
                problems.append(f"{where}: {problem}")
    assert not problems


# --- the systemd units ------------------------------------------------------------------


def unit(name: str) -> list[tuple[str, str, str]]:
    """(section, key, value) for each line of a unit file, in order (keys repeat)."""
    return parse_unit((UNITS / name).read_text())


def parse_unit(text: str) -> list[tuple[str, str, str]]:
    lines: list[tuple[str, str, str]] = []
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        lines.append((section, key.strip(), value.strip()))
    return lines


def values(lines: list[tuple[str, str, str]], key: str) -> list[str]:
    return [value for section, name, value in lines if section == "Service" and name == key]


def only(lines: list[tuple[str, str, str]], key: str) -> str:
    (value,) = values(lines, key)
    return value


def stop_timeout(lines: list[tuple[str, str, str]]) -> float:
    """TimeoutStopSec in seconds (a number, or a number followed by s or min)."""
    match = re.fullmatch(r"(\d+)\s*(s|sec|min)?", only(lines, "TimeoutStopSec"))
    assert match, "TimeoutStopSec is not a plain duration"
    return float(match[1]) * (60 if match[2] == "min" else 1)


UNIT_NAMES = ["smsinbox.service", "smsinbox-worker.service"]


@pytest.mark.parametrize("name", UNIT_NAMES)
def test_the_unit_runs_as_its_own_user_confined_to_its_state_directory(name: str) -> None:
    lines = unit(name)
    assert only(lines, "User") not in {"", "root", "0"}
    assert only(lines, "StateDirectory") == "smsinbox"
    assert only(lines, "EnvironmentFile").lstrip("-") == "/etc/smsinbox/env"
    for key, wanted in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "Restart": "on-failure",
        # serve (uvicorn) and worker both stop gracefully on SIGTERM; uvicorn takes a second
        # SIGINT as "quit now", so SIGINT would be no better.
        "KillSignal": "SIGTERM",
    }.items():
        assert only(lines, key) == wanted, key
    assert only(lines, "CapabilityBoundingSet") == ""
    # A stop waits for the push attempts in flight: each has push_timeout, and a second.
    assert stop_timeout(lines) > Settings().push_timeout + 1


@pytest.mark.parametrize("name", UNIT_NAMES)
def test_systemd_analyze_verify_finds_nothing_wrong_with_the_unit(
    name: str, tmp_path: Path
) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    # First a unit that cannot be wrong: if it fails, the tool cannot work in this sandbox.
    probe = tmp_path / "probe.service"
    probe.write_text(f"[Service]\nExecStart={shutil.which('true')}\n")
    probed = subprocess.run(
        ["systemd-analyze", "verify", str(probe)], capture_output=True, text=True, timeout=60
    )
    if probed.returncode != 0:
        pytest.skip(f"systemd-analyze verify cannot run here: {probed.stderr.strip()}")
    # The copy starts the smsinbox installed here, since /opt/smsinbox is not.
    copy = tmp_path / name
    copy.write_text((UNITS / name).read_text().replace(installed_command(name), str(SMSINBOX)))
    verified = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    output = verified.stdout + verified.stderr
    # Its complaints about the unit name the file (unknown keys, bad values, a missing
    # command); anything else it says is about the machine it runs on.
    about_the_unit = [line for line in output.splitlines() if name in line]
    assert verified.returncode == 0 and not about_the_unit, output


def installed_command(name: str) -> str:
    command = shlex.split(only(unit(name), "ExecStart"))[0]
    assert command.endswith("/bin/smsinbox"), command
    return command


def service_environment(
    lines: list[tuple[str, str, str]], state: Path, env_file: dict[str, str]
) -> dict[str, str]:
    """The environment systemd gives the service: its own (PATH and the like), then the
    unit's Environment= lines in order, then the EnvironmentFile, which wins over them. The
    state directory is `state` here."""
    environment = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "HOME": str(state)}
    for line in values(lines, "Environment"):
        for assignment in shlex.split(line):
            variable, _, value = assignment.partition("=")
            environment[variable] = value.replace("/var/lib/smsinbox", str(state))
    environment.update(env_file)
    assert not any("%" in value for value in environment.values()), environment
    return environment


@dataclasses.dataclass
class Service:
    """A unit's ExecStart run as a process, the way systemd would run it."""

    lines: list[tuple[str, str, str]]
    state: Path
    environment: dict[str, str]

    @classmethod
    def of(cls, name: str, tmp_path: Path, **settings: str) -> Service:
        state = tmp_path / "state"
        state.mkdir()
        lines = unit(name)
        env_file = {f"SMSINBOX_{key.upper()}": value for key, value in settings.items()}
        return cls(lines, state, service_environment(lines, state, env_file))

    def command(self) -> list[str]:
        return [str(SMSINBOX), *shlex.split(only(self.lines, "ExecStart"))[1:]]

    def run(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        """Another smsinbox command with the service's settings (a deploy step)."""
        return subprocess.run(
            [str(SMSINBOX), *arguments], env=self.environment, cwd=self.state,
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    @property
    def log(self) -> str:
        """What the service wrote to stdout and stderr (the journal, under systemd)."""
        journal = self.state.parent / "journal"
        return journal.read_text() if journal.exists() else ""

    def start(self) -> subprocess.Popen[bytes]:
        assert only(self.lines, "WorkingDirectory") == "/var/lib/smsinbox"
        with (self.state.parent / "journal").open("wb") as journal:
            return subprocess.Popen(
                self.command(), env=self.environment, cwd=self.state,
                stdout=journal, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        """Send the unit's KillSignal and wait as long as systemd would."""
        process.send_signal(getattr(signal, only(self.lines, "KillSignal")))
        process.wait(timeout=stop_timeout(self.lines))


@pytest.fixture
def stopped_at_the_end() -> Iterator[list[subprocess.Popen[bytes]]]:
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_server_unit_starts_a_server_that_answers_and_stops_on_its_kill_signal(
    tmp_path: Path, stopped_at_the_end: list[subprocess.Popen[bytes]]
) -> None:
    port = free_port()
    service = Service.of("smsinbox.service", tmp_path, host="127.0.0.1", port=str(port))
    process = service.start()
    stopped_at_the_end.append(process)
    deadline = time.monotonic() + 60
    while True:
        try:
            answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
            break
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"smsinbox serve did not start: {service.log}")
            time.sleep(0.1)
    assert answer.status_code == 200
    # The store is in the state directory, as the unit's default says.
    assert (service.state / "smsinbox.db").exists()
    service.stop(process)
    assert process.returncode in CLEAN_STOP, service.log


def test_the_worker_unit_runs_until_its_kill_signal_and_then_exits_cleanly(
    tmp_path: Path, compose: dict[str, Any], stopped_at_the_end: list[subprocess.Popen[bytes]]
) -> None:
    metrics_port = str(free_port())
    service = Service.of(
        "smsinbox-worker.service", tmp_path, host="127.0.0.1", worker_metrics_port=metrics_port
    )
    # The deploy step that makes the store, as docs/deployment.md has it.
    upgraded = service.run("db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    process = service.start()
    stopped_at_the_end.append(process)
    # Running, by the health check compose gives the worker: its /metrics answers.
    check = services(compose)["smsinbox-worker"]["healthcheck"]["test"]
    assert check[0] == "CMD"
    deadline = time.monotonic() + 60
    while run_check(check[1:], SMSINBOX_WORKER_METRICS_PORT=metrics_port).returncode != 0:
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"smsinbox worker did not start: {service.log}")
        time.sleep(0.1)
    service.stop(process)
    assert process.returncode == 0, service.log
    assert run_check(check[1:], SMSINBOX_WORKER_METRICS_PORT=metrics_port).returncode != 0


def admin_command(etc: Path, state: Path) -> Path:
    """smsinbox-admin with /etc/smsinbox and the state directory moved under the test's
    own directory, the smsinbox installed here, and no change of user."""
    script = (UNITS / "smsinbox-admin").read_text()
    for installed, here in [
        ("/etc/smsinbox", str(etc)),
        ("/var/lib/smsinbox", str(state)),
        (installed_command("smsinbox.service"), str(SMSINBOX)),
        ("runuser -u smsinbox --", "env"),
    ]:
        assert installed in script, installed
        script = script.replace(installed, here)
    copy = etc / "smsinbox-admin"
    copy.write_text(script)
    return copy


@pytest.mark.parametrize("credentials", [False, True], ids=["defaults", "credentials"])
def test_smsinbox_admin_works_on_the_store_the_server_unit_uses(
    credentials: bool, tmp_path: Path
) -> None:
    """The server unit (with credentials.conf.example as its drop-in when the database URL
    is a systemd credential, %d the directory systemd puts it in) and smsinbox-admin find
    the same store: an account one makes, the other lists."""
    etc, state = tmp_path / "etc", tmp_path / "state"
    (etc / "credentials").mkdir(parents=True)
    state.mkdir()
    (etc / "env").write_text("# as /etc/smsinbox/env\nSMSINBOX_LOG_LEVEL=warning\n")
    lines = unit("smsinbox.service")
    store = state / "smsinbox.db"
    if credentials:
        store = tmp_path / "from-credential.db"
        (etc / "credentials" / "database_url").write_text(f"sqlite:///{store}\n")
        (etc / "credentials" / "admin_token").write_text("a-token\n")
        drop_in = parse_unit((UNITS / "credentials.conf.example").read_text())
        loaded = {value.partition(":")[0] for value in values(drop_in, "LoadCredential")}
        assert {path.name for path in (etc / "credentials").iterdir()} == loaded
        lines += [(s, k, v.replace("%d", str(etc / "credentials"))) for s, k, v in drop_in]
    server = Service(lines, state, service_environment(lines, state, {}))

    admin = [shutil.which("sh") or "/bin/sh", str(admin_command(etc, state))]
    for command in (["db", "upgrade"], ["user", "add", "alice@reseller", "--password", "pw"]):
        done = subprocess.run([*admin, *command], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    assert store.exists()
    listed = server.run("user", "list")
    assert listed.returncode == 0, listed.stderr
    assert "alice@reseller" in listed.stdout
    if credentials:
        assert not (state / "smsinbox.db").exists()


# --- the source distribution ------------------------------------------------------------

# What a working copy holds that no release should: the decoys the sdist must leave out.
DEVELOPERS_FILES = [
    ".venv/bin/python",
    "var/smsinbox.db",
    "node_modules/left-pad/index.js",
    "tests/smsc/node_modules/smpp/index.js",
    "bench/results/run.json",
]


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> tarfile.TarFile:
    """The sdist, built once, from a copy of this tree with a developer's files in it."""
    tree = tmp_path_factory.mktemp("tree") / "smsinbox"
    shutil.copytree(
        ROOT, tree,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "node_modules", "var", "results", "__pycache__", "*.egg-info",
            ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis", "build", "dist",
        ),
    )  # fmt: skip
    for decoy in DEVELOPERS_FILES:
        (tree / decoy).parent.mkdir(parents=True, exist_ok=True)
        (tree / decoy).write_text("not for release\n")
    out = tmp_path_factory.mktemp("dist")
    # The PEP 517 hook pip and `python -m build` call, with the setuptools installed here.
    hook = "import sys; from setuptools import build_meta as b; print(b.build_sdist(sys.argv[1]))"
    built = subprocess.run(
        [sys.executable, "-c", hook, str(out)],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stderr
    name = built.stdout.strip().splitlines()[-1]
    assert name == f"smsinbox-{smsinbox.__version__}.tar.gz"
    return tarfile.open(out / name)


def sdist_files(sdist: tarfile.TarFile) -> set[str]:
    prefix = f"smsinbox-{smsinbox.__version__}/"
    return {member.name.removeprefix(prefix) for member in sdist.getmembers() if member.isfile()}


def test_the_sdist_carries_the_docs_sample_settings_licence_and_deployment_files(
    sdist: tarfile.TarFile,
) -> None:
    files = sdist_files(sdist)
    wanted = {"LICENSE", "README.md", "CHANGELOG.md", "config.example.toml"}
    wanted |= {"Dockerfile", ".dockerignore", "compose.yaml"}
    wanted |= {str(path.relative_to(ROOT)) for path in UNITS.iterdir()}
    wanted |= {str(path.relative_to(ROOT)) for path in (ROOT / "docs").rglob("*") if path.is_file()}
    assert any(name.endswith(".png") for name in wanted)
    assert wanted <= files, sorted(wanted - files)


def test_the_sdist_leaves_the_developers_working_files_out(sdist: tarfile.TarFile) -> None:
    files = sdist_files(sdist)
    assert not files & set(DEVELOPERS_FILES)
    assert not [name for name in files if name.startswith((".venv/", "var/", "bench/", "tests/"))]


def test_the_version_is_written_once_and_the_sdist_carries_it(sdist: tarfile.TarFile) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    member = sdist.extractfile(f"smsinbox-{smsinbox.__version__}/PKG-INFO")
    assert member is not None
    metadata = member.read().decode()
    assert f"\nVersion: {smsinbox.__version__}\n" in metadata
    assert "\nLicense-Expression: Apache-2.0\n" in metadata
    assert "\nLicense-File: LICENSE\n" in metadata


def test_what_the_sdist_installs_has_every_file_of_the_package(
    sdist: tarfile.TarFile, tmp_path: Path
) -> None:
    """The wheel pip builds from the sdist (as `pip install smsinbox-*.tar.gz` and the image
    do) has every module, template, stylesheet and migration of the source tree."""
    sdist.extractall(tmp_path, filter="data")
    out = tmp_path / "wheel"
    hook = "import sys; from setuptools import build_meta as b; print(b.build_wheel(sys.argv[1]))"
    built = subprocess.run(
        [sys.executable, "-c", hook, str(out)],
        cwd=tmp_path / f"smsinbox-{smsinbox.__version__}",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stderr
    with zipfile.ZipFile(out / built.stdout.strip().splitlines()[-1]) as wheel:
        installed = {name for name in wheel.namelist() if name.startswith("smsinbox/")}
    package = ROOT / "src"
    wanted = {
        str(path.relative_to(package))
        for path in (package / "smsinbox").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert wanted <= installed, sorted(wanted - installed)


def test_the_licence_is_the_apache_license_2_0(sdist: tarfile.TarFile) -> None:
    text = (ROOT / "LICENSE").read_text()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "END OF TERMS AND CONDITIONS" in text
    member = sdist.extractfile(f"smsinbox-{smsinbox.__version__}/LICENSE")
    assert member is not None and member.read().decode() == text


# --- the image itself, where a Docker daemon answers ----------------------------------------


def docker_unusable() -> str | None:
    if shutil.which("docker") is None:
        return "docker is not installed"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer"
    if info.returncode != 0:
        said = info.stderr.strip().splitlines() or ["(nothing)"]
        return f"no Docker daemon answers `docker info`: {said[-1]}"
    return None


@pytest.mark.timeout(1200)
def test_the_image_builds_and_serves_healthz_as_a_user_other_than_root() -> None:
    reason = docker_unusable()
    if reason:
        pytest.skip(reason)
    tag = f"smsinbox-test:{uuid.uuid4().hex[:12]}"
    name = tag.replace(":", "-")
    port = free_port()

    def docker(*arguments: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", *arguments], capture_output=True, text=True, timeout=timeout
        )

    built = docker("build", "--tag", tag, str(ROOT), timeout=1100)
    assert built.returncode == 0, built.stderr
    try:
        started = docker(
            "run", "--detach", "--name", name, "--publish", f"127.0.0.1:{port}:8080",
            "--health-interval", "1s", "--health-start-period", "60s", tag,
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        deadline = time.monotonic() + 90
        health = ""
        while health != "healthy":
            inspected = docker("inspect", "--format", "{{.State.Health.Status}}", name)
            health = inspected.stdout.strip()
            if health == "unhealthy" or time.monotonic() > deadline:
                pytest.fail(f"container is {health}: {docker('logs', name).stderr}")
            time.sleep(1)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        assert docker("exec", name, "id", "-u").stdout.strip() != "0"
        assert docker("exec", name, "ls", "/var/lib/smsinbox/smsinbox.db").returncode == 0
        stopped = docker("stop", "--time", "30", name)
        assert stopped.returncode == 0, stopped.stderr
        exit_code = docker("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
        assert int(exit_code) in {0, 128 + signal.SIGTERM}
    finally:
        docker("rm", "--force", name)
        docker("rmi", "--force", tag)
