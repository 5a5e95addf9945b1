"""supervisord.conf rendered from a pipeline: programs, order, pools, logs, and no secrets."""

from __future__ import annotations

import configparser
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from supervisor.options import ClientOptions, ServerOptions

from framefarm.config.pipeline import load_pipeline
from framefarm.supervisord.render import Layout, render

from conftest import MEDIA
from peers import wait_for
from workspace import Workspace, pipeline_yaml, runner_processes


def rendered(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> configparser.RawConfigParser:
    ws = Workspace(tmp_path)
    ws.write(text)
    conf = render(load_pipeline(ws.config, env or {}))
    parser = configparser.RawConfigParser()
    parser.read(conf)
    return parser


def test_programs_order_pools_and_options(tmp_path: Path) -> None:
    conf = rendered(tmp_path, pipeline_yaml(yolo_extra="      workers: 3\n"))
    programs = {s.split(":", 1)[1]: conf[s] for s in conf.sections() if s.startswith("program:")}
    assert set(programs) == {"embedded-broker", "web-face", "results", "detector", "uploads"}
    order = sorted(programs, key=lambda name: int(programs[name]["priority"]))
    assert order == ["embedded-broker", "web-face", "results", "detector", "uploads"]  # stop order is the reverse
    assert programs["detector"]["numprocs"] == "3"
    assert programs["detector"]["process_name"] == "%(program_name)s-%(process_num)d"
    for name, program in programs.items():
        assert program["stopasgroup"] == "true" and program["killasgroup"] == "true", name
        assert program["stdout_logfile"].startswith(str(tmp_path / "run" / "logs")), name
    broker = programs["embedded-broker"]["command"]
    assert "--appendonly yes --appenddirname appendonlydir --appendfsync everysec" in broker
    assert "--shutdown-on-sigterm nosave" in broker and "--save ''" in broker  # no RDB to load over the AOF
    assert programs["embedded-broker"]["umask"] == "077"  # its files hold frames: owner-only
    assert conf["unix_http_server"]["file"] == str(tmp_path / "run" / "supervisor.sock")


def test_external_broker_has_no_embedded_program(tmp_path: Path) -> None:
    conf = rendered(tmp_path, pipeline_yaml(broker="redis://127.0.0.1:6399/0"))
    assert "program:embedded-broker" not in conf.sections()


def test_snapshot_changes_only_for_the_changed_module(tmp_path: Path) -> None:
    def changed(first: configparser.RawConfigParser, second: configparser.RawConfigParser) -> list[str]:
        programs = [s for s in first.sections() if s.startswith("program:")]
        return sorted(s for s in programs if first[s]["command"] != second[s]["command"])

    first = rendered(tmp_path, pipeline_yaml())
    assert changed(first, rendered(tmp_path, pipeline_yaml(out_extra="      threads: 3\n"))) == ["program:results"]
    # Saving the frame makes the output need it whole: the input stores whole frames from then on.
    saving = rendered(tmp_path, pipeline_yaml(out_extra="      save_image: raw\n"))
    assert changed(first, saving) == ["program:results", "program:uploads"]
    # The web face's options restart it alone; a module's never restart the face.
    moved = rendered(tmp_path, pipeline_yaml().replace("listen: 127.0.0.1:0", "listen: 127.0.0.1:9999"))
    assert changed(first, moved) == ["program:web-face"]


def test_secrets_stay_out_of_rendered_files(tmp_path: Path) -> None:
    text = pipeline_yaml(broker="redis://:${REDIS_PASS}@127.0.0.1:6399/0")
    rendered(tmp_path, text, {"REDIS_PASS": "hunter2-secret"})
    layout = Layout(tmp_path / "run")
    files = [layout.conf, *layout.modules.glob("*.json")]
    assert len(files) == 5  # and the web face's
    for path in files:
        assert "hunter2-secret" not in path.read_text(), path
    snapshot = json.loads(next(layout.modules.glob("uploads-*.json")).read_text())
    assert snapshot["broker"] == "redis://:${REDIS_PASS}@127.0.0.1:6399/0"


def test_plain_supervisord_runs_the_rendered_pipeline(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    ws.write(ws.yaml())
    conf = Path(ws.pipectl("render").stdout.strip())
    subprocess.run([sys.executable, "-m", "supervisor.supervisord", "-c", str(conf)], check=True)
    try:
        ws.drop("eagle.jpg", "eagle.jpg")
        (result,) = ws.wait_results(1)
        assert "bird" in {d["class_name"] for d in result["detections"]}
    finally:
        ws.supervisorctl("shutdown")
        wait_for(lambda: runner_processes(tmp_path) == [], 60, "every module to stop")


# Folder names with every character supervisord.conf gives a meaning to: spaces, ; and # after a space
# (inline comments), % (expansions), quotes, a backslash and $ (shell words), and non-ASCII letters.
AWKWARD = [
    ("é #1 ;'\"\\$", "ü #2"),  # short: the sockets' paths must stay under 100 bytes
    ("c 50% é", "r 5%d ✓"),
]


def awkward_pipeline(root: Path, runtime: str) -> Path:
    """A detector-free pipeline (quick to start) in ``root`` with ``runtime`` as its runtime dir."""
    (root / "in").mkdir(parents=True)
    config = root / "pipeline.yaml"
    config.write_text(
        f"service:\n  runtime_dir: {json.dumps(runtime)}\n  stop_timeout: 10s\n"
        "  http: {listen: 127.0.0.1:0}\npipeline:\n"
        "  inputs:\n    - {name: dir_images, alias: uploads, tag: uploads, path: in}\n"
        "  outputs:\n    - {name: image_files, alias: results, path: out}\n"
    )
    return config


@pytest.mark.parametrize(("folder", "runtime"), AWKWARD)
def test_supervisord_reads_back_every_rendered_path_and_command(tmp_path: Path, folder: str, runtime: str) -> None:
    root = tmp_path / folder
    conf = render(load_pipeline(awkward_pipeline(root, runtime), {}))
    layout = Layout(root / runtime)
    options = ServerOptions()
    options.configfile = str(conf)
    options.process_config(do_usage=False)
    assert (options.logfile, options.pidfile) == (str(layout.supervisord_log), str(layout.pidfile))
    assert (options.childlogdir, Path(options.directory).resolve()) == (str(layout.logs), root)
    assert [c["file"] for c in options.configroot.supervisord.server_configs] == [str(layout.socket)]
    commands = {}
    for group in options.process_group_configs:
        (process,) = group.process_configs
        commands[process.name] = shlex.split(process.command)
        assert process.stdout_logfile == str(layout.logs / f"{process.name}.log")
    snapshots = {path.name.rsplit("-", 1)[0]: str(path) for path in layout.modules.glob("*.json")}
    assert commands["uploads"] == [sys.executable, "-m", "framefarm.runner", snapshots["uploads"]]
    assert commands["results"][-1] == snapshots["results"]
    broker = commands["embedded-broker"]
    assert broker[broker.index("--dir") + 1] == str(layout.root / "broker")
    client = ClientOptions()
    client.configfile = str(conf)
    client.process_config(do_usage=False)
    assert client.serverurl == f"unix://{layout.socket}"


@pytest.mark.parametrize(("folder", "runtime"), AWKWARD)
def test_a_pipeline_in_awkward_folders_starts_every_module_and_quits(tmp_path: Path, folder: str, runtime: str) -> None:
    root = tmp_path / folder
    config = awkward_pipeline(root, runtime)

    def pipectl(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "framefarm.cli", *args, "-c", str(config)]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)

    pipectl("start")
    try:
        shutil.copyfile(MEDIA / "eagle.jpg", root / ".eagle.part")
        os.replace(root / ".eagle.part", root / "in" / "eagle.jpg")
        result = root / "out" / "uploads" / "eagle.json"
        wait_for(result.exists, 60, f"a result ({list((root / runtime / 'logs').glob('*'))})")
        assert json.loads(result.read_text())["source"] == "eagle.jpg"
        states = pipectl("status").stdout
        assert all(f"{name} " in states for name in ("embedded-broker", "web-face", "uploads", "results")), states
        assert states.count("RUNNING") == 4, states
        ctl = [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(root / runtime / "supervisord.conf")]
        assert "uploads" in subprocess.run([*ctl, "status"], capture_output=True, text=True, timeout=30).stdout
    finally:
        pipectl("-s", "quit")
    assert runner_processes(root) == []
