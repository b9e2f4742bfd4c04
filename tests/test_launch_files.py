"""launch/: the pod scripts and manifests parse, name each other consistently, use real config paths and keys, and
their signal handling does what launch/README.md says (SLURM requeue, Kubernetes exit code, TPU metadata -> ids).
gcloud / srun / scancel / scontrol / curl / python are replaced by small fakes on PATH; nothing leaves the machine."""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from jaxfin.config import valid_keys

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch"
SCRIPTS = sorted([*LAUNCH.glob("*.sh"), *LAUNCH.glob("*.sbatch")])
MANIFESTS = sorted((LAUNCH / "k8s").glob("*.yaml"))
BASH = shutil.which("bash")
pytestmark = pytest.mark.skipif(BASH is None, reason="needs bash")


def _pod_section() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("## Running on a pod")
    return text[start : text.index("\n## ", start + 1)]


def _docs() -> dict[str, str]:
    files = [*SCRIPTS, *MANIFESTS, LAUNCH / "README.md"]
    return {str(p.relative_to(REPO)): p.read_text() for p in files} | {"README.md#running-on-a-pod": _pod_section()}


def _manifests():
    for path in MANIFESTS:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        yield path.name, docs


def _container(pod_spec: dict) -> dict:
    [c] = pod_spec["containers"]
    return c


def _env(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def _write_exe(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def _wait_for(path: Path, timeout: float = 20.0) -> str:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if path.exists() and path.read_text().endswith("\n"):
            return path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{path} was not written within {timeout} s")


# ---------------------------------------------------------------- static checks


def test_every_launcher_exists_and_invokes_jaxfin_launch():
    names = {p.name for p in [*SCRIPTS, *MANIFESTS]}
    assert {"tpu_pod.sh", "slurm_nvidia.sbatch", "slurm_rocm.sbatch", "indexed-job.yaml", "jobset.yaml"} <= names
    for path in [*SCRIPTS, *MANIFESTS]:
        assert "python -m jaxfin.launch" in path.read_text(), path


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_shell_scripts_parse(path):
    subprocess.run([BASH, "-n", str(path)], check=True)


def test_indexed_job_service_and_job_agree():
    docs = dict(_manifests())["indexed-job.yaml"]
    assert [d["kind"] for d in docs] == ["Service", "Job"]
    svc, job = docs
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["selector"] == {"job-name": job["metadata"]["name"]}
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"]
    pod = spec["template"]["spec"]
    assert pod["subdomain"] == svc["metadata"]["name"] and pod["restartPolicy"] == "Never"
    env = _env(_container(pod))
    # pod 0 of an Indexed Job is <job>-0, reachable through the headless Service named by `subdomain`
    assert env["JAXFIN_COORDINATOR"] == f"{job['metadata']['name']}-0.{pod['subdomain']}:1234"
    assert int(env["JAXFIN_NUM_PROCESSES"]) == spec["completions"]
    assert _container(pod)["resources"]["limits"]["nvidia.com/gpu"] == 8


def test_jobset_names_pod_zero_and_restarts_everything():
    [js] = dict(_manifests())["jobset.yaml"]
    assert js["apiVersion"] == "jobset.x-k8s.io/v1alpha2" and js["kind"] == "JobSet"
    [rj] = js["spec"]["replicatedJobs"]
    assert rj["replicas"] == 1  # JOB_COMPLETION_INDEX is only unique within one Job
    job = rj["template"]["spec"]
    assert job["completionMode"] == "Indexed" and job["completions"] == job["parallelism"]
    assert job["backoffLimit"] == 0  # one failed pod fails the Job, so the JobSet restarts all pods
    subdomain = js["spec"].get("network", {}).get("subdomain", js["metadata"]["name"])
    env = _env(_container(job["template"]["spec"]))
    assert env["JAXFIN_COORDINATOR"] == f"{js['metadata']['name']}-{rj['name']}-0-0.{subdomain}:1234"
    assert int(env["JAXFIN_NUM_PROCESSES"]) == job["completions"]
    [rule] = js["spec"]["failurePolicy"]["rules"]
    assert rule["onJobFailureReasons"] == ["PodFailurePolicy"]
    assert job["podFailurePolicy"]["rules"][0]["onPodConditions"] == [{"type": "DisruptionTarget"}]
    assert "gke-tpu-accelerator" in (LAUNCH / "k8s" / "jobset.yaml").read_text()


def test_referenced_configs_exist_and_overrides_are_valid_keys():
    keys = set(valid_keys())
    seen_configs, seen_keys = set(), set()
    for name, text in _docs().items():
        for path in re.findall(r"\bconfigs/[\w./-]+\.ya?ml\b", text):
            assert (REPO / path).is_file(), f"{name} refers to {path}, which does not exist"
            seen_configs.add(path)
        for line in text.replace("\\\n", " ").splitlines():
            marker = next((m for m in ("jaxfin.launch ", "tpu_pod.sh run ", ".sbatch ") if m in line), None)
            if marker is None:
                continue
            for token in line.split(marker, 1)[1].split():
                m = re.fullmatch(r"['\"]?([a-z_]+(?:\.[a-z_]+)+|[a-z_]+)=\S*", token)
                if m and not token.startswith("--"):
                    assert m.group(1) in keys, f"{name}: `{m.group(1)}` is not a config key ({line.strip()})"
                    seen_keys.add(m.group(1))
    assert "configs/tiny.yaml" in seen_configs
    assert {"output_dir", "data.cache_dir", "mesh.fsdp", "mesh.data"} <= seen_keys


# ---------------------------------------------------------------- behaviour, with fakes on PATH

FAKE_PYTHON = """#!/usr/bin/env bash
# records its arguments and environment, then runs until SIGTERM ("checkpoint", exit 0) or FAKE_STEPS run out
out="${FAKE_OUT:-$HOME/fake-python.out}"
trap 'echo "TERM" >> "$out.term"; exit 0' TERM
{ echo "args: $*"; env | grep -E '^(JAXFIN_|JAX_LOCAL|HIP_|CUDA_VIS|ROCR_|GPU_DEVICE)' | sort; } > "$out.tmp"
echo "end" >> "$out.tmp"; mv "$out.tmp" "$out"
for _ in $(seq "${FAKE_STEPS:-200}"); do sleep 0.05; done
exit "${FAKE_RC:-0}"
"""


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.name)
def test_k8s_wrapper_turns_a_sigterm_checkpoint_into_a_failed_pod(manifest, tmp_path):
    docs = [d for d in yaml.safe_load_all(manifest.read_text()) if d]
    job = next(d for d in docs if d["kind"] in ("Job", "JobSet"))
    spec = job["spec"] if job["kind"] == "Job" else job["spec"]["replicatedJobs"][0]["template"]["spec"]
    container = _container(spec["template"]["spec"])
    assert container["command"] == ["bash", "-c"]
    script = container["args"][0]
    _write_exe(tmp_path / "bin" / "python", FAKE_PYTHON)
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "FAKE_OUT": str(tmp_path / "py")}

    p = subprocess.Popen([BASH, "-c", script], env=env)
    assert "jaxfin.launch configs/tiny.yaml" in _wait_for(tmp_path / "py")
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=20) == 143  # not 0: an Indexed Job never reruns a Succeeded index
    assert (tmp_path / "py.term").exists()  # the training process got the SIGTERM (and "checkpointed")

    done = subprocess.run([BASH, "-c", script], env={**env, "FAKE_STEPS": "1", "FAKE_RC": "3"}, timeout=20)
    assert done.returncode == 3  # a normal exit status passes through


