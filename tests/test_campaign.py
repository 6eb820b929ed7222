"""tf-mlperf-campaign: one machine description (--hosts, --nodes x --gpus_per_node, or the Slurm allocation)
turned into run_local.sh, the hostfile and campaign.sbatch; refusals before anything is written; runs tied to
the driver (kill -9 of the driver ends the launcher and its ranks)."""
import contextlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from support.launch import BIN, REPO, env
from tf_mlperf.base.errors import UserError
from tf_mlperf.launch import campaign
from tf_mlperf.score import score

RULESETS = {"resnet": "4.0.0", "bert": "5.0.0"}
HOROVODRUN = str(BIN / "horovodrun")


def campaign_args(tmp_path, *extra, benchmark="resnet"):
    flagfile = tmp_path / "resnet.flags"
    flagfile.write_text("--train_epochs=40\n")
    return ["--benchmark", benchmark, "--flagfile", str(flagfile), "--system", "sysA",
            "--results_dir", str(tmp_path / "results"), "--work_dir", str(tmp_path / "work"),
            "--seed_base", "100", *extra]


@pytest.fixture
def slurm_conf(tmp_path, monkeypatch):
    """A configuration file is all `scontrol show hostnames` needs (no daemon)."""
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=t\nSlurmctldHost=localhost\nNodeName=gpu[01-04]\nPartitionName=p Nodes=ALL\n")
    monkeypatch.setenv("SLURM_CONF", str(conf))
    return conf


def test_hosts_give_the_same_ranks_to_run_local_the_hostfile_and_the_sbatch_script(tmp_path, capsys):
    args = campaign_args(tmp_path, "--dry_run", "--hosts", "n1:4,n2:4", "--nodes", "2", "--gpus_per_node", "4",
                         "--partition", "gpu", "--network_interface", "ib0", "--", "--log_steps=50")
    assert campaign.main(args) == 0
    out_dir = tmp_path / "work" / "sysA" / "resnet"
    assert (out_dir / "hostfile").read_text() == "n1 slots=4\nn2 slots=4\n"
    local = (out_dir / "run_local.sh").read_text()
    runs = [line for line in local.splitlines() if line.startswith(HOROVODRUN)]
    assert len(runs) == 5  # the rules' count for resnet
    for k, line in enumerate(runs):
        assert line.startswith(f"{HOROVODRUN} -np 8 --hostfile {out_dir / 'hostfile'} --gloo "
                               f"--network-interface ib0 {sys.executable} -m tf_mlperf.resnet.train ")
        assert f"--flagfile={tmp_path / 'resnet.flags'} --seed={100 + k} " in line
        assert f"--mllog_path={tmp_path / 'results' / 'sysA' / 'resnet' / f'result_{k}.txt'}" in line
        assert f"--model_dir={out_dir / f'run_{k}'} --submission_platform=sysA --log_steps=50" in line
    assert "export NCCL_SOCKET_IFNAME=ib0 HOROVOD_GLOO_IFACE=ib0" in local
    sbatch = (out_dir / "campaign.sbatch").read_text()
    for directive in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--partition=gpu"):
        assert f"#SBATCH {directive}\n" in sbatch
    steps = [line for line in sbatch.splitlines() if line.startswith("srun ")]
    assert len(steps) == 5
    assert all(s.startswith('srun --nodes=2 --ntasks=8 --ntasks-per-node=4 --cpus-per-task="$CPUS_PER_TASK" '
                            f"--cpu-bind=cores --mpi=pmix --kill-on-bad-exit=1 {sys.executable} -m ") for s in steps)
    assert "sbatch" in capsys.readouterr().out
    for script in ("run_local.sh", "campaign.sbatch"):
        subprocess.run(["bash", "-n", str(out_dir / script)], check=True)


