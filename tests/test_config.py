"""Config validation: valid files pass; each kind of mistake names file, line and key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from framefarm.bus import check_service
from framefarm.config.pipeline import load_pipeline
from framefarm.config.schema import FramesOptions, ServiceOptions
from framefarm.config.urls import redact_url
from framefarm.errors import ConfigError

from conftest import MODEL, NAMES

VALID = f"""\
service:
  runtime_dir: run
  frames: {{ttl: 10s}}
pipeline:
  inputs:
    - name: dir_images
      alias: uploads
      tag: cam.uploads
      path: ${{INBOX:-in}}
  processors:
    - name: yolo
      match: "cam.*"
      model: {MODEL}
      names: {NAMES}
      workers: 2
  outputs:
    - name: image_files
      match: "*"
      path: out
"""


def write(tmp_path: Path, text: str, name: str = "pipeline.yaml") -> Path:
    (tmp_path / "in").mkdir(exist_ok=True)
    path = tmp_path / name
    path.write_text(text)
    return path


def problems(path: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_pipeline(path, env or {}, check_service=check_service)
    return info.value.problems


def test_valid_file_loads_with_defaults_and_routes(tmp_path: Path) -> None:
    pipeline = load_pipeline(write(tmp_path, VALID), {})
    assert [m.alias for m in pipeline.modules] == ["uploads", "yolo.1", "image_files.1"]
    assert pipeline.service.frames.ttl == 10.0
    assert pipeline.module("uploads").options.path == Path("in")
    assert pipeline.routes.first_hop("cam.uploads") == ["yolo.1"]
    assert pipeline.routes.after("yolo.1", "cam.uploads") == ["image_files.1"]
    assert pipeline.routes.first_hop("other") == ["image_files.1"]  # raw frames when no processor matches
    assert pipeline.routes.store_side("cam.uploads") == 416  # the network's input: frames are stored no larger
    assert pipeline.routes.store_side("other") == 32  # image_files reads no frame unless it saves it
    saving = load_pipeline(write(tmp_path, VALID + "      save_image: raw\n"), {})
    assert saving.routes.store_side("cam.uploads") is None  # it saves the frame: whole
    assert pipeline.runtime_dir == tmp_path / "run"


def test_env_expansion_uses_value_then_default(tmp_path: Path) -> None:
    (tmp_path / "box").mkdir()
    path = write(tmp_path, VALID)
    assert load_pipeline(path, {"INBOX": "box"}).module("uploads").options.path == Path("box")
    assert load_pipeline(path, {}).module("uploads").options.path == Path("in")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("  frames: {ttl: 10s}", "  frames: {ttl: soon}", 'pipeline.yaml:3: service.frames.ttl: Value error, "soon"'),
        ("  runtime_dir: run", "  runtime_dir: run\n  brokr: x", "pipeline.yaml:3: service.brokr: unknown option"),
        ("name: image_files", "name: imagefiles", "pipeline.yaml:17: pipeline.outputs[0].name: unknown output kind"),
        ('match: "*"', 'match: "camm.*"', "pipeline.yaml:18: pipeline.outputs[0].match: no input produces a tag"),
        ("      workers: 2", "      workers: 0", "pipeline.yaml:15: pipeline.processors[0].workers: Input should be"),
        ("path: ${INBOX:-in}", "path: ${INBOX}", "pipeline.yaml:9: pipeline.inputs[0].path: ${INBOX} is not set"),
        ("path: ${INBOX:-in}", "path: nowhere", "pipeline.yaml:9: pipeline.inputs[0].path: "),
        (f"model: {MODEL}", "model: missing.onnx", "pipeline.yaml:13: pipeline.processors[0].model: model file not"),
        ("alias: uploads", "alias: yolo.1", 'pipeline.yaml:11: pipeline.processors[0].alias: alias "yolo.1" is used'),
        (
            "tag: cam.uploads",
            "tag: cam.uploads\n      colour: red",
            "pipeline.yaml:9: pipeline.inputs[0].colour: unknown",
        ),
    ],
)
def test_each_mistake_names_file_line_and_key(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert old in VALID
    found = problems(write(tmp_path, VALID.replace(old, new)))
    assert any(p.startswith(expected) for p in found), found


NSQ = "  runtime_dir: run\n  broker: nsq://127.0.0.1:4150"


def nsq_frames(frames: str) -> str:
    """VALID on an NSQ broker with ``frames`` (YAML lines under ``frames:``) instead of the ttl."""
    return VALID.replace("  runtime_dir: run", NSQ).replace("  frames: {ttl: 10s}", "  frames:\n" + frames)


def test_raw_frames_inline_on_nsq_are_rejected_with_what_to_change(tmp_path: Path) -> None:
    found = problems(write(tmp_path, nsq_frames("    format: raw\n")))
    assert len(found) == 1, found
    assert found[0].startswith(
        "pipeline.yaml:5: service.frames.format: raw frames travel inside NSQ messages and would not fit under "
        "frames.max_inline (786432): frames.max_side is not set"
    )
    assert "frames.format: jpeg" in found[0] and "frames.store: redis://" in found[0]
    assert "frames.max_side to 512 or less" in found[0]
    found = problems(write(tmp_path, nsq_frames("    format: raw\n    max_side: 640\n")))
    assert found[0].startswith("pipeline.yaml:5: service.frames.format: ") and "can be 1228800 bytes" in found[0]


@pytest.mark.parametrize(
    "frames",
    [
        "    ttl: 10s\n",  # auto: jpeg inline
        "    format: jpeg\n",
        "    format: raw\n    max_side: 480\n",  # 480 * 480 * 3 fits the default max_inline
        "    format: raw\n    store: redis://127.0.0.1:6379/0\n",
        "    max_inline: 4000000\n    max_message: 8388608\n",  # nsqd runs with --max-msg-size=8388608
    ],
)
def test_frames_that_fit_pass_on_nsq(tmp_path: Path, frames: str) -> None:
    assert load_pipeline(write(tmp_path, nsq_frames(frames)), {}).service.frames


@pytest.mark.parametrize(
    ("broker", "frames", "decided"),
    [
        ("nsq://127.0.0.1:4150", FramesOptions(), "jpeg"),  # inline: frames must stay small
        ("nsq://127.0.0.1:4150", FramesOptions(store="redis://127.0.0.1:6379/0"), "raw"),
        ("nats://127.0.0.1:4222", FramesOptions(), "raw"),
        (None, FramesOptions(format="png"), "png"),
    ],
)
def test_auto_frame_format_is_jpeg_only_where_frames_travel_inline(
    broker: str | None, frames: FramesOptions, decided: str
) -> None:
    assert ServiceOptions(broker=broker, frames=frames).frame_format == decided


def test_raw_frames_pass_where_the_broker_stores_them(tmp_path: Path) -> None:
    load_pipeline(write(tmp_path, VALID.replace("  frames: {ttl: 10s}", "  frames: {format: raw}")), {})


def test_max_inline_above_nsqd_message_size_is_rejected(tmp_path: Path) -> None:
    found = problems(write(tmp_path, nsq_frames("    ttl: 10s\n    max_inline: 2000000\n")))
    assert found == [
        "pipeline.yaml:6: service.frames.max_inline: 2000000 is more than nsqd's default --max-msg-size "
        "(1048576 bytes): nsqd would refuse frames that large; lower it, or run nsqd with a larger --max-msg-size "
        "and set frames.max_message to it, or keep frames in Redis with frames.store: redis://host:6379/0"
    ]
    found = problems(write(tmp_path, nsq_frames("    max_inline: 2000000\n    max_message: 1500000\n")))
    assert found[0].startswith(
        "pipeline.yaml:5: service.frames.max_inline: 2000000 is more than frames.max_message (1500000, "
    )


def test_pipectl_t_reports_frames_that_cannot_fit(tmp_path: Path) -> None:
    bad = write(tmp_path, nsq_frames("    format: raw\n"))
    result = subprocess.run(
        [sys.executable, "-m", "framefarm.cli", "-t", "-c", str(bad)], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "pipeline.yaml:5: service.frames.format: raw frames travel inside NSQ messages" in result.stderr
    assert f"configuration file {bad} test failed" in result.stderr


def test_unknown_kind_lists_known_kinds(tmp_path: Path) -> None:
    found = problems(write(tmp_path, VALID.replace("name: dir_images", "name: ftp")))
    assert found == [
        'pipeline.yaml:6: pipeline.inputs[0].name: unknown input kind "ftp" '
        "(known: dir_images, dir_videos, http, mjpeg, onvif_events, rtmp, rtsp)"
    ]


def test_tag_without_output_is_reported(tmp_path: Path) -> None:
    found = problems(
        write(tmp_path, VALID.replace('match: "*"', 'match: "cam.*"').replace("tag: cam.uploads", "tag: x"))
    )
    assert 'pipeline.yaml:8: pipeline.inputs[0].tag: no output matches tag "x": its frames would go nowhere' in found


def test_every_error_is_reported_at_once(tmp_path: Path) -> None:
    text = VALID.replace("runtime_dir: run", "runtime_dir: run\n  brokr: x").replace("after", "x")
    text = text.replace("name: image_files", "name: imagefiles").replace("workers: 2", "workers: -1")
    assert len(problems(write(tmp_path, text))) == 3


def test_yaml_syntax_error_and_duplicate_key(tmp_path: Path) -> None:
    assert problems(write(tmp_path, "service: [\n"))[0].startswith("pipeline.yaml:2: invalid YAML")
    found = problems(write(tmp_path, VALID.replace("  frames: {ttl: 10s}", "  frames: {ttl: 10s}\n  runtime_dir: x")))
    assert "pipeline.yaml:4: service.runtime_dir: duplicate key" in found


def test_pipectl_t_prints_success_and_failure(tmp_path: Path) -> None:
    good = write(tmp_path, VALID)
    result = subprocess.run(
        [sys.executable, "-m", "framefarm.cli", "-t", "-c", str(good)], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert result.stdout.strip() == f"configuration file {good} test is successful"
    bad = write(tmp_path, VALID.replace('match: "*"', 'match: "camm.*"'), "bad.yaml")
    result = subprocess.run(
        [sys.executable, "-m", "framefarm.cli", "test", "-c", str(bad)], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert 'bad.yaml:18: pipeline.outputs[0].match: no input produces a tag matching "camm.*"' in result.stderr
    assert f"configuration file {bad} test failed" in result.stderr


def test_describe_lists_options_with_descriptions() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "framefarm.cli", "describe", "dir_images"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert "after" in result.stdout and "default 'move'" in result.stdout


def test_redact_url_hides_password() -> None:
    assert redact_url("rtsp://admin:s3cret@10.0.0.5/stream1") == "rtsp://admin:***@10.0.0.5/stream1"
    assert redact_url("rtsp://10.0.0.5/stream1") == "rtsp://10.0.0.5/stream1"
