"""A cluster that really scales, on this machine: Ray's own autoscaler launching and removing real Ray nodes (its
fake multi-node provider), for trying and testing what grows with the work.

    python -m cluster.autoscaling [--head-cpus 1] [--node-cpus 1] [--max-nodes 3] [--idle-timeout 6]
                                  [--timeline FILE] [--remove-node-when PATH] -- COMMAND ...

Starts a Ray head (token authentication on) with an autoscaling config whose worker type has ``--node-cpus`` CPUs and
0..``--max-nodes`` nodes, runs COMMAND against it (``RAY_ADDRESS`` set), and stops everything when COMMAND ends;
exits with COMMAND's status. The autoscaler launches nodes for what the work asks and removes them after
``--idle-timeout`` seconds idle. ``--timeline`` writes the alive nodes over time (JSON: samples, peak, node-seconds);
``--remove-node-when PATH`` kills a worker node that runs a Ray Train worker once PATH exists (a lost node, as a
preempted VM is); with ``--no-replacement`` the autoscaler then stops, so that nothing replaces it.
``--hold-autoscaler-until PATH`` holds the autoscaler until PATH exists: the command starts on the head alone.

Everything runs in a network and PID namespace of its own (root, as CI and the development machines): Ray binds
127.0.0.1 only, the fixed ports clash with no other cluster, and whatever Ray leaves behind ends with the namespace,
never another Ray on the machine. Give COMMAND local paths: nothing outside the namespace is reachable from it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOST, GCS_PORT = "127.0.0.1", 6379
HEAD_TYPE, WORKER_TYPE = "ray.head.default", "ray.worker.cpu"
INSIDE_FLAG = "--inside-namespace"
FAKE_PROVIDER_PACKAGE = "autoscaler/_private/fake_multi_node"
# The fake provider's id for the head (ray.autoscaler._private.fake_multi_node.node_provider.FAKE_HEAD_NODE_ID): the
# head must take it for Ray's autoscaler v2 (what Ray Train's and Ray Data's resource requests go through) to know it.
FAKE_HEAD_ID = "fffffffffffffffffffffffffffffffffffffffffffffffffff00000"
SAMPLE_SECONDS = 0.5
# A killed node is known dead after ~3 s of failed health checks instead of Ray's ~15 s (3 s x 5): Ray Train then
# restarts on the nodes that are left without first waiting for a worker group on the lost one to time out.
# And a worker group whose nodes are gone gives up after 20 s instead of 60 (Ray Train's placement timeout; a fake node
# starts in seconds): a group started in the moment between a node's loss and Ray knowing it is retried sooner.
FAST_NODE_DEATH = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3",
                   "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "20"}


def autoscaling_config(head_cpus: int, node_cpus: int, max_nodes: int, idle_timeout_s: float) -> dict:
    """The fake provider's cluster config (Ray's wheel ships no example of it)."""
    return {
        "cluster_name": "fake-autoscaling",
        "max_workers": max_nodes,
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True, "launch_multiple": True, "head_node_id": FAKE_HEAD_ID},
        "available_node_types": {
            HEAD_TYPE: {"resources": {"CPU": head_cpus}, "node_config": {}, "max_workers": 0},
            WORKER_TYPE: {"resources": {"CPU": node_cpus}, "node_config": {}, "min_workers": 0,
                          "max_workers": max_nodes},
        },
        "head_node_type": HEAD_TYPE,
        "auth": {}, "docker": {}, "upscaling_speed": 1.0, "idle_timeout_minutes": idle_timeout_s / 60,
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
        "head_start_ray_commands": [], "worker_start_ray_commands": [], "file_mounts": {},
        "cluster_synced_files": [], "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
    }


def raylets() -> list:
    import psutil

    return [process for process in psutil.process_iter(["name", "cmdline", "status"])
            if process.info["status"] != psutil.STATUS_ZOMBIE
            and (process.info["name"] == "raylet" or any("raylet/raylet" in part for part in process.info["cmdline"] or ()))]


def reap_orphans(keep: set[int]) -> None:
    """Collect the exited processes this namespace's init (this process) inherited from Ray's daemons, except
    ``keep``: left unreaped, a killed node's raylet stays a zombie that still looks like a node."""
    import psutil

    for child in psutil.Process().children():
        if child.pid in keep:
            continue
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(child.pid, os.WNOHANG)
        except (psutil.NoSuchProcess, ChildProcessError):
            continue


