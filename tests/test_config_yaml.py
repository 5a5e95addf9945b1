"""Files the YAML loader cannot take give `file:line: key: message`, never a traceback; merge keys work;
typed scalars given for text options are their text as written; names and model files that cannot serve."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from test_config import VALID, problems, write

from framefarm.config.pipeline import load_pipeline
from framefarm.config.registry import REGISTRIES
from framefarm.supervisord.render import Layout, render

from conftest import MODEL, NAMES

BILLION_LAUGHS = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}' if prev else 'x'] * 10)}]\n"
    for prev, name in zip(["", "a", "b", "c", "d", "e"], ["a", "b", "c", "d", "e", "f"], strict=True)
)


def write_bytes(tmp_path: Path, data: bytes) -> Path:
    (tmp_path / "in").mkdir(exist_ok=True)
    path = tmp_path / "pipeline.yaml"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (VALID.replace("runtime_dir: run", "runtime_dir: caf\xe9").encode("latin-1"), "pipeline.yaml:2: not UTF-8"),
        (Path(sys.executable).resolve().read_bytes()[:4096], "pipeline.yaml:1: "),
        (VALID.encode() + b"\x00\x01binary\n", "pipeline.yaml:20: control characters"),
        (VALID.encode() + b"x: \x7f\n", "pipeline.yaml:20: invalid YAML: character #x007f"),
        (VALID.replace("tag: cam.uploads", "tag: !secret cam").encode(), "pipeline.yaml:8: pipeline.inputs[0].tag: "),
        (VALID.replace("path: out", "path: !!python/name:os.system").encode(), "pipeline.yaml:19: pipeline.outputs"),
        (VALID.replace("workers: 2", "workers: !!int two").encode(), "pipeline.yaml:15: pipeline.processors[0].work"),
        (VALID.replace("workers: 2", "workers: !!binary aGk=").encode(), "pipeline.yaml:15: pipeline.processors[0]."),
        (VALID.replace("  frames: {ttl: 10s}", "  frames: &f {ttl: *f}").encode(), "pipeline.yaml:3: service.frames."),
        (VALID.replace("  inputs:", "  inputs: &i\n    - *i").encode(), "pipeline.yaml:5: pipeline.inputs[0]: an"),
        (VALID.replace("  frames: {ttl: 10s}", "  frames: &f\n    <<: *f").encode(), "pipeline.yaml:4: service.frame"),
        (
            VALID.replace("  frames: {ttl: 10s}", "  frames:\n    <<: 3").encode(),
            "pipeline.yaml:4: service.frames: `<<`",
        ),
        (VALID.replace("  frames: {ttl: 10s}", "  ? [a]\n  : 1").encode(), "pipeline.yaml:3: service: a key must"),
        (b"service: " + b"[" * 400 + b"]" * 400 + b"\n", "pipeline.yaml:1: nested more than 64 levels"),
        (BILLION_LAUGHS.encode(), "pipeline.yaml:1: more than 100000 values"),
        (VALID.encode() + b"---\nservice: {}\n", "pipeline.yaml:20: invalid YAML: expected a single document"),
    ],
)
def test_a_file_the_loader_cannot_take_gives_file_line(tmp_path: Path, content: bytes, expected: str) -> None:
    found = problems(write_bytes(tmp_path, content))
    assert any(p.startswith(expected) for p in found), found


MERGED = f"""\
service:
  runtime_dir: run
pipeline:
  inputs:
    - &camera
      name: dir_images
      tag: cam.a
      path: in
      settle: 2s
    - <<: *camera
      alias: second
      tag: cam.b
      path: in/b
  processors:
    - name: yolo
      model: {MODEL}
  outputs:
    - &files
      name: image_files
      path: out
    - <<: [*files, {{save_image: raw, path: out2}}]
      alias: raw
