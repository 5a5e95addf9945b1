"""What `pipectl -t` checks beyond the schema: passwords that break their URL (never printed), a runtime dir
that cannot be used, and folders that modules would share in a loop."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_config import VALID, problems, write

from framefarm.config.folders import Use, conflicts
from framefarm.config.registry import REGISTRIES, CheckContext, FolderUse
from framefarm.config.schema import ServiceOptions
from framefarm.config.urls import redact_text, redact_url

from peers import free_port, running

PIECES = ("Qz7", "Kx9", "Wv3")  # no message says these by chance, so finding one means a secret leaked
PASSWORDS = ["Qz7@Kx9/Wv3", "Qz7/Kx9", "Qz7#Kx9?Wv3", "Qz7 Kx9", "Qz7%Kx9", "12/Kx9Wv3", "Qz7:Kx9/Wv3", "Qz7@Kx9"]
BROKER_LINE = "  runtime_dir: run\n  broker: {url}"


def pipectl(path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "framefarm.cli", *args, "-c", str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def without_detector(text: str) -> str:
    """VALID without its yolo processor: these checks need no model, so each test runs quicker."""
    start, end = text.index("  processors:\n"), text.index("  outputs:\n")
    return text[:start] + text[end:]


@pytest.mark.parametrize("password", PASSWORDS)
@pytest.mark.parametrize(
    ("option", "value", "env"),
    [
        ("broker", "redis://:${PASS}@127.0.0.1:6379/0", {"PASS": "{pw}"}),
        ("broker", "redis://user:${PASS}@127.0.0.1:6379/0", {"PASS": "{pw}"}),
        ("broker", "${BROKER}", {"BROKER": "redis://:{pw}@127.0.0.1:6379/0"}),
        ("broker", '"redis://:{pw}@127.0.0.1:6379/0"', {}),
        ("frames", '{ttl: 10s, store: "redis://:${PASS}@127.0.0.1:6379/1"}', {"PASS": "{pw}"}),
        ("frames", '{ttl: 10s, store: "${STORE}"}', {"STORE": "redis://u:{pw}@127.0.0.1:6379/1"}),
    ],
)
def test_a_password_that_breaks_its_url_is_refused_without_any_piece_of_it(
    tmp_path: Path, password: str, option: str, value: str, env: dict[str, str]
) -> None:
    line = f"  {option}: {value.replace('{pw}', password)}"
    text = without_detector(VALID)
    if option == "frames":
        text = text.replace("  frames: {ttl: 10s}", line)
    else:
        text = text.replace("  runtime_dir: run", f"  runtime_dir: run\n{line}")
    found = problems(write(tmp_path, text), {name: v.replace("{pw}", password) for name, v in env.items()})
    assert len(found) == 1, found
    assert found[0].startswith(f"pipeline.yaml:3: service.{option}") and "percent-encode" in found[0], found
    assert not [piece for piece in PIECES if piece in found[0]], found


@pytest.mark.parametrize("command", [["-t"], ["-t", "--connect"], ["start"], ["render"]])
def test_no_command_prints_a_piece_of_a_password_that_breaks_its_url(tmp_path: Path, command: list[str]) -> None:
    url = "redis://:${PASS}@127.0.0.1:6379/0"
    path = write(tmp_path, without_detector(VALID).replace("  runtime_dir: run", BROKER_LINE.format(url=url)))
    result = pipectl(path, *command, env={"PASS": "Qz7@Kx9/Wv3"})
    said = result.stdout + result.stderr
    assert result.returncode == 1 and "pipeline.yaml:3: service.broker: ${PASS} holds characters" in said, said
    assert not [piece for piece in PIECES if piece in said] and "Traceback" not in said, said


def test_a_percent_encoded_password_reaches_a_real_broker_and_is_never_printed(tmp_path: Path) -> None:
    port, password = free_port(), "Qz7@Kx9/Wv3 #%"
    args = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--requirepass", password]
    url = f"redis://:${{PASS}}@127.0.0.1:{port}/0"
    text = without_detector(VALID).replace("  runtime_dir: run", BROKER_LINE.format(url=url))
    with running(args, port, tmp_path / "redis.log"):
        result = pipectl(write(tmp_path, text), "-t", "--connect", env={"PASS": "Qz7%40Kx9%2FWv3%20%23%25"})
        assert result.returncode == 0, result.stderr
        assert f"broker redis://:***@127.0.0.1:{port}/0 answers" in result.stdout
        result = pipectl(write(tmp_path, text), "-t", "--connect", env={"PASS": "Wv3Kx9"})  # wrong: said, not shown
        assert result.returncode == 1 and "Wv3" not in result.stdout + result.stderr


@pytest.mark.parametrize("url", [f"redis://:{pw}@127.0.0.1:6379/0" for pw in PASSWORDS] + ["nats://u:Qz7/Kx9@h:1"])
def test_redact_url_never_shows_a_piece_of_a_password_even_when_the_url_cannot_be_parsed(url: str) -> None:
    redacted = redact_url(url)
    assert not [piece for piece in PIECES if piece in redacted], redacted
    assert redacted.startswith(url.split("://")[0] + "://")
    assert redact_url("redis://:Qz7%40Kx9@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    quoted = url if " " not in url else ""  # in free text a URL ends at a space; -t refuses such passwords
    said = redact_text(f"cannot reach {quoted}; nor 'redis://:Qz7%40Kx9@h:1/0'")
    assert not [piece for piece in PIECES if piece in said] and "'redis://:***@h:1/0'" in said, said


def test_a_runtime_dir_that_is_a_file_or_cannot_be_created_is_refused(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    found = problems(write(tmp_path, VALID.replace("runtime_dir: run", "runtime_dir: afile")))
    assert found == [f"pipeline.yaml:2: service.runtime_dir: {tmp_path / 'afile'} exists and is not a folder"]
    found = problems(write(tmp_path, VALID.replace("runtime_dir: run", "runtime_dir: afile/run")))
    assert found == [
        f"pipeline.yaml:2: service.runtime_dir: {tmp_path / 'afile' / 'run'} cannot be created: "
        f"{tmp_path / 'afile'} is not a folder"
    ]
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    found = problems(write(tmp_path, VALID.replace("runtime_dir: run", "runtime_dir: loop")))
    assert len(found) == 1 and found[0].startswith(
        f"pipeline.yaml:2: service.runtime_dir: {tmp_path / 'loop'} cannot be resolved: "
    ), found


def test_start_with_a_runtime_dir_that_is_a_file_fails_in_test_not_with_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    path = write(tmp_path, VALID.replace("runtime_dir: run", "runtime_dir: afile"))
    for args in (["-t"], ["start"]):
        result = pipectl(path, *args)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert "pipeline.yaml:2: service.runtime_dir: " in result.stderr


def test_a_runtime_dir_whose_sockets_do_not_fit_counts_bytes_not_letters(tmp_path: Path) -> None:
    letters = 100 - len(f"{tmp_path}/") - len("/supervisor.sock")  # fits in letters, not in UTF-8 bytes
    name = "é" * letters
    result = pipectl(write(tmp_path, VALID.replace("runtime_dir: run", f"runtime_dir: {name}")), "-t")
    assert result.returncode == 1
    assert "pipeline.yaml:2: service.runtime_dir: " in result.stderr and "longer than a unix socket" in result.stderr


def test_a_runtime_dir_or_config_folder_with_a_line_break_is_refused_by_test(tmp_path: Path) -> None:
    result = pipectl(write(tmp_path, VALID.replace("runtime_dir: run", 'runtime_dir: "ru\\nn"')), "-t")
    assert result.returncode == 1
    assert "pipeline.yaml:2: service.runtime_dir: " in result.stderr and "line break" in result.stderr
    folder = tmp_path / "con\nfig"
    folder.mkdir()
    result = pipectl(write(folder, VALID.replace("runtime_dir: run", f"runtime_dir: {tmp_path / 'run'}")), "-t")
    assert result.returncode == 1
    assert "pipeline.yaml:2: service.runtime_dir: " in result.stderr and "line break" in result.stderr


def reads(path: str, tree: bool = False) -> FolderUse:
    return FolderUse(("path",), Path(path), writes=False, tree=tree)


def writes(path: str, tree: bool = False) -> FolderUse:
    return FolderUse(("path",), Path(path), writes=True, tree=tree)


@pytest.mark.parametrize(
    ("first", "second", "clash"),
    [
        (reads("/in"), writes("/in"), "writes into /in, which pipeline.inputs[0].path (line 7) watches"),
        (reads("/in"), writes("/in/out"), None),  # a watch that is not recursive never sees a sub-folder
        (reads("/in", tree=True), writes("/in/out"), "writes into /in/out, which pipeline.inputs[0].path"),
        (reads("/srv/in"), writes("/srv", tree=True), "writes into /srv, which pipeline.inputs[0].path (line 7)"),
        (reads("/in"), reads("/in"), "watches /in, which pipeline.inputs[0].path (line 7) watches too"),
        (reads("/in", tree=True), reads("/in/a"), "watches /in/a, which pipeline.inputs[0].path (line 7) watches"),
        (reads("/in/a"), reads("/in/b"), None),
        (writes("/out"), writes("/out"), None),
    ],
)
def test_folder_conflicts_name_both_lines(first: FolderUse, second: FolderUse, clash: str | None) -> None:
    uses = [Use(("pipeline", "inputs", 0), first), Use(("pipeline", "outputs", 0), second)]
    found = list(conflicts(uses, lambda loc: 7 if loc[1] == "inputs" else 20))
    assert [message[: len(clash)] for _, message in found] == ([clash] if clash else [])
    assert all(loc[:2] in (("pipeline", "inputs"), ("pipeline", "outputs")) for loc, _ in found)
    assert not list(conflicts([Use(("pipeline", "inputs", 0), first), Use(("pipeline", "inputs", 0), second)], len))


def test_image_files_declares_one_folder_per_tag_that_reaches_it(tmp_path: Path) -> None:
    kind = REGISTRIES["outputs"].get("image_files")
    options = kind.Options.model_validate({"name": "image_files", "path": "out"})
    ctx = CheckContext(base_dir=tmp_path, service=ServiceOptions(), tags=("cam.a", "uploads"))
    assert list(kind.folders(options, ctx)) == [
        FolderUse(("path",), tmp_path / "out" / "cam.a", writes=True),
        FolderUse(("path",), tmp_path / "out" / "uploads", writes=True),
    ]


def test_an_output_into_a_watched_folder_and_two_inputs_on_one_folder_are_refused(tmp_path: Path) -> None:
    text = VALID.replace("tag: cam.uploads", "tag: in").replace('match: "cam.*"', 'match: "*"')
    found = problems(write(tmp_path, text.replace("      path: out", "      path: .")))
    assert found == [
        f"pipeline.yaml:19: pipeline.outputs[0].path: writes into {tmp_path / 'in'}, which pipeline.inputs[0].path "
        "(line 9) watches: what is written there would be read back in, in a loop; use a folder outside it"
    ]
    second = "      path: ${INBOX:-in}\n    - {name: dir_videos, tag: videos, path: in}\n"
    found = problems(write(tmp_path, VALID.replace("      path: ${INBOX:-in}\n", second)))
    assert found == [
        f"pipeline.yaml:10: pipeline.inputs[1].path: watches {tmp_path / 'in'}, which pipeline.inputs[0].path "
        "(line 9) watches too: each file would go to one of them at random; give each input its own folder"
    ]
    found = problems(
        write(
            tmp_path,
            VALID.replace("runtime_dir: run", "runtime_dir: in/run").replace(
                "path: ${INBOX:-in}", "path: ${INBOX:-in}\n      recursive: true"
            ),
        )
    )
    assert found[0].startswith(f"pipeline.yaml:2: service.runtime_dir: writes into {tmp_path / 'in' / 'run'}, which")