@pytest.mark.parametrize("style", ["horovodrun", "mpirun"])
def test_nodes_and_gpus_per_node_make_the_sbatch_script_and_its_hostfile_from_the_allocation(tmp_path, style):
    args = campaign.parse_args(campaign_args(tmp_path, "--nodes", "4", "--gpus_per_node", "8", "--slurm_launcher",
                                             style, benchmark="bert"))
    assert args.runs == 10 and args.seeds == list(range(100, 110))
    topo = campaign.topology(args, environ={})
    assert (topo.nodes, topo.tasks_per_node, topo.ranks, topo.hosts) == (4, 8, 32, None)
    sbatch = campaign.slurm_script(args)
    assert "#SBATCH --nodes=4\n#SBATCH --ntasks-per-node=8\n" in sbatch
    assert 'scontrol show hostnames "$SLURM_JOB_NODELIST" | sed "s/\\$/ slots=$TASKS_PER_NODE/" > "$HOSTFILE"' in sbatch
    launcher = str(BIN / style) if style == "horovodrun" else shutil.which("mpirun")
    runs = [line for line in sbatch.splitlines() if line.startswith(launcher)]
    assert len(runs) == 10 and all(f'{launcher} -np 32 --hostfile "$HOSTFILE" ' in r for r in runs)
    if style == "mpirun":
        assert all("--map-by ppr:8:node:PE=$CPUS_PER_TASK --bind-to core -x PATH -x PYTHONPATH" in r for r in runs)
    else:
        assert all('--hostfile "$HOSTFILE" --gloo ' in r for r in runs)
    # a multi-node machine without host names has no run_local.sh: the direct run says what to give
    with pytest.raises(UserError, match="give --hosts"):
        campaign.local_command(args, 0, 100)


def test_the_slurm_allocation_is_the_machine_inside_a_job(tmp_path, slurm_conf):
    job = {"SLURM_JOB_NODELIST": "gpu[01-04]", "SLURM_TASKS_PER_NODE": "8(x4)", "SLURM_CPUS_ON_NODE": "64",
           "SLURM_CONF": str(slurm_conf)}
    args = campaign.parse_args(campaign_args(tmp_path))
    topo = campaign.topology(args, environ=job)
    assert topo.hosts == [("gpu01", 8), ("gpu02", 8), ("gpu03", 8), ("gpu04", 8)]
    assert (topo.nodes, topo.tasks_per_node, topo.ranks, topo.cpus_per_task) == (4, 8, 32, 8)
    args = campaign.parse_args(campaign_args(tmp_path, "--nodes", "2"))
    with pytest.raises(UserError, match="--nodes=2 but the Slurm allocation .*has 4 node"):
        campaign.topology(args, environ=job)
    args = campaign.parse_args(campaign_args(tmp_path, "--hosts", "gpu01:8,other:8"))
    with pytest.raises(UserError, match="other, not in this job's allocation"):
        campaign.topology(args, environ=job)


@pytest.mark.parametrize("machine, message", [
    (["--hosts", "n1:4,n2:4", "--nodes", "3"], "--nodes=3 but --hosts n1:4,n2:4 has 2 node"),
    (["--hosts", "n1:4,n2:4", "--np", "9"], "--np=9 is more ranks than the 8 slots"),
    (["--hosts", "n1:4,n2:2", "--gpus_per_node", "4"], "--gpus_per_node=4 but --hosts"),
    (["--hosts", "n1:x"], "is not host or host:slots"),
], ids=["nodes_vs_hosts", "np_over_slots", "gpus_vs_slots", "bad_slots"])
@pytest.mark.parametrize("dry", [True, False], ids=["dry_run", "run"])
def test_contradictory_machine_is_refused_before_anything_is_written(tmp_path, capsys, machine, message, dry):
    assert campaign.main(campaign_args(tmp_path, *machine, *["--dry_run"] * dry)) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "work").exists() and not (tmp_path / "results").exists()


