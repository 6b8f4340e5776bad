"""The run folder contract: atomic status, incremental metrics, dead processes shown as interrupted."""
import json
import os
import subprocess
import sys
import time

from core.config import TrainConfig
from core.runs import store
from core.runs.folder import RunFolder
from core.runs.metrics import MetricsTail
from core.runs.process import process_start


def test_metrics_tail_reads_only_new_complete_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    tail = MetricsTail(path)
    assert tail.poll() == 0  # no file yet
    step = {"kind": "step", "step": 1, "loss": 2.3, "lr": 1e-3}
    epoch = {"kind": "epoch", "epoch": 1, "step": 1, "phase": "frozen", "train_loss": 2.3, "valid_loss": 2.2,
             "accuracy": 0.5, "error_rate": 0.5, "seconds": 1.5}
    epoch_line = json.dumps(epoch)
    path.write_text(json.dumps(step) + "\n" + epoch_line[:10])
    assert tail.poll() == 1 and tail.steps == [step] and tail.epochs == []
    with open(path, "a") as f:
        f.write(epoch_line[10:] + "\n")
    assert tail.poll() == 1 and tail.epochs == [epoch]
    assert tail.poll() == 0


def test_status_of_a_dead_process_is_interrupted(tmp_path):
    run_dir = store.create_run(TrainConfig(), tmp_path, "dead")
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    RunFolder(run_dir).update_status(state="running", pid=finished.pid)
    assert RunFolder(run_dir).status()["state"] == "interrupted"
    RunFolder(run_dir).update_status(state="running", pid=os.getpid())
    assert RunFolder(run_dir).status()["state"] == "running"
    RunFolder(run_dir).request_stop()
    assert RunFolder(run_dir).status()["state"] == "stopping"


def test_a_live_process_is_running_however_long_it_is_silent_and_a_reused_pid_is_not_it(tmp_path, monkeypatch):
    from core.runs import folder as run_folder
    from core.runs.process import process_start

    monkeypatch.setattr(run_folder, "HEARTBEAT_TIMEOUT_S", 0.0)  # every heartbeat is long past
    run_dir = store.create_run(TrainConfig(), tmp_path, "silent")
    RunFolder(run_dir).update_status(state="running", pid=os.getpid(), pid_start=process_start(os.getpid()))
    assert RunFolder(run_dir).status()["state"] == "running"  # a busy machine's long final pass, not a death
    RunFolder(run_dir).update_status(pid_start=process_start(os.getpid()) - 1)  # the pid, but another process's
    assert RunFolder(run_dir).status()["state"] == "interrupted"
    RunFolder(run_dir).update_status(state="queued", pid=None, pid_start=None)  # no process to ask: silence decides
    assert RunFolder(run_dir).status()["state"] == "interrupted"


# What the training process does at its end, in miniature: it reports running and beats, falls silent for its final
# pass over the validation images (long on a busy machine), then writes its end and exits at once.
ENDING = """
import os, sys, time
from core.runs.folder import RunFolder
from core.runs.process import process_start
folder = RunFolder(sys.argv[1])
folder.update_status(state="running", pid=os.getpid(), pid_start=process_start(os.getpid()))
for _ in range(20):
    time.sleep(0.01)
    folder.update_status(step=1)
time.sleep(1.0)
folder.finish("completed", "Done.")
"""


def test_a_run_ending_while_the_page_reads_its_status_is_never_shown_interrupted(tmp_path, monkeypatch):
    from core.runs import folder as run_folder
    from tests.conftest import ROOT

    monkeypatch.setattr(run_folder, "HEARTBEAT_TIMEOUT_S", 0.3)  # the final pass is longer than a heartbeat's wait

    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]  # a busy machine
    try:
        for attempt in range(3):
            run_dir = store.create_run(TrainConfig(), tmp_path, f"ending-{attempt}")
            process = subprocess.Popen([sys.executable, "-c", ENDING, str(run_dir)], cwd=ROOT)
            # as store.launch does: until the process writes its own status it is known by its pid (without it, a
            # start slower than the 0.3 s above read as a queued run whose start failed: seen once under load)
            RunFolder(run_dir).update_status(pid=process.pid, pid_start=process_start(process.pid))
            seen = set()
            while process.poll() is None:  # read as the page's fragment does, as fast as it can
                seen.add(RunFolder(run_dir).status().get("state"))
            seen.add(RunFolder(run_dir).status().get("state"))
            assert "interrupted" not in seen and RunFolder(run_dir).status()["state"] == "completed", seen
    finally:
        for burner in burners:
            burner.kill()


