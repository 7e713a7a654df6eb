"""The as-given script run as the CLI it is, against a real server and the corpus."""
from __future__ import annotations

import pytest

from case1_support import AS_GIVEN, not_image_lines, run_script
from workbench.classifier_server import ClassifierServer


@pytest.fixture(scope="module")
def as_given_run(corpus, tmp_path_factory):
    """One as-given run (python -X dev) on the corpus; output.json pre-exists in the CWD."""
    root, _ = corpus
    cwd = tmp_path_factory.mktemp("as_given_cwd")
    (cwd / "output.json").write_text('{"earlier": "results"}', encoding="utf-8")
    with ClassifierServer() as server:
        proc = run_script(AS_GIVEN, "--input-dir", str(root), server.url, cwd=cwd, dev_mode=True)
        received = server.counters.snapshot()
    return proc, received, cwd, root


@pytest.mark.finding("C1-01", side="as_given")
def test_missing_input_dir_crashes_with_type_error(tmp_path, server):
    (tmp_path / "a.jpg").write_bytes(b"x")  # listdir(None) lists the CWD
    proc = run_script(AS_GIVEN, server.url, cwd=tmp_path)
    assert proc.returncode == 1
    assert "TypeError: unsupported operand type(s) for +: 'NoneType' and 'str'" in proc.stderr
    assert "usage:" not in proc.stderr  # argparse never said the option is needed


@pytest.mark.finding("C1-04", side="as_given")
def test_path_is_glued_with_slash(tmp_path, server):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jpg").write_bytes(b"x")
    proc = run_script(AS_GIVEN, "--input-dir", "in/", server.url, cwd=tmp_path)
    assert not_image_lines(proc.stdout) == ["in//a.jpg"]


@pytest.mark.finding("C1-05", side="as_given")
def test_filter_rejects_every_file(as_given_run):
    proc, received, _, root = as_given_run
    names = sorted(p.name for p in root.iterdir())
    assert sorted(not_image_lines(proc.stdout)) == sorted(f"{root}/{n}" for n in names)
    assert f"{root}/photo_1024x768.jpg" in not_image_lines(proc.stdout)
    assert received["accepted"] == 0 and received["connections"] == 0


@pytest.mark.finding("C1-07", side="as_given")
def test_pool_is_never_closed(as_given_run):
    proc = as_given_run[0]
    assert "ResourceWarning: unclosed running multiprocessing pool <multiprocessing.pool.ThreadPool" in proc.stderr


@pytest.mark.finding("C1-12", side="as_given")
def test_output_json_unclosed_relative_and_overwritten(as_given_run):
    proc, _, cwd, root = as_given_run
    assert "ResourceWarning: unclosed file <_io.TextIOWrapper name='output.json' mode='w'" in proc.stderr
    assert (cwd / "output.json").read_text(encoding="utf-8") == "{}"  # earlier results silently lost
    assert not (root / "output.json").exists()


@pytest.mark.finding("C1-13", side="as_given")
def test_no_results_ends_in_index_error(as_given_run):
    proc = as_given_run[0]
    assert proc.returncode == 1
    assert proc.stdout.rstrip().endswith("Classification results:")
    assert "IndexError: list index out of range" in proc.stderr
    assert "elapsed_stats[0]" in proc.stderr