"""


def test_merge_keys_merge_with_own_keys_winning_and_first_merged_mapping_winning(tmp_path: Path) -> None:
    (tmp_path / "in" / "b").mkdir(parents=True)  # two inputs may not watch one folder
    pipeline = load_pipeline(write(tmp_path, MERGED), {})
    second = pipeline.module("second").options
    assert (second.tag, second.path, second.settle) == ("cam.b", Path("in/b"), 2.0)
    raw = pipeline.module("raw").options
    assert (raw.path, raw.save_image) == (Path("out"), "raw")  # *files comes first in the list, so it wins


def test_a_mistake_in_a_merged_mapping_names_its_line(tmp_path: Path) -> None:
    (tmp_path / "in" / "b").mkdir(parents=True)
    found = problems(write(tmp_path, MERGED.replace("      settle: 2s", "      settle: soon")))
    assert len(found) == 2, found
    assert found[0].startswith("pipeline.yaml:9: pipeline.inputs[0].settle: "), found
    assert found[1].startswith("pipeline.yaml:9: pipeline.inputs[1].settle: "), found


@pytest.mark.parametrize("written", ["12", "2024-01-01", "1.10", "yes", "0x1F", "2024-13-45", "1_000", "1e3"])
def test_typed_scalars_given_for_alias_and_tag_are_their_text_as_written(tmp_path: Path, written: str) -> None:
    text = VALID.replace("alias: uploads", f"alias: {written}").replace("tag: cam.uploads", f"tag: {written}")
    text = text.replace('match: "cam.*"', 'match: "*"')
    pipeline = load_pipeline(write(tmp_path, text), {})
    options = pipeline.modules[0].options
    assert (options.alias, options.tag) == (written, written)
    render(pipeline)  # the snapshot a module starts from holds the text too
    (snapshot,) = Layout(pipeline.runtime_dir).modules.glob(f"{written}-*.json")
    data = json.loads(snapshot.read_text())
    kind = REGISTRIES["inputs"].get(data["kind"])
    assert kind.Options.model_validate({**data["module"], "alias": data["alias"]}).tag == written


def test_a_typed_scalar_where_a_number_is_expected_is_still_refused(tmp_path: Path) -> None:
    found = problems(write(tmp_path, VALID.replace("workers: 2", "workers: 2024-01-01")))
    assert any(p.startswith("pipeline.yaml:15: pipeline.processors[0].workers: ") for p in found), found


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (b"", "pipeline.yaml:14: pipeline.processors[0].names: class names file {path} has no names"),
        (b"\n  \n", "pipeline.yaml:14: pipeline.processors[0].names: class names file {path} has no names"),
        (b"person\ncaf\xe9\n", "pipeline.yaml:14: pipeline.processors[0].names: class names file {path} line 2"),
        (b"\x7fELF\x02\x01\x01\x00\x00\x00", "pipeline.yaml:14: pipeline.processors[0].names: class names file"),
        (b"person\x00bicycle\n", "pipeline.yaml:14: pipeline.processors[0].names: class names file {path} line 1"),
    ],
)
def test_a_names_file_that_is_empty_or_binary_is_refused(tmp_path: Path, names: bytes, expected: str) -> None:
    path = tmp_path / "bad.names"
    path.write_bytes(names)
    found = problems(write(tmp_path, VALID.replace(f"names: {NAMES}", f"names: {path}")))
    assert any(p.startswith(expected.format(path=path)) for p in found), found


def test_a_model_or_names_path_that_is_a_directory_says_so(tmp_path: Path) -> None:
    folder = tmp_path / "models.d"
    folder.mkdir()
    found = problems(write(tmp_path, VALID.replace(f"model: {MODEL}", f"model: {folder}")))
    assert f"pipeline.yaml:13: pipeline.processors[0].model: model {folder} is a directory, not a file" in found
    found = problems(write(tmp_path, VALID.replace(f"names: {NAMES}", f"names: {folder}")))
    assert f"pipeline.yaml:14: pipeline.processors[0].names: class names file {folder} is a directory" in found