def test_run_names_are_unique_and_safe(tmp_path):
    first = store.create_run(TrainConfig(), tmp_path, "my run")
    second = store.create_run(TrainConfig(), tmp_path, "my run")
    escaped = store.create_run(TrainConfig(), tmp_path, "../../outside")
    assert (first.name, second.name) == ("my-run", "my-run-2")
    assert escaped.parent == tmp_path
    assert [run.run_id for run in store.list_runs(tmp_path)] == [escaped.name, "my-run-2", "my-run"]


def test_status_is_replaced_atomically_without_temporary_files_left(tmp_path):
    run_dir = store.create_run(TrainConfig(), tmp_path, "atomic")
    for step in range(20):
        RunFolder(run_dir).update_status(state="running", step=step)
    assert RunFolder(run_dir).raw_status()["step"] == 19
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoints", "config.json", "status.json"]
    assert time.time() - RunFolder(run_dir).raw_status()["heartbeat"] < 5


def test_delete_refuses_active_runs_and_folders_that_are_not_runs(tmp_path):
    import pytest

    run_dir = store.create_run(TrainConfig(), tmp_path, "busy")
    RunFolder(run_dir).update_status(state="running", pid=os.getpid())
    with pytest.raises(ValueError, match="stop it before deleting"):
        store.delete_run(run_dir, tmp_path)
    (tmp_path / "precious").mkdir()
    with pytest.raises(ValueError, match="not a run folder"):
        store.delete_run(tmp_path / "precious", tmp_path)
    with pytest.raises(ValueError, match="not a run folder"):
        store.delete_run(tmp_path / ".." / tmp_path.name / "busy" / "checkpoints", tmp_path)
    RunFolder(run_dir).update_status(state="completed")
    store.delete_run(run_dir, tmp_path)
    assert not run_dir.exists() and (tmp_path / "precious").exists()


def test_run_ids_are_the_run_folders_newest_first(tmp_path):
    first = store.create_run(TrainConfig(), tmp_path, "first")
    time.sleep(0.01)
    second = store.create_run(TrainConfig(), tmp_path, "second")
    (tmp_path / "not-a-run").mkdir()
    assert store.run_ids(tmp_path) == [second.name, first.name] == [r.run_id for r in store.list_runs(tmp_path)]


def test_an_atomic_write_reaches_the_disk_before_and_after_its_rename(tmp_path, monkeypatch):
    import stat

    from core.atomic import write_atomic

    synced = []  # (kind, name) of every descriptor flushed, in order
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(descriptor):
        mode = os.fstat(descriptor).st_mode
        synced.append(("folder" if stat.S_ISDIR(mode) else "file", os.readlink(f"/proc/self/fd/{descriptor}")))
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", lambda a, b: (synced.append(("rename", str(b))), real_replace(a, b)))
    write_atomic(tmp_path / "status.json", lambda f: f.write(b"{}"))
    assert [kind for kind, _ in synced] == ["file", "rename", "folder"]
    assert synced[0][1].endswith(".tmp") and synced[2][1] == str(tmp_path)
    assert (tmp_path / "status.json").read_bytes() == b"{}" and os.listdir(tmp_path) == ["status.json"]


def test_a_runs_name_and_tags_live_in_a_file_of_their_own_and_config_json_is_never_rewritten(trained_run, tmp_path):
    from tests.test_broken_runs import copy_run

    run_dir = copy_run(trained_run, tmp_path, "named", link=True)
    config_bytes = (run_dir / "config.json").read_bytes()
    kept = store.write_naming(run_dir, "  Baseline\n at   32 px ", ["digits", " 32px ", "digits", "", "Cafe\u0301"])
    assert kept == ("Baseline at 32 px", ("digits", "32px", "Caf\u00e9"))  # one line, no duplicates, NFC
    assert (run_dir / "config.json").read_bytes() == config_bytes
    [run] = store.list_runs(tmp_path)
    assert (run.name, run.tags, run.label) == ("Baseline at 32 px", ("digits", "32px", "Caf\u00e9"),
                                               "Baseline at 32 px (named)")
    assert run.dataset == "Handwritten digits (offline)" and run.state == "completed"
    assert store.write_naming(run_dir, "", []) == ("", ())
    assert store.read_naming(run_dir) == ("", ()) and store.list_runs(tmp_path)[0].label == "named"
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith(".")) == []  # no temporary file left


