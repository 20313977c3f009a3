"""Hostile input to the CLI: files that are not UTF-8 or not YAML, alias bombs, files given
by mistake whose content must not be echoed, and names and paths that look like rich markup.

Each one exits 2 with a message that names the file or key, quickly, and prints user strings
as text."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hwprofiles import ProfileError, load_profile
from hwprofiles._yaml import MAX_YAML_BYTES
from nas import ConfigError, RunDir, load_config
from nas._cli import main

SECRET = "S3CRET-7f1c2a-hunter2"
#: Files given as hardware.profile by mistake, each holding SECRET in another shape.
SECRET_FILES = {
    "shadow": f"root:{SECRET}:20228:0:99999:7:::\ndaemon:*:20228:0:99999:7:::\n",
    "ini": f"[default]\naws_access_key_id = AKIA\naws_secret_access_key = {SECRET}\n",
    "dotenv": f"API_KEY={SECRET}\nOTHER: {SECRET} x: y\n",
    "plain": f"{SECRET}\n",
    "mapping": f"password: {SECRET}\nuser: admin\n",
    "key": f"{SECRET}: 1\n",
    "tag": f"token: !{SECRET} x\n",
}


def _bomb(levels: int = 9, width: int = 9) -> str:
    """Returns a flow-style YAML "billion laughs": ``width ** levels`` strings once expanded."""
    items = [f"&a0 [{', '.join(['lol'] * width)}]"]
    for level in range(1, levels):
        items.append(f"&a{level} [{', '.join([f'*a{level - 1}'] * width)}]")
    return f"[{', '.join(items)}]"


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Returns the exit status of ``nas ARGV`` and everything it printed."""
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out + captured.err


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Long paths stay on one line of output."""
    monkeypatch.setenv("COLUMNS", "1000")


@pytest.fixture(scope="module", autouse=True)
def warm(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Imports what the CLI imports once, so that timed calls time the input alone."""
    main(["search", str(tmp_path_factory.mktemp("warm") / "missing.yaml")])


@pytest.mark.parametrize(("content", "expected"), [
    (b"experiment: {name: caf\xe9}\n", "not UTF-8 text"),
    (b"experiment:\n  name: quick\nsearch: {n_trials: [4,\n", "line 4"),
    (b"", "is empty"),
    (b"# only a comment\n", "is empty"),
    (b"- a\n- list\n", "got a list"),
    (b"just a scalar\n", "got a str"),
    (b"[" * 3000 + b"]" * 3000, "nested too deeply"),
    (b"a: \x07\n", "not allowed in YAML"),
], ids=["latin-1", "truncated", "empty", "comment-only", "list", "scalar", "deep", "control"])
def test_unreadable_config_exits_2_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, expected: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    status, out = _run(["search", str(path), "--run-dir", str(tmp_path / "run")], capsys)
    assert status == 2, out
    assert f"error: {path}: " in _flat(out) and expected in _flat(out), out
    assert "Traceback" not in out and "UnicodeDecodeError" not in out
    assert not (tmp_path / "run").exists()


def test_a_config_larger_than_the_bound_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_bytes(b"#" * (MAX_YAML_BYTES + 1))
    with pytest.raises(ConfigError, match=r"huge.yaml: larger than 1 MiB"):
        load_config(path)


