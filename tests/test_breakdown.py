"""bench/breakdown.py: a run's time per rule and for the cores, from benchmark files whose
figures are known."""

from __future__ import annotations

import pytest
from conftest import import_bench

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _bench(path, wall, cpu, rss):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + f"{wall}\t0:00:01\t{rss}\t0\t0\t0\t0\t0\t0\t{cpu}\n")


@pytest.fixture
def results(tmp_path):
    r = tmp_path / "results"
    b = r / "benchmarks"
    _bench(b / "scale_map" / "sub-1_ses-1.tsv", 2.0, 1.5, 100)
    _bench(b / "scale_map" / "sub-2_ses-1.tsv", 3.0, 2.5, 120)
    _bench(b / "train_fold" / "fold-0.tsv", 50.0, 90.0, 900)
    _bench(b / "template_images_res-02.tsv", 1.0, 0.5, 50)
    _bench(b / "split.tsv", 1.0, 0.25, 40)
    return r


def test_rules_are_summed_as_counted_by_hand(results):
    bd = import_bench("breakdown")
    jobs = bd.job_table(results, rules=["scale_map", "train_fold", "template_images",
                                        "split"])
    assert len(jobs) == 5
    rules = bd.rule_table(jobs, {"scale_map": "preprocessing", "train_fold": "training"})
    assert list(rules.index) == ["train_fold", "scale_map", "template_images", "split"]
    sm = rules.loc["scale_map"]
    assert sm["jobs"] == 2 and sm["cpu_s"] == 4.0 and sm["cpu_s_per_job"] == 2.0
    assert sm["wall_s"] == 5.0 and sm["max_rss_mb"] == 120 and sm["stage"] == "preprocessing"
    assert rules.loc["template_images", "stage"] == "?"
    assert rules["cpu_share"].sum() == pytest.approx(1.0)
    assert rules.loc["train_fold", "cpu_share"] == pytest.approx(90 / 94.75)


def test_controller_and_idle_cores_from_a_timed_run(results):
    bd = import_bench("breakdown")
    (results / "benchmarks" / "run.tsv").write_text("wall\tuser\tsys\n100\t95\t4.75\n")
    jobs = bd.job_table(results, rules=["scale_map", "train_fold", "template_images",
                                        "split"])
    assert len(jobs) == 5                     # run.tsv is not a job
    wall, cpu, _ = bd.run_times(results)
    s = bd.summary(jobs, 2, wall, cpu)
    assert s["core_s"] == 200 and s["job_cpu_s"] == 94.75
    assert s["controller_cpu_s"] == pytest.approx(99.75 - 94.75)
    assert s["idle_core_s"] == pytest.approx(200 - 99.75)


def test_the_wall_time_from_snakemakes_log(results):
    bd = import_bench("breakdown")
    log = results.parent / ".snakemake" / "log"
    log.mkdir(parents=True)
    (log / "2026-01-01T000000.snakemake.log").write_text(
        "Building DAG of jobs...\n[Sun Dec  6 18:01:05 2026]\nlocalrule a:\n"
        "[Sun Dec  6 18:03:15 2026]\nFinished jobid: 1\n")
    assert bd.log_wall(results) == 130.0
    assert bd.run_times(results)[1] is None