def _fake_slurm(tmp_path: Path) -> dict[str, str]:
    bin_ = tmp_path / "bin"
    _write_exe(bin_ / "srun", '#!/usr/bin/env bash\nwhile [[ $1 == --* ]]; do shift; done\n"$@" &\n'
               f'echo $! > {tmp_path}/task.pid\nwait $!\n')  # fmt: skip
    _write_exe(bin_ / "scancel", f'#!/usr/bin/env bash\necho "$*" >> {tmp_path}/scancel.log\n'
               f'kill -TERM "$(cat {tmp_path}/task.pid)"\n')  # fmt: skip
    _write_exe(bin_ / "scontrol", f'#!/usr/bin/env bash\necho "$*" >> {tmp_path}/scontrol.log\n')
    venv = tmp_path / "venv"
    _write_exe(venv / "bin" / "python", FAKE_PYTHON)
    (venv / "bin" / "activate").write_text(f"PATH={venv / 'bin'}:$PATH\n")
    return {
        **os.environ,
        "PATH": f"{bin_}:{os.environ['PATH']}",
        "VENV": str(venv),
        "FAKE_OUT": str(tmp_path / "py"),
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_NTASKS": "2",
        "SLURM_GPUS_ON_NODE": "8",
        "SLURM_CPUS_ON_NODE": "64",
        "SLURM_SUBMIT_DIR": str(REPO),
    }


def test_slurm_time_limit_checkpoints_then_requeues(tmp_path):
    env = _fake_slurm(tmp_path)
    args = ["configs/tiny.yaml", "output_dir=/shared/runs/x"]
    p = subprocess.Popen([BASH, str(LAUNCH / "slurm_nvidia.sbatch"), *args], env=env, cwd=tmp_path)
    seen = _wait_for(tmp_path / "py")
    assert "args: -m jaxfin.launch configs/tiny.yaml output_dir=/shared/runs/x" in seen
    assert "JAX_LOCAL_DEVICE_IDS=0,1,2,3,4,5,6,7" in seen  # one task per node owns all 8 GPUs
    p.send_signal(signal.SIGTERM)  # preemption / scancel also signal the batch script: it must keep waiting
    time.sleep(0.3)
    assert p.poll() is None
    p.send_signal(signal.SIGUSR1)  # what `#SBATCH --signal=B:USR1@300` sends before the time limit
    assert p.wait(timeout=20) == 0
    assert (tmp_path / "scancel.log").read_text().split() == ["--signal=TERM", "4242"]
    assert (tmp_path / "py.term").exists()
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"]