def is_head(raylet) -> bool:
    return any("--head" in part or "is_head_node=true" in part.lower() for part in raylet.info["cmdline"] or ())


def remove_node_running(text: str) -> str | None:
    """Kill (SIGKILL, as a preemption) the first non-head node one of whose processes' command line holds ``text``;
    the killed raylet's pid, or None when no such node runs."""
    import psutil

    for raylet in raylets():
        if is_head(raylet):
            continue
        try:
            family = [raylet, *raylet.children(recursive=True)]
            if any(text in " ".join(member.cmdline()) for member in family):
                for member in family:
                    member.kill()
                return str(raylet.pid)
        except psutil.NoSuchProcess:
            continue
    return None


def provide_fake_provider_defaults(state: Path, config: dict) -> None:
    """Ray's autoscaler fills a config's gaps from its provider's example file, which Ray's wheel lacks for the fake
    provider: show Ray's package folder with that file added, in this process's mount namespace only (a bind mount
    of a copy; the installed package is untouched, and the view ends with the namespace)."""
    package = Path(importlib.util.find_spec("ray").submodule_search_locations[0]) / FAKE_PROVIDER_PACKAGE
    if (package / "example.yaml").exists():
        return
    overlay = state / "fake_multi_node"
    shutil.copytree(package, overlay)
    (overlay / "example.yaml").write_text(json.dumps(config))
    subprocess.run(["mount", "--bind", str(overlay), str(package)], check=True)


def autoscaler_processes() -> list:
    """The autoscaler's monitor process (v2's, or v1's)."""
    import psutil

    return [process for process in psutil.process_iter(["cmdline"])
            if any("autoscaler/v2/monitor.py" in part or "autoscaler/_private/monitor.py" in part
                   for part in process.info["cmdline"] or ())]


def stop_autoscaler() -> None:
    """End the autoscaler: no node replaces the one removed, as when a spot market has no capacity left. The
    cluster keeps the nodes it has."""
    for process in autoscaler_processes():
        process.kill()


def pause_autoscaler(paused: bool) -> None:
    """Hold the autoscaler (SIGSTOP) or let it go on (SIGCONT): no node is launched or removed while it is held."""
    for process in autoscaler_processes():
        process.send_signal(signal.SIGSTOP if paused else signal.SIGCONT)


def end_every_other_process() -> None:
    """Kill every other process of this PID namespace and collect them (this process is its init): the whole
    cluster, at once. (`ray stop --force` would, then wait out its grace period on zombies only init collects.)"""
    import psutil

    if os.getpid() != 1:
        raise RuntimeError("end_every_other_process runs only as the init of a PID namespace of its own")
    for process in psutil.process_iter():
        if process.pid != 1:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                continue
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:  # none left
            return


