"""Two real JAX processes on 127.0.0.1 (gloo CPU collectives), 2 CPU devices each: describe ->
split with the row-sharded k-center over the 4 global devices equals the single-process,
single-device result, and so does a k-center whose processes each read only their own rows of
the store; a process SIGKILLed mid-split, then both restarted, resume and finish with
the same result. The plain pipeline (describe -> select(method="auto") -> split -> label_issues,
each with ``mesh=``) equals the single-process one while each process reads from the store only
the rows of its own devices."""

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("_multiprocess_worker.py")
TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(proc: int, nproc: int, port: int, workdir: Path, *extra) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(proc), str(nproc), str(port), str(workdir), *extra],
        cwd=WORKER.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _result(p: subprocess.Popen, timeout: float = TIMEOUT_S) -> dict:
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def _run_pair(workdir: Path, *extra, timeout: float = TIMEOUT_S) -> list[dict]:
    port = _free_port()
    procs = [_start(i, 2, port, workdir, *extra) for i in range(2)]
    try:
        return [_result(p, timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    r = _result(_start(0, 0, 0, tmp_path_factory.mktemp("single")))
    assert r["devices"] == 1
    return r


def test_two_processes_equal_single_process(tmp_path, reference):
    results = _run_pair(tmp_path)
    for proc, r in enumerate(results):
        assert r["proc"] == proc and r["devices"] == 4 and r["local_devices"] == 2
        assert r["batches_done"] == r["num_batches"]
        assert r["first_run_count"] == 1  # a fresh start: only the seed before the first run
        assert r["split"] == reference["split"]
        assert r["kcenter_from_store"] == reference["kcenter_from_store"]
    # One writer for the shared outputs: the split manifest, by process 0.
    manifest = json.loads((tmp_path / "store.split.json").read_text())
    assert manifest["indices"] == reference["split"]


def test_kill_one_process_mid_split_then_restart_both(tmp_path, reference):
    port = _free_port()
    procs = [_start(i, 2, port, tmp_path, "4") for i in range(2)]
    try:
        procs[1].wait(timeout=TIMEOUT_S)
        assert procs[1].returncode == -9, procs[1].stderr.read()[-3000:]
        # Its peer is stuck in (or failing out of) a collective: stop it as a crashed job would.
        time.sleep(0.5)
        procs[0].kill()
        procs[0].wait(timeout=30)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert (tmp_path / "ckpt" / "set-0").is_dir()

    results = _run_pair(tmp_path)
    for r in results:
        assert r["split"] == reference["split"]
        # Resumed from the in-flight k-center checkpoint, not from scratch.
        assert r["first_run_count"] > 1, r


def test_pipeline_reads_own_rows_and_equals_single_process(tmp_path):
    # The reference (one process, no mesh) runs while the pair does: the CPUs are shared anyway.
    (tmp_path / "single").mkdir()
    single = _start(0, 0, 0, tmp_path / "single", "pipeline")
    # Many small compiles (one per task shape): give a loaded machine time.
    results = _run_pair(tmp_path, "pipeline", timeout=3 * TIMEOUT_S)
    reference = _result(single, 3 * TIMEOUT_S)
    assert reference["builds"] == []  # no mesh: the vectors are read whole, as before
    assert reference["select_method"] == "typical_kcenter"
    for r in results:
        assert r["devices"] == 4 and r["local_devices"] == 2
        for key in ("select", "select_method", "label_counts", "split", "issues", "suggested"):
            assert r[key] == reference[key], key
        assert r["random"] == reference["random"] and len(set(r["random"])) == 6
        for method in ("typiclust", "herding", "zcore"):
            assert r[method] == reference[method] and len(set(r[method])) == 6, method
        assert r["issue_scores"] == reference["issue_scores"]
        # The leakage check: the same pairs as one process holding every vector; each process
        # read its own rows (2 of the 4 devices': at most 62), set by set, and the later set
        # 8 rows at a time.
        assert r["leakage"] == reference["leakage"] and r["leakage"]["pairs"] > 0
        own = [v for v in r["piece_reads"] if v > 8]
        assert len(own) <= 2 and sum(own) <= 62 and len(r["piece_reads"]) > len(own)
        assert r["coverage_radius"] == pytest.approx(reference["coverage_radius"], rel=1e-6)
        # Nothing fell back to reading a task's rows (or the store) whole on a process.
        assert r["host_reads"] == [] and r["whole_reads"] == []
    n = reference["num_rows"]
    builds = [r["builds"] for r in results]
    assert len(builds[0]) == len(builds[1]) > 0
    assert [n, n] in [[m, m] for m, _ in builds[0]]  # label_issues: the whole pool
    # The coverage radius: every row of the pool read in pieces of a fixed size (a short last
    # piece filled with copies of its last row), never the whole pool on a process.
    piece = results[0]["radius_piece"]
    assert piece == 12
    assert sum(m == piece for m, _ in builds[0]) >= -(-n // piece)
    for (m0, read0), (m1, read1) in zip(*builds, strict=True):
        assert m0 == m1
        # Each process read only its own 2 of the 4 devices' rows (m padded to a multiple of
        # 4), and together they read every row exactly once.
        own = -(-m0 // 4) * 2
        assert read0 <= own and read1 <= own, (m0, read0, read1)
        assert read0 + read1 == m0


def test_select_auto_probcover_reads_own_rows_and_equals_single_process(tmp_path):
    """45 picks: ``method="auto"`` runs ProbCover, whose selector takes ``n=``: each process
    reads only its own devices' rows of every task (nothing whole), with the single-process
    picks."""
    (tmp_path / "single").mkdir()
    single = _start(0, 0, 0, tmp_path / "single", "probcover")
    results = _run_pair(tmp_path, "probcover", timeout=3 * TIMEOUT_S)
    reference = _result(single, 3 * TIMEOUT_S)
    assert reference["select_method"] == "probcover" and len(reference["select"]) == 45
    assert reference["builds"] == []  # no mesh: the vectors are read whole, as before
    for r in results:
        assert r["devices"] == 4 and r["local_devices"] == 2
        assert r["select"] == reference["select"] and r["select_method"] == "probcover"
        assert r["host_reads"] == [] and r["whole_reads"] == []
    builds = [r["builds"] for r in results]
    assert len(builds[0]) == len(builds[1]) > 0
    # Some task is padded (its rows not a multiple of the 4 devices): the n= path ran.
    assert any(m % 4 for m, _ in builds[0])
    for (m0, read0), (m1, read1) in zip(*builds, strict=True):
        own = -(-m0 // 4) * 2
        assert m0 == m1 and read0 <= own and read1 <= own and read0 + read1 == m0


def test_split_auto_reads_no_whole_store_and_equals_single_process(tmp_path):
    """``split(method="auto")`` with ``mesh`` (euclidean on a wide store, cosine on a narrow
    one): the k-means on the rows each process reads for its own devices, the chains and the
    difficulty's pieces read a run / a piece at a time, each on one process; the sets equal
    the single-process ones. A chunked k-means with ``n=`` on rows read per process too."""
    (tmp_path / "single").mkdir()
    single = _start(0, 0, 0, tmp_path / "single", "auto_split")
    results = _run_pair(tmp_path, "auto_split", timeout=3 * TIMEOUT_S)
    reference = _result(single, 3 * TIMEOUT_S)
    for metric in ("euclidean", "cosine"):
        reads = reference[metric + "_reads"]
        assert reads["builds"] == [] and reads["host"] == []  # read whole, as before
        assert reference[metric + "_construction"]["hard_units"] > 0  # the twins path ran
    for r in results:
        assert r["devices"] == 4 and r["local_devices"] == 2
        assert r["whole_reads"] == []  # Data.x (every vector on the host) never used
        for metric in ("euclidean", "cosine"):
            assert r[metric] == reference[metric], metric
            assert r[metric + "_construction"] == reference[metric + "_construction"], metric
            # runs of the chains (<= 512 units), 64-row pieces of the difficulty and of the
            # own devices' rows (cosine): never the store
            host, n = r[metric + "_reads"]["host"], r[metric + "_reads"]["n"]
            assert host and max(host) <= 64 < n
        # the k-means rows: euclidean's one array over every unit (cosine scales them first)
        assert [m for m, _ in r["euclidean_reads"]["builds"]] == [260]
        assert r["cosine_reads"]["builds"] == []
        # groups of 3 (unit means): the same sets, each read a piece of units' vectors
        assert r["groups"] == reference["groups"]
        assert r["groups_construction"] == reference["groups_construction"]
        host = r["groups_reads"]["host"]
        assert host and max(host) <= 48 and r["groups_reads"]["builds"] == []
        assert r["kmeans"] == reference["kmeans"]
        assert r["kmeans_iterations"] == reference["kmeans_iterations"]
    # each run / piece read on one process: together every row once per pass at most (the
    # chains, the difficulty, cosine's own rows), at least once for the difficulty
    for metric, passes in (("euclidean", 2), ("cosine", 3)):
        n = reference[metric + "_reads"]["n"]
        reads = [sum(r[metric + "_reads"]["host"]) for r in results]
        assert (passes - 1) * n <= sum(reads) <= passes * n, (metric, reads)
    builds = [r["euclidean_reads"]["builds"] for r in results]
    for (m0, read0), (m1, read1) in zip(*builds, strict=True):
        own = -(-m0 // 4) * 2
        assert m0 == m1 and read0 <= own and read1 <= own and read0 + read1 == m0