def test_host_that_does_not_answer_is_refused_before_the_first_run(tmp_path, capsys):
    args = campaign_args(tmp_path, "--hosts", "localhost:1,no-such-node.invalid:1")
    assert campaign.main(args) == 2
    assert "host no-such-node.invalid does not answer" in capsys.readouterr().err
    assert not (tmp_path / "work").exists() and not (tmp_path / "results").exists()


def test_results_folder_of_another_system_is_refused_even_with_overwrite(tmp_path, capsys):
    sys.path.insert(0, str(pathlib.Path(__file__).parent))
    from support.mllog_fixtures import write_result_log
    foreign = tmp_path / "results" / "sysA" / "resnet" / "result_7.txt"
    foreign.parent.mkdir(parents=True)
    write_result_log(foreign, "resnet", 10.0)     # platform of the fixture, not sysA
    before = foreign.read_bytes()
    for dry in ([], ["--dry_run"]):
        assert campaign.main(campaign_args(tmp_path, "--launcher", "none", "--overwrite", *dry)) == 2
        assert f"{foreign} holds a run of resnet on system" in capsys.readouterr().err
    assert foreign.read_bytes() == before and sorted(foreign.parent.iterdir()) == [foreign]
    assert not (tmp_path / "work").exists()


def test_campaign_runs_and_its_logs_score(tmp_path):
    """End to end with a stand-in trainer: it writes the log it is asked for via mllog."""
    fake = tmp_path / "fake_python"
    fake.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import sys
        sys.path[:0] = {[str(pathlib.Path(__file__).parent)]!r}
        from support.mllog_fixtures import write_result_log
        opts = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--"))
        seed = int(opts["seed"])
        if seed == 104:
            sys.exit(3)  # crashes before writing any log
        write_result_log(opts["mllog_path"], "resnet", 10.0 + seed % 5)
    """))
    fake.chmod(0o755)
    args = campaign_args(tmp_path, "--launcher", "none", "--python", str(fake))
    assert campaign.main(args) == 1  # one run exited non-zero
    manifest = json.loads((tmp_path / "work" / "sysA" / "resnet" / "campaign.json").read_text())
    assert [r["exit_code"] for r in manifest["runs"]] == [0, 0, 0, 0, 3]
    report = score.score_results(tmp_path / "results", tmp_path / "out", RULESETS)
    resnet = report["systems"]["sysA"]["benchmarks"]["resnet"]
    # seeds 100..103 -> 10, 11, 12, 13 minutes; the crashed run left an empty log, which counts
    # as the non-converging run dropped as the slowest: mean(11, 12, 13) = 12
    assert resnet["runs"][4]["reason"].endswith("no run_stop") and not resnet["runs"][4]["counted"]
    assert resnet["olympic"]["minutes"] == 12.0
    assert campaign.main(args) == 2  # refuses to mix a second campaign into the same folder


def test_overwrite_moves_the_earlier_runs_aside_instead_of_appending_or_resuming(tmp_path, capsys):
    """The real trainer appends to --mllog_path and resumes from --model_dir: a stand-in that does the same."""
    fake = tmp_path / "fake_python"
    fake.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import os, pathlib, sys
        sys.path[:0] = {[str(pathlib.Path(__file__).parent)]!r}
        from support.mllog_fixtures import write_result_log
        opts = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--"))
        os.makedirs(os.path.join(opts["model_dir"], "checkpoints"), exist_ok=True)
        one = write_result_log(opts["mllog_path"] + ".one", "resnet", 10.0)
        with open(opts["mllog_path"], "a") as log:
            log.write(one.read_text().replace("test-system", "sysA"))
        one.unlink()
    """))
    fake.chmod(0o755)
    args = campaign_args(tmp_path, "--launcher", "none", "--python", str(fake), "--runs", "2")
    assert campaign.main(args) == 0
    results = tmp_path / "results" / "sysA" / "resnet"
    for name in ("result_0.txt", "result_1.txt"):
        (results / name).rename(tmp_path / name)
    # the run folders alone would make the next runs resume: refused without --overwrite
    capsys.readouterr()
    assert campaign.main(args) == 2
    assert "2 run folder(s) of an earlier campaign" in capsys.readouterr().err
    (tmp_path / "result_0.txt").rename(results / "result_0.txt")
    assert campaign.main([*args, "--overwrite"]) == 0
    for k in (0, 1):    # one run per log, the earlier ones kept aside
        assert (results / f"result_{k}.txt").read_text().count('"key": "run_start"') == 1
    replaced = list((tmp_path / "work" / "sysA" / "resnet").glob("replaced-*"))
    assert len(replaced) == 1 and sorted(p.name for p in replaced[0].iterdir()) == ["result_0.txt", "run_0", "run_1"]