def test_a_damaged_name_file_is_ignored_and_a_folder_that_is_no_run_is_never_named(trained_run, tmp_path):
    import pytest

    from tests.test_broken_runs import copy_run

    run_dir = copy_run(trained_run, tmp_path, "damaged", link=True)
    for damage in (b"\xff\xfe not json", b"[1, 2]", b'{"name": 5, "tags": "a,b"}', b'{"name": "ok", "tags": {'):
        (run_dir / store.NAMING_FILE).write_bytes(damage)
        [run] = store.list_runs(tmp_path)
        assert (run.name, run.tags, run.state) == ("", (), "completed"), damage
    (run_dir / store.NAMING_FILE).write_text('{"name": "kept", "tags": ["good", 3, null, "x" ]}')
    assert store.read_naming(run_dir) == ("kept", ("good", "x"))
    (tmp_path / "precious").mkdir()
    with pytest.raises(ValueError, match="not a run folder"):
        store.write_naming(tmp_path / "precious", "mine", [])
    assert list((tmp_path / "precious").iterdir()) == []


def test_duration_is_the_time_spent_running_when_the_run_recorded_it(trained_run, tmp_path):
    from core.atomic import write_json_atomic
    from tests.test_broken_runs import copy_run

    run_dir = copy_run(trained_run, tmp_path, "timed", link=True)
    status = RunFolder(run_dir).raw_status()
    assert store.list_runs(tmp_path)[0].seconds == status["active_s"] > 0  # written by the training process
    write_json_atomic(run_dir / "status.json", {k: v for k, v in status.items() if k != "active_s"})
    [before] = store.list_runs(tmp_path)
    assert before.seconds == status["finished"] - status["started"]  # older runs: first start to finish
    RunFolder(run_dir).update_status(started=status["started"] - 3600)  # resumed an hour after a stop ...
    RunFolder(run_dir).update_status(active_s=12.5)  # ... but ran 12.5 s in all
    assert store.list_runs(tmp_path)[0].seconds == 12.5


def test_threads_writing_one_file_at_once_each_leave_a_whole_file(tmp_path):
    """Two browser tabs of one app server save the settings from two threads: each write's temporary file is its
    own, so none renames another's half-written bytes or finds its own gone (a shared name did both)."""
    import threading

    from core.atomic import read_json, write_json_atomic

    path, failures = tmp_path / "settings.json", []

    def write(n):
        try:
            for i in range(200):
                write_json_atomic(path, {"writer": n, "i": i, "padding": "x" * 20_000})
        except OSError as error:
            failures.append(error)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures and read_json(path)["i"] == 199 and os.listdir(tmp_path) == ["settings.json"]


def test_the_best_checkpoint_shares_the_last_ones_bytes_until_the_last_is_replaced(tmp_path, monkeypatch):
    """A run keeps best.pt beside last.pt (135 MB each for ResNet-18 with its optimizer): while they are one epoch's
    weights they are one file on disk; replacing last.pt leaves best.pt as it was; without hard links, a copy."""
    from core.atomic import copy_atomic, write_atomic

    last, best = tmp_path / "last.pt", tmp_path / "best.pt"
    write_atomic(last, lambda f: f.write(b"epoch 1"))
    copy_atomic(last, best)
    assert os.stat(best).st_ino == os.stat(last).st_ino and best.read_bytes() == b"epoch 1"
    write_atomic(last, lambda f: f.write(b"epoch 2"))
    assert best.read_bytes() == b"epoch 1" and last.read_bytes() == b"epoch 2"

    def no_links(*_):
        raise OSError("hard links are not supported here")

    monkeypatch.setattr(os, "link", no_links)
    copy_atomic(last, best)
    assert best.read_bytes() == b"epoch 2" and os.stat(best).st_ino != os.stat(last).st_ino
    assert sorted(os.listdir(tmp_path)) == ["best.pt", "last.pt"]


def test_training_processes_spin_briefly_while_they_wait_unless_the_person_chose(tmp_path):
    """OpenMP's long spinning made a run 3.5-4.7x slower beside another training (bench/beside.py): the engine sets a
    short spin before torch loads, and the runs it starts inherit it."""
    show = [sys.executable, "-c", "import os, core; print(os.environ['GOMP_SPINCOUNT'])"]
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    assert subprocess.run(show, env=env, capture_output=True, text=True, check=True).stdout.strip() == "1000"
    env["GOMP_SPINCOUNT"] = "50000"
    assert subprocess.run(show, env=env, capture_output=True, text=True, check=True).stdout.strip() == "50000"


def test_a_run_records_torchvisions_version_without_importing_it():
    """Importing torchvision cost every run's start 2.2 s on a 2-core CPU, for EfficientNet-Lite0, which does not use
    it; its version comes from its package metadata."""
    code = ("import sys; from importlib.metadata import version; from core.runs.store import versions; "
            "v = versions(); assert 'torchvision' not in sys.modules, 'imported'; "
            "assert v['torchvision'] == version('torchvision'), v; print('ok')")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    assert done.stdout.strip() == "ok", done.stderr