def run_inside(args: argparse.Namespace) -> int:
    if os.getpid() != 1:
        print(f"error: {INSIDE_FLAG} is cluster.autoscaling's own: it runs as the init of a PID namespace",
              file=sys.stderr)
        return 2
    state = Path(tempfile.mkdtemp(prefix="dlr-fake-"))
    settings = autoscaling_config(args.head_cpus, args.node_cpus, args.max_nodes, args.idle_timeout)
    config = state / "autoscaling.json"  # YAML is a superset of JSON: Ray reads it as its YAML config
    config.write_text(json.dumps(settings))
    provide_fake_provider_defaults(state, settings)
    token = secrets.token_hex(32)
    env = {**os.environ, "RAY_FAKE_CLUSTER": "1", "RAY_enable_autoscaler_v2": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
           "RAY_CLOUD_INSTANCE_ID": FAKE_HEAD_ID, "RAY_OVERRIDE_NODE_ID_FOR_TESTING": FAKE_HEAD_ID,
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, **FAST_NODE_DEATH}
    env.pop("RAY_ADDRESS", None)
    head = subprocess.run(
        ["ray", "start", "--head", f"--node-ip-address={HOST}", f"--port={GCS_PORT}", f"--num-cpus={args.head_cpus}",
         f"--autoscaling-config={config}", "--include-dashboard=false", "--disable-usage-stats",
         f"--temp-dir={state / 'ray'}"], env=env, capture_output=True, text=True, timeout=180)
    if head.returncode != 0:
        print(f"error: the autoscaling head did not start:\n{head.stdout}\n{head.stderr}", file=sys.stderr)
        return 2
    timeline: dict = {"samples": [], "removed": [], "autoscaler_released": None}
    held = bool(args.hold_autoscaler_until)
    if held:
        pause_autoscaler(True)
    client = {key: value for key, value in env.items()
              if key not in ("RAY_CLOUD_INSTANCE_ID", "RAY_OVERRIDE_NODE_ID_FOR_TESTING")}
    command = subprocess.Popen(args.command, env={**client, "RAY_ADDRESS": f"{HOST}:{GCS_PORT}"})
    started = time.monotonic()
    try:
        while command.poll() is None:
            nodes = len(raylets())
            timeline["samples"].append([round(time.monotonic() - started, 2), nodes])
            if held and Path(args.hold_autoscaler_until).exists():
                pause_autoscaler(False)
                held = False
                timeline["autoscaler_released"] = round(time.monotonic() - started, 2)
            if args.remove_node_when and not timeline["removed"] and Path(args.remove_node_when).exists():
                removed = remove_node_running(args.remove_node_running)
                if removed and args.no_replacement:
                    stop_autoscaler()
                if removed:
                    timeline["removed"].append([round(time.monotonic() - started, 2), removed])
                    print(f"[autoscaling] removed a node (raylet pid {removed}) running {args.remove_node_running}",
                          flush=True)
            reap_orphans(keep={command.pid})
            time.sleep(SAMPLE_SECONDS)
        timeline["command_seconds"] = round(time.monotonic() - started, 2)
        if held:
            pause_autoscaler(False)
        # After the command: the idle nodes' removal, for up to --linger seconds.
        deadline = time.monotonic() + args.linger
        while time.monotonic() < deadline:
            nodes = len(raylets())
            timeline["samples"].append([round(time.monotonic() - started, 2), nodes])
            if nodes <= 1:
                break
            time.sleep(SAMPLE_SECONDS)
    finally:
        if command.poll() is None:
            command.send_signal(signal.SIGINT)
            command.wait(timeout=30)
        samples = timeline["samples"]
        timeline["peak_nodes"] = max((nodes for _, nodes in samples), default=0)
        timeline["node_seconds"] = round(sum(nodes * (t1 - t0) for (t0, nodes), (t1, _) in zip(samples, samples[1:])),
                                         1)
        timeline["returncode"] = command.returncode
        if args.timeline:
            Path(args.timeline).write_text(json.dumps(timeline))
        end_every_other_process()
        if not os.environ.get("DLR_KEEP_FAKE_CLUSTER"):
            shutil.rmtree(state, ignore_errors=True)
    print(f"[autoscaling] peak {timeline['peak_nodes']} nodes, {timeline['node_seconds']} node-seconds; command "
          f"exited {command.returncode}", flush=True)
    return command.returncode


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cluster.autoscaling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--head-cpus", type=int, default=1)
    parser.add_argument("--node-cpus", type=int, default=1, help="CPUs of each node the autoscaler launches")
    parser.add_argument("--max-nodes", type=int, default=3, help="at most this many worker nodes")
    parser.add_argument("--idle-timeout", type=float, default=6.0, help="seconds before an idle node is removed")
    parser.add_argument("--linger", type=float, default=60.0,
                        help="after COMMAND, wait up to this long for the idle nodes' removal (in the timeline)")
    parser.add_argument("--timeline", help="write the nodes over time here (JSON)")
    parser.add_argument("--remove-node-when", metavar="PATH",
                        help="once PATH exists, kill a worker node running --remove-node-running")
    parser.add_argument("--remove-node-running", default="RayTrainWorker", metavar="TEXT")
    parser.add_argument("--hold-autoscaler-until", metavar="PATH",
                        help="launch no node until PATH exists (the autoscaler held): the run starts on the head")
    parser.add_argument("--no-replacement", action="store_true",
                        help="after removing the node, stop the autoscaler: nothing replaces it")
    parser.add_argument(INSIDE_FLAG, action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ...")
    args = parser.parse_args(argv)
    args.command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not args.command:
        parser.error("give the command to run: -- COMMAND ...")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.inside_namespace:
        return run_inside(args)
    if os.geteuid() != 0 or not shutil.which("unshare"):
        print("error: cluster.autoscaling runs its cluster in namespaces of its own: it needs root and unshare",
              file=sys.stderr)
        return 2
    inner = [sys.executable, "-m", "cluster.autoscaling", INSIDE_FLAG, *argv]
    return subprocess.call(["unshare", "-n", "-p", "-f", "--mount-proc", "--", "sh", "-c",
                            'ip link set lo up && exec "$@"', "autoscaling", *inner])


if __name__ == "__main__":
    sys.exit(main())