def test_a_run_directory_whose_config_is_damaged_is_a_user_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    run.config.write_bytes(b"experiment: {name: \xff\xfe}\n")
    with pytest.raises(ConfigError, match=r"config.yaml: not UTF-8 text"):
        run.load_spec()
    spec = load_config(Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml")
    with pytest.raises(ConfigError, match=r"config.yaml: not UTF-8 text"):
        run.prepare(spec, ["nas"])
    for argv in (["compress", str(run.root)], ["report", str(run.root)]):
        status, out = _run(argv, capsys)
        assert status == 2 and "not UTF-8 text" in out and str(run.config) in _flat(out), out
    run.config.write_text("- not\n- a mapping\n")
    with pytest.raises(ConfigError, match=r"config.yaml: the top level of the run config must"):
        run.load_spec()


@pytest.mark.parametrize("where", ["name", "option", "set", "set-option"])
def test_an_alias_bomb_is_refused_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    path = tmp_path / "bomb.yaml"
    argv = ["search", str(path), "--run-dir", str(tmp_path / "run")]
    source = f"{path}: line 1"
    if where == "name":
        path.write_text(f"experiment: {{name: {_bomb()}}}\n")
    elif where == "option":
        path.write_text(f"search_space:\n  name: mobilenet_elastic\n  depths: {_bomb()}\n")
        source = f"{path}: line 3"
    else:
        path.write_text("experiment: {name: quick}\n")
        key = "experiment.name" if where == "set" else "search_space.depths"
        argv += ["--set", f"{key}={_bomb()}"]
        source = f"--set {key}: line 1"
    start = time.perf_counter()
    status, out = _run(argv, capsys)
    assert time.perf_counter() - start < 5
    assert status == 2
    assert "YAML aliases (*a0) are not supported" in _flat(out), out
    assert f"error: {source}, column " in _flat(out), out
    assert "lol" not in out


def test_an_alias_bomb_in_a_hardware_profile_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(f"device: cpu\nbackend: onnxruntime\ndescription: {_bomb()}\n")
    start = time.perf_counter()
    with pytest.raises(ProfileError, match=r"bomb.yaml: line 3, .*YAML aliases \(\*a0\)"):
        load_profile(path)
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize("shape", sorted(SECRET_FILES))
def test_a_file_given_as_hardware_profile_is_never_echoed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], shape: str
) -> None:
    secret_file = tmp_path / "secrets"
    secret_file.write_text(SECRET_FILES[shape])
    config = tmp_path / "cfg.yaml"
    config.write_text("experiment: {name: quick}\n")
    argv = ["search", str(config), "--run-dir", str(tmp_path / "run"),
            "--set", f"hardware.profile={secret_file}"]
    status, out = _run(argv, capsys)
    assert status == 2
    assert f"hardware.profile: {secret_file}: " in _flat(out), out
    assert SECRET not in out and "AKIA" not in out and "daemon" not in out, out


@pytest.mark.parametrize("shape", sorted(SECRET_FILES))
def test_a_file_given_as_the_config_is_never_echoed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], shape: str
) -> None:
    secret_file = tmp_path / "secrets"
    secret_file.write_text(SECRET_FILES[shape])
    status, out = _run(["search", str(secret_file), "--run-dir", str(tmp_path / "run")], capsys)
    assert status == 2
    assert f"error: {secret_file}: " in _flat(out), out
    assert SECRET not in out and "AKIA" not in out and "daemon" not in out, out


def test_a_binary_or_endless_file_as_profile_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "cfg.yaml"
    config.write_text("experiment: {name: quick}\n")
    binary = tmp_path / "model.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    for profile, expected in ((binary, "not UTF-8 text"), (Path("/dev/zero"), "larger than")):
        status, out = _run(["search", str(config), "--set", f"hardware.profile={profile}"], capsys)
        assert status == 2 and expected in out, out


def test_a_long_value_is_echoed_cut_short(tmp_path: Path) -> None:
    config = tmp_path / "cfg.yaml"
    config.write_text(f"search: {{n_trials: {'x' * 5000}}}\n")
    with pytest.raises(ConfigError, match="search.n_trials") as info:
        load_config(config)
    assert "x" * 100 not in str(info.value) and len(str(info.value)) < 300


def test_a_profile_with_a_typo_still_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "laptop.yaml"
    path.write_text("device: cpu\nbackend: torch\nthread: 1\n'some line: of text': 2\n")
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    message = str(info.value)
    assert "thread: unknown key" in message
    assert "1 unknown key(s) that are not field names" in message
    assert "some line" not in message


def test_markup_in_a_run_dir_and_a_name_is_printed_as_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bad.npz").write_text("not an archive\n")  # the run stops at the data
    config = tmp_path / "cfg.yaml"
    config.write_text("experiment: {name: quick}\ndata: {dataset: npz, path: bad.npz}\n")
    run_dir = tmp_path / "[bold red]x[/]:fire:"
    status, out = _run(["search", str(config), "--run-dir", str(run_dir)], capsys)
    assert status == 2
    assert f"run directory: {run_dir}" in out, out
    config.write_text("experiment: {name: 'a[/]b [bold red]x'}\n")
    status, out = _run(["search", str(config), "--run-dir", str(run_dir)], capsys)
    assert status == 2 and "experiment.name" in out and "'a[/]b [bold red]x'" in out, out


@pytest.mark.parametrize("command", ["report", "compress"])
def test_markup_in_a_missing_run_dir_is_printed_as_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    run_dir = tmp_path / "[bold red]x[/]" / "[/]:fire:"
    status, out = _run([command, str(run_dir)], capsys)
    assert status == 2
    assert f"error: {run_dir}: no config.yaml here" in out, out


def test_markup_in_a_space_filter_is_printed_as_text(capsys: pytest.CaptureFixture[str]) -> None:
    status, out = _run(["spaces", "[bold red]x[/]"], capsys)
    assert status == 2 and "no search space matches '[bold red]x[/]'" in out, out
