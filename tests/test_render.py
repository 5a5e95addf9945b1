"""supervisord.conf rendered from a pipeline: programs, order, pools, logs, and no secrets."""

from __future__ import annotations

import configparser
import json
import subprocess
import sys
from pathlib import Path

from framefarm.config.pipeline import load_pipeline
from framefarm.supervisord.render import Layout, render

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
    assert set(programs) == {"embedded-broker", "results", "detector", "uploads"}
    order = sorted(programs, key=lambda name: int(programs[name]["priority"]))
    assert order == ["embedded-broker", "results", "detector", "uploads"]  # stop order is the reverse
    assert programs["detector"]["numprocs"] == "3"
    assert programs["detector"]["process_name"] == "%(program_name)s-%(process_num)d"
    for name, program in programs.items():
        assert program["stopasgroup"] == "true" and program["killasgroup"] == "true", name
        assert program["stdout_logfile"].startswith(str(tmp_path / "run" / "logs")), name
    assert "--shutdown-on-sigterm save" in programs["embedded-broker"]["command"]
    assert "--save ''" in programs["embedded-broker"]["command"]
    assert conf["unix_http_server"]["file"] == str(tmp_path / "run" / "supervisor.sock")


def test_external_broker_has_no_embedded_program(tmp_path: Path) -> None:
    conf = rendered(tmp_path, pipeline_yaml(broker="redis://127.0.0.1:6399/0"))
    assert "program:embedded-broker" not in conf.sections()


def test_snapshot_changes_only_for_the_changed_module(tmp_path: Path) -> None:
    first = rendered(tmp_path, pipeline_yaml())
    second = rendered(tmp_path, pipeline_yaml(out_extra="      save_image: raw\n"))
    changed = [s for s in first.sections() if s.startswith("program:") and first[s]["command"] != second[s]["command"]]
    assert changed == ["program:results"]


def test_secrets_stay_out_of_rendered_files(tmp_path: Path) -> None:
    text = pipeline_yaml(broker="redis://:${REDIS_PASS}@127.0.0.1:6399/0")
    rendered(tmp_path, text, {"REDIS_PASS": "hunter2-secret"})
    layout = Layout(tmp_path / "run")
    files = [layout.conf, *layout.modules.glob("*.json")]
    assert len(files) == 4
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