def test_campaign_counts_one_slot_for_a_host_without_one(tmp_path):
    args = campaign.parse_args(campaign_args(tmp_path, "--hosts", "node1:4,node2,node3:2"))
    assert campaign.topology(args, environ={}).ranks == 7
    assert campaign.hostfile_text(args.hosts) == "node1 slots=4\nnode2 slots=1\nnode3 slots=2\n"


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["horovodrun", "none"])
def test_kill_9_of_the_driver_ends_the_launcher_and_every_rank(tmp_path, launcher):
    """The ranks (a stand-in trainer under the real horovodrun) would write a success log after 40 s; the
    driver is killed with SIGKILL once they run: they must be gone within 20 s and write nothing."""
    fake = tmp_path / "fake_python"
    fake.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import os, sys, time
        opts = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--"))
        rank = os.environ.get("HOROVOD_RANK", "0")
        signal_free = __import__("signal")
        signal_free.signal(signal_free.SIGTERM, signal_free.SIG_IGN)   # a rank deaf to SIGTERM: SIGKILL follows
        open(os.path.join({str(tmp_path)!r}, "rank" + rank + ".pid"), "w").write(str(os.getpid()))
        time.sleep(40)
        open(opts["mllog_path"], "w").write("success\\n")
    """))
    fake.chmod(0o755)
    machine = ["--hosts", "localhost:2"] if launcher == "horovodrun" else []
    driver = subprocess.Popen([sys.executable, "-m", "tf_mlperf.launch.campaign",
                               *campaign_args(tmp_path, "--launcher", launcher, "--python", str(fake), *machine)],
                              cwd=REPO, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ranks = ["rank0.pid", "rank1.pid"] if launcher == "horovodrun" else ["rank0.pid"]
    deadline = time.time() + 60
    while time.time() < deadline and not all((tmp_path / r).exists() for r in ranks):
        assert driver.poll() is None, "the driver ended before its ranks started"
        time.sleep(0.2)
    time.sleep(0.5)
    pids = [int((tmp_path / r).read_text()) for r in ranks]
    launcher_pids = [int(p) for p in subprocess.run(["pgrep", "-P", str(driver.pid)], capture_output=True,
                                                    text=True).stdout.split()]
    assert all(map(_alive, pids)) and launcher_pids
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    deadline = time.time() + 20
    while time.time() < deadline and any(map(_alive, pids + launcher_pids)):
        time.sleep(0.2)
    survivors = [p for p in pids + launcher_pids if _alive(p)]
    for pid in survivors:      # do not leave them behind when the test fails
        os.kill(pid, signal.SIGKILL)
    assert not survivors, "processes outlived the driver"
    assert not list((tmp_path / "results").rglob("result_*.txt"))


# --------------------------------------------------------------------------- issue #30: a run meets another run

@pytest.mark.parametrize("flag", [["--runs", "0"], ["--runs", "-1"], ["--np", "0"], ["--nodes", "0"],
                                  ["--gpus_per_node", "-2"], ["--cpus_per_task", "0"]], ids=lambda f: f[0][2:] + f[1])
def test_counts_below_one_are_refused_in_one_line(tmp_path, capsys, flag):
    """`--runs 0` used to run the default 5 runs, `--runs -1 --dry_run` to write scripts with no run in them."""
    with pytest.raises(SystemExit) as exit_:
        campaign.main(campaign_args(tmp_path, *flag, "--dry_run"))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"tf-mlperf-campaign: error: {flag[0]} {flag[1]}: give 1 or more, or leave it out "
                                f"(default: {err.split('(default: ')[-1].strip()}"], err
    assert not (tmp_path / "work").exists()


def test_runs_below_the_rules_count_are_allowed_with_a_note(tmp_path, capsys):
    assert campaign.main(campaign_args(tmp_path, "--runs", "2", "--dry_run", benchmark="bert")) == 0
    assert ("--runs 2 is below the rules' count for bert (10): tf-mlperf-score needs --allow_fewer"
            in capsys.readouterr().err)


@pytest.mark.parametrize("hosts, named, fix", [
    ("127.0.0.1:1,127.0.0.1:1", "127.0.0.1 2 times", "127.0.0.1:2"),
    ("node1:4,node2:4,node1:4", "node1 2 times", "node1:8"),
    ("localhost:1,127.0.0.1", "this machine (localhost, 127.0.0.1) 2 times", "localhost:2"),
], ids=["loopback", "node", "two_names"])
def test_a_host_named_twice_is_refused(tmp_path, capsys, hosts, named, fix):
    """Each entry would number its local ranks from 0: two ranks on GPU 0 of one node."""
    assert campaign.main(campaign_args(tmp_path, "--hosts", hosts, "--dry_run")) == 2
    err = capsys.readouterr().err
    assert f"--hosts {hosts} names {named}" in err and f"give it once with the slots summed: {fix}" in err, err
    assert len(err.splitlines()) == 1 and not (tmp_path / "work").exists()


def _stand_in(tmp_path, body):
    fake = tmp_path / "fake_python"
    fake.write_text(f"#!{sys.executable}\nimport os, sys, time\n" + textwrap.dedent(body))
    fake.chmod(0o755)
    return fake


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["none", "horovodrun"])
def test_ctrl_c_ends_the_trainers_and_says_so_in_one_line(tmp_path, launcher):
    """SIGINT to the driver while a (sleeping) trainer runs: one line, no traceback, exit 130, the launcher and
    the rank gone, the interrupted run recorded in campaign.json."""
    import psutil
    fake = _stand_in(tmp_path, f"""\
        log = [a.split("=", 1)[1] for a in sys.argv if a.startswith("--mllog_path=")][0]
        open(log, "w").write(":::MLLOG run_start, and no run_stop\\n")     # a log begun, as a real trainer's
        open(os.path.join({str(tmp_path)!r}, "rank.pid"), "w").write(str(os.getpid()))
        time.sleep(60)
    """)
    machine = ["--hosts", "localhost:1"] if launcher == "horovodrun" else []
    driver = subprocess.Popen([sys.executable, "-m", "tf_mlperf.launch.campaign",
                               *campaign_args(tmp_path, "--launcher", launcher, "--python", str(fake), *machine)],
                              cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not (tmp_path / "rank.pid").exists():
        assert driver.poll() is None, driver.communicate()
        time.sleep(0.2)
    time.sleep(0.5)
    rank = psutil.Process(int((tmp_path / "rank.pid").read_text()))
    launcher_proc, = [c for c in psutil.Process(driver.pid).children()
                      if c.cmdline()[1:3] != ["-m", "tf_mlperf.launch.guard"]]  # not the guard
    driver.send_signal(signal.SIGINT)
    try:
        out, err = driver.communicate(timeout=30)
    finally:
        for proc in (driver, rank, launcher_proc):      # nothing left behind when the test fails
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
    assert driver.returncode == 130, out + err
    assert "Traceback" not in out + err
    work = tmp_path / "work" / "sysA" / "resnet"
    assert err.strip().splitlines() == [
        "[campaign] interrupted at run 1/5: its launcher and ranks were ended; 0 finished run(s) recorded in "
        f"{work / 'campaign.json'}; to start the campaign again: the same command with --overwrite (moves the runs "
        "so far aside)"], err
    assert not _alive(rank.pid) and not _alive(launcher_proc.pid)
    runs = json.loads((work / "campaign.json").read_text())["runs"]
    assert [(r["run"], r["seed"], r["exit_code"], r["interrupted"]) for r in runs] == [(0, 100, None, True)]


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["none", "horovodrun"])
def test_the_trainers_one_line_error_is_the_last_line_of_a_failed_run(tmp_path, launcher):
    """A trainer that fails prints `error: ...` and exits 2; horovodrun then prints its own traceback (the
    `none` stand-in prints a fake one): the campaign repeats the error as the run's last line."""
    fake = _stand_in(tmp_path, """\
        print("training...", flush=True)
        print("error: --data_dir /nope: no such folder; give the folder of the TFRecords", file=sys.stderr)
        if os.environ.get("FAKE_TRACEBACK"):
            print("Traceback (most recent call last):\\n  File launcher.py\\nRuntimeError: rank 0 failed",
                  file=sys.stderr)
        sys.exit(2)
    """)
    machine = ["--hosts", "localhost:1"] if launcher == "horovodrun" else []
    proc = subprocess.run([sys.executable, "-m", "tf_mlperf.launch.campaign", "--runs", "1",
                           *campaign_args(tmp_path, "--launcher", launcher, "--python", str(fake), *machine)],
                          cwd=REPO, env=env(FAKE_TRACEBACK="1" if launcher == "none" else ""), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=120)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 1, proc.stdout
    assert "Traceback (most recent call last):" in lines and "training..." in proc.stdout, proc.stdout
    code = 1 if launcher == "horovodrun" else 2     # horovodrun exits 1 whatever its rank exited
    assert lines[-2] == (f"[campaign] run 1/1 (result_0.txt) failed (exit {code}; it counts as a failed run, the "
                         "campaign goes on): error: --data_dir /nope: no such folder; give the folder of the TFRecords"
                         ), proc.stdout
    assert lines[-1].startswith("[campaign] 0/1 runs exited 0; failed: [0]")


