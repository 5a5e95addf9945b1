"""Control commands act on what is running: the runtime dir's snapshots and the environment the master was
started with, not the file as edited since nor the shell that sends the signal; `-s quit` checks that it
can drain before it stops anything."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_config import VALID
from test_config_yaml import write_bytes

from conftest import MEDIA
from peers import Restartable, free_port, redis_server, wait_for
from workspace import Workspace, runner_processes

PORT_VARIABLE = "FRAMEFARM_TEST_REDIS_PORT"


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[tuple[Restartable, int]]:
    port, data = free_port(), tmp_path / "redis"
    data.mkdir()
    server = Restartable(lambda: redis_server(data, port))
    server.start()
    yield server, port
    server.stop()


class Pipeline:
    """A detector-free pipeline on an external Redis whose port comes from ``${FRAMEFARM_TEST_REDIS_PORT}``."""

    def __init__(self, root: Path, port: int) -> None:
        self.root, self.port = root, port
        self.config = root / "pipeline.yaml"
        (root / "in").mkdir()
        self.write()

    def write(self, extra: str = "") -> None:
        self.config.write_text(
            f"service:\n  broker: redis://127.0.0.1:${{{PORT_VARIABLE}}}/0\n  runtime_dir: run\n"
            "  stop_timeout: 10s\n  drain_timeout: 30s\n  http: {listen: 127.0.0.1:0}\npipeline:\n"
            "  inputs:\n    - {name: dir_images, alias: uploads, tag: uploads, path: in}\n"
            f"  outputs:\n    - name: image_files\n      alias: results\n      path: out\n{extra}"
        )

    def pipectl(self, *args: str, with_port: bool = False, check: bool = True) -> subprocess.CompletedProcess[str]:
        """pipectl with the broker's variable in its environment only when ``with_port``."""
        env = {k: v for k, v in os.environ.items() if k != PORT_VARIABLE}
        if with_port:
            env[PORT_VARIABLE] = str(self.port)
        command = [sys.executable, "-m", "framefarm.cli", *args, "-c", str(self.config)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
        if check and result.returncode != 0:
            raise AssertionError(f"pipectl {' '.join(args)}: {result.stdout}{result.stderr}{self.logs()}")
        return result

    def logs(self) -> str:
        return "\n".join(f"== {p.name}\n{p.read_text()[-1500:]}" for p in (self.root / "run" / "logs").glob("*.log"))

    def drop(self, name: str) -> None:
        shutil.copyfile(MEDIA / "eagle.jpg", self.root / f".{name}.part")
        os.replace(self.root / f".{name}.part", self.root / "in" / name)

    def wait_result(self, name: str) -> dict:
        result = self.root / "out" / "uploads" / f"{Path(name).stem}.json"
        wait_for(result.exists, 60, f"the result of {name} ({self.logs()})")
        return json.loads(result.read_text())

    def states(self) -> dict[str, str]:
        table = self.pipectl("status").stdout.split("\n\n")[0].splitlines()[1:]  # processes, before the counters
        return {line.split()[0]: line.split()[1] for line in table}

    def stopped(self) -> bool:
        return runner_processes(self.root) == [] and not (self.root / "run" / "supervisord.pid").exists()


@pytest.fixture
def pipeline(tmp_path: Path, redis: tuple[Restartable, int]) -> Iterator[Pipeline]:
    started = Pipeline(tmp_path, redis[1])
    started.pipectl("start", with_port=True)
    yield started
    if not started.stopped():
        started.pipectl("-s", "stop", check=False)
    Workspace(tmp_path).force_stop()  # whatever the test left (a file pipectl cannot read), nothing stays running


def test_status_and_quit_use_the_variables_the_pipeline_was_started_with(pipeline: Pipeline) -> None:
    pipeline.drop("eagle.jpg")
    assert pipeline.wait_result("eagle.jpg")["source"] == "eagle.jpg"
    status = pipeline.pipectl("status").stdout  # this shell has no FRAMEFARM_TEST_REDIS_PORT
    assert "frames in flight: 0" in status and "uploads: " in status, status
    pipeline.drop("second.jpg")
    pipeline.pipectl("-s", "quit")
    assert pipeline.stopped()
    assert (pipeline.root / "out" / "uploads" / "second.json").exists() or (
        pipeline.root / "in" / "second.jpg"
    ).exists()


def test_quit_that_cannot_reach_the_broker_stops_nothing(pipeline: Pipeline, redis: tuple[Restartable, int]) -> None:
    wait_for(lambda: set(pipeline.states()) == {"uploads", "results", "web-face"}, 30, "both modules")
    server, _ = redis
    server.stop()
    result = pipeline.pipectl("-s", "quit", check=False)
    assert result.returncode == 1, result
    assert "does not answer" in result.stderr and "nothing was stopped" in result.stderr, result.stderr
    assert "STOPPED" not in pipeline.states().values()
    assert len(runner_processes(pipeline.root)) == 2
    server.start()
    pipeline.pipectl("-s", "quit")
    assert pipeline.stopped()


def test_status_stop_and_quit_act_on_what_runs_when_the_file_has_a_yaml_error(pipeline: Pipeline) -> None:
    pipeline.write(extra="      save_image: [\n")  # an error after service.runtime_dir
    assert pipeline.pipectl("-t", check=False).returncode == 1
    wait_for(lambda: set(pipeline.states()) == {"uploads", "results", "web-face"}, 30, "both modules")
    pipeline.pipectl("-s", "quit")
    assert pipeline.stopped()
    pipeline.write()
    pipeline.pipectl("start", with_port=True)
    pipeline.config.write_text(pipeline.config.read_text().replace("service:", "service: [", 1))
    result = pipeline.pipectl("-s", "stop", check=False)  # broken before it names its runtime dir
    assert result.returncode == 1 and "cannot find the running pipeline" in result.stderr, result.stderr
    pipeline.write(extra="      bogus: 1\n")  # a schema error: the file still names its runtime dir
    pipeline.pipectl("-s", "stop")
    assert pipeline.stopped()


def test_reload_checks_the_file_with_the_running_pipelines_variables(pipeline: Pipeline) -> None:
    wait_for(lambda: "results" in pipeline.states(), 30, "the output")
    pipeline.write(extra="      save_image: raw\n")  # the input now stores whole frames: it restarts too
    assert "restarted ['results', 'uploads']" in pipeline.pipectl("-s", "reload").stdout
    pipeline.drop("eagle.jpg")
    pipeline.wait_result("eagle.jpg")
    assert (pipeline.root / "out" / "uploads" / "eagle.jpg").read_bytes() == (MEDIA / "eagle.jpg").read_bytes()
    pipeline.write(extra="      save_image: ${FRAMEFARM_TEST_UNSET}\n")
    result = pipeline.pipectl("-s", "reload", with_port=True, check=False)
    assert result.returncode == 1
    assert "${FRAMEFARM_TEST_UNSET} is not set in the running pipeline's environment" in result.stderr


@pytest.mark.parametrize("command", [["-t"], ["-s", "stop"], ["status"], ["-s", "quit"]])
def test_pipectl_on_a_binary_or_latin1_file_never_prints_a_traceback(tmp_path: Path, command: list[str]) -> None:
    for content in [VALID.replace("match", "m\xe4tch").encode("latin-1"), Path(sys.executable).read_bytes()[:512]]:
        path = write_bytes(tmp_path, content)
        result = subprocess.run(
            [sys.executable, "-m", "framefarm.cli", *command, "-c", str(path)], capture_output=True, text=True
        )
        assert result.returncode == 1, result
        assert "Traceback" not in result.stderr, result.stderr
        said = ("pipeline.yaml:", "not running in", "cannot find the running pipeline: ")
        assert any(text in result.stderr for text in said), result.stderr


def test_a_latin1_byte_in_a_comment_still_names_the_runtime_dir_to_signals(tmp_path: Path) -> None:
    path = write_bytes(tmp_path, VALID.replace('match: "cam.*"', 'match: "cam.*" # caf\xe9').encode("latin-1"))
    result = subprocess.run([sys.executable, "-m", "framefarm.cli", "-s", "stop", "-c", str(path)], capture_output=True)
    assert result.returncode == 1
    assert f"not running in {tmp_path / 'run'}" in result.stderr.decode()