def test_slurm_normal_end_does_not_requeue_and_keeps_the_exit_status(tmp_path):
    env = {**_fake_slurm(tmp_path), "FAKE_STEPS": "1", "FAKE_RC": "5", "SLURM_NTASKS": "16"}  # one task per GPU
    done = subprocess.run([BASH, str(LAUNCH / "slurm_nvidia.sbatch"), "configs/tiny.yaml"], env=env, cwd=tmp_path)
    assert done.returncode == 5
    assert not (tmp_path / "scontrol.log").exists()
    assert "JAX_LOCAL_DEVICE_IDS" not in (tmp_path / "py").read_text()  # JAX pins task i to GPU i itself


def test_slurm_rocm_keeps_only_rocr_visible_devices(tmp_path):
    visible = {"ROCR_VISIBLE_DEVICES": "4,5", "HIP_VISIBLE_DEVICES": "4,5", "CUDA_VISIBLE_DEVICES": "4,5"}
    env = {**_fake_slurm(tmp_path), **visible, "FAKE_STEPS": "1", "SLURM_GPUS_ON_NODE": "2"}
    done = subprocess.run([BASH, str(LAUNCH / "slurm_rocm.sbatch"), "configs/tiny.yaml"], env=env, cwd=tmp_path)
    assert done.returncode == 0
    seen = (tmp_path / "py").read_text()
    assert "ROCR_VISIBLE_DEVICES=4,5" in seen and "JAX_LOCAL_DEVICE_IDS=0,1" in seen
    assert "HIP_VISIBLE_DEVICES" not in seen and "CUDA_VISIBLE_DEVICES" not in seen


FAKE_GCLOUD = """#!/usr/bin/env bash
# `gcloud compute tpus tpu-vm ssh NAME --worker=W --command=CMD`: run CMD with HOME=$FAKE_POD/w<i> for each worker
cmd=""; worker=0
for a in "$@"; do
  case "$a" in --command=*) cmd="${a#--command=}" ;; --worker=*) worker="${a#--worker=}" ;; esac
done
[[ " $* " == *" ssh "* ]] || exit 3
if [[ $worker == all ]]; then ws="0 1"; else ws="${worker//,/ }"; fi
for w in $ws; do (cd "$FAKE_POD/w$w" && HOME="$FAKE_POD/w$w" bash -c "$cmd") || exit $?; done
"""

FAKE_CURL = """#!/usr/bin/env bash
case "${@: -1}" in
  */worker-network-endpoints) echo -n "t-w-0:0:10.1.0.7,t-w-1:1:10.1.0.8" ;;
  */agent-worker-number) echo -n "${HOME##*/w}" ;;
  *) exit 22 ;;
esac
"""


def test_tpu_pod_run_passes_the_metadata_worker_ids_to_every_worker(tmp_path):
    bin_ = tmp_path / "bin"
    _write_exe(bin_ / "gcloud", FAKE_GCLOUD)
    _write_exe(bin_ / "curl", FAKE_CURL)
    for w in (0, 1):
        _write_exe(tmp_path / f"w{w}" / "jaxfin" / ".venv" / "bin" / "python", FAKE_PYTHON)
    env = {**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}", "FAKE_POD": str(tmp_path), "FOLLOW": "0"}
    env.update(TPU_NAME="t", ZONE="z", PROJECT="p", FAKE_STEPS="400")
    run = [BASH, str(LAUNCH / "tpu_pod.sh"), "run", "configs/tiny.yaml", "output_dir=/mnt/shared/runs/a b"]
    subprocess.run(run, env=env, check=True, timeout=60)
    for w in (0, 1):
        seen = _wait_for(tmp_path / f"w{w}" / "fake-python.out")
        assert "args: -m jaxfin.launch configs/tiny.yaml output_dir=/mnt/shared/runs/a b" in seen
        assert "JAXFIN_COORDINATOR=10.1.0.7:8482" in seen and "JAXFIN_NUM_PROCESSES=2" in seen
        assert f"JAXFIN_PROCESS_ID={w}" in seen
    again = subprocess.run(run, env=env, timeout=60, capture_output=True, text=True)
    assert again.returncode != 0 and "still going" in again.stderr  # one run per slice at a time
    subprocess.run([BASH, str(LAUNCH / "tpu_pod.sh"), "stop"], env=env, check=True, timeout=60)
    for w in (0, 1):
        assert (tmp_path / f"w{w}" / "fake-python.out.term").exists()  # SIGTERM -> checkpoint and exit