@pytest.mark.parametrize("style", [
    ("--hosts", "n1:4,n2:4", "--network_interface", "ib0", "--pre_run_cmd", "sync; echo 3 > /proc/sys/vm/drop_caches"),
    ("--nodes", "4", "--gpus_per_node", "8", "--slurm_launcher", "horovodrun", "--partition", "gpu"),
    ("--nodes", "2", "--gpus_per_node", "8", "--slurm_launcher", "mpirun", "--cpus_per_task", "6", "--launcher",
     "mpirun"),
], ids=["srun+local", "horovodrun", "mpirun"])
def test_the_scripts_the_templates_render_to_pass_shellcheck(tmp_path, capsys, style):
    """campaign.sbatch and run_local.sh are filled from tf_mlperf/launch/templates/: what they render to, in each
    launcher style, is clean to shellcheck (scripts/setup.sh installs it), warnings included."""
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is not installed: run scripts/setup.sh (it installs Debian's shellcheck)"
    assert campaign.main(campaign_args(tmp_path, "--dry_run", *style, "--", "--log_steps=50")) == 0
    out_dir = tmp_path / "work" / "sysA" / "resnet"
    scripts = [p for p in (out_dir / "campaign.sbatch", out_dir / "run_local.sh") if p.exists()]
    assert scripts[0].name == "campaign.sbatch"
    proc = subprocess.run([shellcheck, "--shell=bash", "--severity=warning", *map(str, scripts)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_template_placeholder_left_unfilled_is_an_error_of_ours():
    from tf_mlperf.launch import scripts
    with pytest.raises(ValueError, match="placeholders"):
        scripts.fill("local_run.sh", PRE_RUN="", COMMAND="true")          # {{K}} has no value
