"""The workflow on a real SLURM cluster: profiles/slurm with snakemake-executor-plugin-slurm.

`make test-slurm` runs the tests marked ``slurm``: it builds the controller environment
(.venv-controller from envs/controller.txt: Snakemake and the SLURM executor plugin, kept
apart from .venv because the plugin needs numpy >= 2.4.5 and antspyx numpy < 2.4) and adds
the SLURM job-step plugin to .venv. The fixture below then starts a single-node SLURM on
this machine with workflow_tests/slurm/local_slurm.sh (munged, slurmctld and slurmd from
Debian's packages, installed with apt-get when missing; one fake GPU), and stops every
daemon it started when the module is done, whatever happened.

How the jobs find their software: conda cannot run here, so instead of `--use-conda` each
SLURM job activates the project's .venv (``--precommand``) and runs Snakemake and the
rule's script from there; ``--shared-fs-usage`` without ``software-deployment`` makes the
plugin call ``python`` from that environment instead of the controller's interpreter.
Status polling uses squeue (no accounting database); slurmctld writes every finished job
to a job-completion file, which, with the plugin's per-job logs, shows what ran in SLURM.

The tests marked ``slurm`` skip, with the reason, unless GAMER_MRIL_SLURM_TEST=1 (set by
`make test-slurm`), and where SLURM cannot be started: not root, or no SLURM binaries and
no apt-get.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from importlib.util import find_spec
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

from .conftest import PREPROCESSING_RULES, REPO, jobs_run, make_config

SCRIPT = Path(__file__).resolve().parent / "slurm" / "local_slurm.sh"
PROFILE = REPO / "profiles" / "slurm"
CONTROLLER = Path(os.environ.get("GAMER_MRIL_CONTROLLER", REPO / ".venv-controller"))
#: The environment the jobs run in: the one running these tests (.venv).
JOB_BIN = Path(sys.executable).parent
#: Hard limits (seconds): bringing SLURM up (apt-get included), one workflow run.
START_LIMIT = 300
RUN_LIMIT = 900

#: The per-session preprocessing rules (group "preprocess" in rules/preprocessing.smk),
#: one job each per session, that a cluster runs as one SLURM job per session.
SESSION_RULES = PREPROCESSING_RULES
GROUP = "preprocess"
#: Flags of a run on this machine's test cluster (see the module docstring).
TEST_CLUSTER_ARGS = [
    "--slurm-status-command", "squeue",
    "--slurm-init-seconds-before-status-checks", "2",
    "--slurm-keep-successful-logs",
    "--retries", "0",
    "--shared-fs-usage", "input-output", "persistence", "sources", "source-cache",
    "storage-local-copies", "software-deployment-cache",
    "--precommand", f". {JOB_BIN / 'activate'}",
]


# --------------------------------------------------------------- without a cluster
def _dry_run_resources(tmp_path: Path, cohort: Path, gpu: bool) -> dict:
    """{rule: set of its jobs' printed resource lines} of a dry run of target all. The
    per-session jobs after the checkpoint analysed_sessions are planned once it has run:
    without qc.exclude_flagged it needs the participants table alone, so it is run first
    (two local jobs)."""
    config = make_config(cohort / "rawdata")
    config["training"] = {"gpu": gpu}
    config["qc"]["exclude_flagged"] = []
    cfg = tmp_path / f"config_gpu_{gpu}.yaml"
    cfg.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"),
               "--directory", str(tmp_path / "work"), "--configfile", str(cfg), "--cores", "1"]
    env = {**os.environ,
           "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]}
    proc = subprocess.run(command + ["analysed_sessions"], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = subprocess.run(command + ["all", "-n"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out: dict[str, set] = {}
    rule = None
    for line in (proc.stdout + proc.stderr).splitlines():
        m = re.match(r"^(?:local)?(?:rule|checkpoint) (\w+):", line)
        if m:
            rule = m.group(1)
        elif rule and line.strip().startswith("resources:"):
            out.setdefault(rule, set()).add(line.strip())
    return out


def test_gpu_rules_ask_for_a_gpu(tiny_cohort, tmp_path):
    """With `training: gpu: true` exactly the network's jobs (training, relevance maps,
    voxel inverting) ask for gpu=1, which the SLURM plugin turns into sbatch --gpus=1;
    with `gpu: false` no job does. A dry run: no cluster needed."""
    gpu_rules = {"train_fold", "explain_session", "invert_session"}
    on = _dry_run_resources(tmp_path, tiny_cohort, True)
    asking = {r for r, lines in on.items() if any(re.search(r"\bgpu=1\b", x) for x in lines)}
    assert asking == gpu_rules, on
    assert all(re.search(r"\bgpu=1\b", x) for r in gpu_rules for x in on[r])
    off = _dry_run_resources(tmp_path, tiny_cohort, False)
    assert not [r for r, lines in off.items() if any(re.search(r"\bgpu=[1-9]", x) for x in lines)]


# ------------------------------------------------------------------ the cluster
def _why_not() -> str | None:
    """Why the SLURM tests cannot run here (None: they can)."""
    if os.environ.get("GAMER_MRIL_SLURM_TEST") != "1":
        return ("the SLURM test runs in `make test-slurm` (it starts SLURM daemons as root and "
                "needs the controller environment); set GAMER_MRIL_SLURM_TEST=1 to run it")
    if os.geteuid() != 0:
        return "starting munged, slurmctld and slurmd needs root"
    have = all(shutil.which(b) or Path("/usr/sbin", b).exists()
               for b in ("munged", "slurmctld", "slurmd", "sbatch"))
    if not have and not shutil.which("apt-get"):
        return ("no SLURM binaries (munged, slurmctld, slurmd, sbatch) and no apt-get to "
                "install them")
    if not (CONTROLLER / "bin" / "python").exists():
        return (f"no controller environment at {CONTROLLER} (make controller, or set "
                f"GAMER_MRIL_CONTROLLER to a venv with envs/controller.txt)")
    if find_spec("snakemake_executor_plugin_slurm_jobstep") is None:
        return (f"the job environment {JOB_BIN.parent} lacks "
                f"snakemake-executor-plugin-slurm-jobstep (make test-slurm installs it)")
    return None


def _versions_match():
    """Jobs run Snakemake from .venv with the arguments the controller writes: same version."""
    here = subprocess.run([sys.executable, "-m", "snakemake", "--version"], capture_output=True,
                          text=True, timeout=120).stdout.strip()
    there = subprocess.run([str(CONTROLLER / "bin" / "python"), "-m", "snakemake", "--version"],
                           capture_output=True, text=True, timeout=120).stdout.strip()
    assert here and here == there, (f"Snakemake {there} in the controller ({CONTROLLER}) but "
                                    f"{here} in the job environment ({JOB_BIN.parent}): pin both "
                                    f"to the same version (envs/controller.txt, constraints.txt)")


def _stop(cluster: Path) -> str:
    proc = subprocess.run(["bash", str(SCRIPT), "stop", str(cluster)], capture_output=True,
                          text=True, timeout=120)
    return proc.stderr


def _recorded_pids(cluster: Path) -> dict:
    pids = {}
    for line in (cluster / "pids").read_text().splitlines():
        name, pid = line.split()
        pids[name] = int(pid)
    return pids


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def cluster_state(cluster: dict) -> str:
    """sinfo, squeue and the daemons' last log lines, for failure messages."""
    out = []
    for cmd in (["sinfo", "-N", "-o", "%N %T %E %m %G"],
                ["squeue", "-t", "all", "-o", "%i %T %r %j %k"]):
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=20,
                                  env=cluster["env"])
            out.append(f"$ {' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
        except subprocess.TimeoutExpired:
            out.append(f"$ {' '.join(cmd)}: no answer in 20 s")
    for name in ("slurmctld.log", "slurmd.log"):
        log = cluster["dir"] / "log" / name
        lines = log.read_text(errors="replace").splitlines()[-15:] if log.exists() else []
        out.append(f"--- {name} ---\n" + "\n".join(lines))
    return "\n".join(out)


@pytest.fixture(scope="module")
def slurm_cluster(request):
    """A running single-node SLURM: {"dir": its folder, "env": the environment of its
    clients}. Torn down (every daemon stopped by its recorded PID, the folder removed)
    after the module, also when a test fails or the run is interrupted (SIGINT, or SIGTERM
    turned into one)."""
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    _versions_match()
    # A fresh folder under /tmp: munged, which runs as user munge, cannot reach one inside
    # pytest's private temporary folder.
    cluster = Path(tempfile.mkdtemp(prefix="gamer-mril-slurm.", dir="/tmp"))
    failed_before = request.session.testsfailed
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        t0 = time.monotonic()
        proc = subprocess.Popen(["bash", str(SCRIPT), "start", str(cluster)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _, err = proc.communicate(timeout=START_LIMIT)
        except BaseException:
            proc.kill()
            proc.communicate()
            raise
        if proc.returncode != 0:
            pytest.fail(f"SLURM did not start (exit {proc.returncode}):\n{err[-3000:]}")
        env_sh = subprocess.run(["bash", "-c", f". {cluster / 'env.sh'} && env -0"],
                                capture_output=True, text=True, timeout=30, check=True).stdout
        env = dict(kv.split("=", 1) for kv in env_sh.split("\0") if "=" in kv)
        yield {"dir": cluster, "env": env, "start_s": time.monotonic() - t0}
    finally:
        try:
            if (cluster / "pids").exists():
                log = _stop(cluster)
                pids = _recorded_pids(cluster)
                left = {n: p for n, p in pids.items() if _running(p)}
                for pid in left.values():  # the script failed to; do not leave them behind
                    os.kill(pid, signal.SIGKILL)
                assert not left, f"daemons still running after stop: {left}\n{log}"
            if request.session.testsfailed == failed_before:
                shutil.rmtree(cluster, ignore_errors=True)
            else:  # keep the configuration and logs of a failed run
                print(f"\nSLURM test cluster's files kept in {cluster}")
        finally:
            signal.signal(signal.SIGTERM, previous)


#: squeue reasons of a pending job that no wait will cure (it asks for more than the node
#: or partition has).
HOPELESS = ("PartitionConfig", "PartitionNodeLimit", "PartitionTimeLimit", "BadConstraints",
            "ReqNodeNotAvail", "Resources_Unavailable")


def _never_runs(cluster: dict) -> str | None:
    proc = subprocess.run(["squeue", "-h", "-t", "PD", "-o", "%i %r"], capture_output=True,
                          text=True, timeout=30, env=cluster["env"])
    bad = [line for line in proc.stdout.splitlines() if line.split()[-1:] and
           line.split()[-1].startswith(HOPELESS)]
    return ", ".join(bad) or None


def run_on_slurm(cluster: dict, workdir: Path, snakefile: Path, config: dict | None, *args):
    """Snakemake from the controller environment with profiles/slurm on the test cluster.
    Stopped with SIGINT (it then cancels its SLURM jobs and unlocks) after RUN_LIMIT."""
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [str(CONTROLLER / "bin" / "python"), "-m", "snakemake", *args,
           "-s", str(snakefile), "--directory", str(workdir), "--profile", str(PROFILE),
           *TEST_CLUSTER_ARGS]
    if config is not None:
        (workdir / "config.yaml").write_text(yaml.safe_dump(config))
        cmd += ["--configfile", str(workdir / "config.yaml")]
    log = workdir / "controller.log"
    t0 = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=cluster["env"],
                                cwd=workdir, start_new_session=True)
        try:
            stuck = None
            while proc.poll() is None and stuck is None:
                if time.monotonic() - t0 > RUN_LIMIT:
                    raise subprocess.TimeoutExpired(cmd, RUN_LIMIT)
                time.sleep(5)
                stuck = _never_runs(cluster)
            if stuck:
                raise RuntimeError(f"SLURM will never run job(s) {stuck}")
            rc = proc.returncode
        except BaseException as err:  # stuck, the time limit, or the test run interrupted
            state = cluster_state(cluster)
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            if isinstance(err, (subprocess.TimeoutExpired, RuntimeError)):
                why = err if isinstance(err, RuntimeError) else f"took over {RUN_LIMIT} s"
                pytest.fail(f"Snakemake on SLURM: {why}\n{log.read_text()[-3000:]}\n{state}")
            raise
    text = log.read_text()
    return rc, text, time.monotonic() - t0


def completed_jobs(cluster: dict) -> dict:
    """{job id: record} from slurmctld's job-completion file (jobcomp/filetxt)."""
    path = cluster["dir"] / "jobcomp.log"
    records = {}
    for line in (path.read_text().splitlines() if path.exists() else []):
        rec = dict(re.findall(r"(\w+)=(\S*)", line))
        records[rec["JobId"]] = rec
    return records


def slurm_logs(workdir: Path) -> dict:
    """{(kind, name): {job id: log text}} of the plugin's per-job logs
    (rule_<rule>[/<wildcards>]/<job id>.log for single jobs, group_<group>[...]/... for
    group jobs, whose name is then the group's)."""
    out: dict = {}
    root = workdir / ".snakemake" / "slurm_logs"
    for log in sorted(root.rglob("*.log")):
        kind, _, name = log.relative_to(root).parts[0].partition("_")
        if kind == "group" and name.startswith(GROUP):
            name = GROUP
        out.setdefault((kind, name), {})[log.stem] = log.read_text(errors="replace")
    return out


def _tail(text: str, cluster: dict, n=6000) -> str:
    return text[-n:] + "\n" + cluster_state(cluster)


@pytest.mark.slurm
def test_preprocessing_on_slurm_one_job_per_session(slurm_cluster, tiny_cohort, tmp_path):
    """The tiny cohort's preprocessing (target preprocess_all) through --executor slurm:
    every output is made, every job ran in SLURM, and each session's chain was one SLURM
    job."""
    sessions = pd.read_csv(tiny_cohort / "rawdata" / "participants.tsv", sep="\t", dtype=str)
    expected = {(r.subject, r.session) for r in sessions.itertuples()}
    config = make_config(tiny_cohort / "rawdata")
    # The generator's true brain masks are given, so step 2 skips the skull stripping:
    # the chain stays whole (make_brain_mask still runs) and the test stays short.
    config["inputs"]["brain_mask"] = str(
        tiny_cohort / "ground_truth" / "sub-{subject}" / "ses-{session}"
        / "sub-{subject}_ses-{session}_space-qT1_desc-brain_mask.nii.gz")
    work = tmp_path / "run"
    rc, text, seconds = run_on_slurm(slurm_cluster, work, REPO / "Snakefile", config,
                                     "preprocess_all")
    assert rc == 0, _tail(text, slurm_cluster)

    # Outputs.
    anat = work / "results" / "sub-{0}" / "ses-{1}" / "anat"
    for subject, session in expected:
        for suffix in ("T1map", "MWFmap", "NDImap"):
            f = Path(str(anat).format(subject, session)) / (
                f"sub-{subject}_ses-{session}_space-NDIcrop_desc-preproc_{suffix}.nii.gz")
            assert f.is_file() and f.stat().st_size > 0, f
    qc = pd.read_csv(work / "results" / "group" / "preprocessing_qc.tsv", sep="\t", dtype=str)
    assert len(qc) == len(expected)

    # Snakemake's own count of the jobs it ran.
    ran = jobs_run(SimpleNamespace(stdout=text, stderr=""))
    n = len(expected)
    assert ran == {**{r: n for r in SESSION_RULES}, "make_template_cerebellum": 1,
                   "template_images": 1, "select_participants": 1, "preprocessing_qc": 1,
                   "preprocess_all": 1}, ran

    # What SLURM ran: one job per session plus the two cohort-level jobs, all completed on
    # this cluster's node, all from this run (job name = Snakemake's run id); the local
    # rule select_participants ran beside Snakemake, not through SLURM.
    jobs = completed_jobs(slurm_cluster)
    logs = slurm_logs(work)
    assert set(logs) == {("group", GROUP), ("rule", "make_template_cerebellum"),
                         ("rule", "template_images"),
                         ("rule", "preprocessing_qc")}, sorted(logs)
    session_logs = logs[("group", GROUP)]
    assert len(session_logs) == n, sorted(session_logs)
    submitted = {j for per_job in logs.values() for j in per_job}
    assert set(jobs) == submitted, (sorted(jobs), sorted(submitted))
    assert {r["JobState"] for r in jobs.values()} == {"COMPLETED"}, jobs
    assert len({r["Name"] for r in jobs.values()}) == 1
    node = subprocess.run(["hostname", "-s"], capture_output=True, text=True).stdout.strip()
    assert {r["NodeList"] for r in jobs.values()} == {node}

    # Each group job ran exactly one session's whole chain, each rule as a step inside it,
    # on one CPU.
    seen = set()
    for job_id, log in session_logs.items():
        assert jobs[job_id]["ProcCnt"] == "1", jobs[job_id]
        rules = re.findall(r"^(?:local)?rule (\w+):", log, flags=re.MULTILINE)
        assert sorted(rules) == sorted(SESSION_RULES), (job_id, rules)
        pairs = set(re.findall(r"wildcards: subject=(\w+), session=(\w+)", log))
        assert len(pairs) == 1, (job_id, pairs)
        seen |= pairs
    assert seen == expected
    print(f"SLURM up in {slurm_cluster['start_s']:.1f} s; preprocess_all on SLURM "
          f"{seconds:.0f} s, {len(jobs)} SLURM jobs for {n} sessions")


@pytest.mark.slurm
def test_gpu_job_gets_the_gpu(slurm_cluster, tmp_path):
    """A job asking for gpu=1 (as train_fold, explain_session and invert_session do with
    `training: gpu: true`) goes through the profile to sbatch --gpus=1 and SLURM gives it
    the node's GPU (CUDA_VISIBLE_DEVICES set in the job; gres/gpu in the job record)."""
    work = tmp_path / "gpu"
    work.mkdir()
    snakefile = work / "Snakefile"
    snakefile.write_text(
        "rule gpu_probe:\n"
        "    output: 'gpu.txt'\n"
        "    resources: gpu=1, mem_mb=200, runtime=5\n"
        "    shell: 'echo \"$SLURM_JOB_ID ${{CUDA_VISIBLE_DEVICES:-none}}\" > {output}'\n")
    rc, text, _ = run_on_slurm(slurm_cluster, work, snakefile, None)
    assert rc == 0, _tail(text, slurm_cluster)
    job_id, devices = (work / "gpu.txt").read_text().split()
    assert devices != "none", "the job saw no GPU"
    show = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True,
                          text=True, env=slurm_cluster["env"], timeout=30).stdout
    assert re.search(r"TresPerJob=gres[:/]gpu[:=]1\b", show), show
    assert completed_jobs(slurm_cluster)[job_id]["JobState"] == "COMPLETED"
