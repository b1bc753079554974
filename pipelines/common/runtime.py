"""Connecting a driver to Ray, and turning URIs into the filesystems Ray wants."""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import uuid
import warnings
from urllib.parse import urlparse

import pyarrow.fs

from deeplab_core.io import filesystem, join_uri, protocol_of, s3_options, s3_variables, write_bytes

# Ray resolves a node address of 127.0.0.1 to the machine's routable one, and then serves on every interface. Ray's
# switch for single-machine clusters (named for the platforms where it is the default) keeps every node address, and
# with it every server, on 127.0.0.1: what a Ray of this machine's own wants (a driver's local Ray, cluster.local's
# head). Drivers joining such a cluster need it too, to find their node's raylet at the same address.
LOOPBACK_ONLY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


class _DropRecords(logging.Filter):
    """Drops log records whose message starts with one of ``prefixes``; with ``keep_only``, every record but those."""

    def __init__(self, *prefixes: str, keep_only: bool = False) -> None:
        super().__init__()
        self.prefixes, self.keep_only = prefixes, keep_only

    def filter(self, record: logging.LogRecord) -> bool:
        matches = record.getMessage().lstrip().startswith(self.prefixes)
        return matches if self.keep_only else not matches


# What Ray logs on every run that a person reading the log does not need, by logger: Ray Data's non-interactive
# progress (a 20-line block every 10 s, resource figures that count tasks rather than CPUs: one "Total Progress"
# line is kept), its execution plan, Ray Train's bookkeeping of each report and checkpoint (our own [train] lines
# say the same), and the notice that a local Ray turned token authentication on (the README says so once).
_QUIET_LOGGERS: dict[str, _DropRecords] = {
    "ray.data._internal.progress.logging_progress": _DropRecords("Total Progress", keep_only=True),
    "ray.data._internal.progress": _DropRecords("Progress will be logged"),
    "ray.data._internal.execution.streaming_executor": _DropRecords("Execution plan of", "Starting execution of"),
    "ray._private.authentication.authentication_token_setup": _DropRecords("Token authentication is enabled"),
    "ray.train.v2._internal.execution.worker_group.worker_group": _DropRecords("Attempting to start",
                                                                              "Started training worker group"),
    "ray.train.v2._internal.execution.scaling_policy.scaling_policy": _DropRecords("Requesting resources"),
    "ray.train.v2._internal.execution.storage": _DropRecords("Checkpoint successfully created"),
    # This module's logger is named after its file's path, not its module.
    "file:ray.train.v2._internal.execution.context": _DropRecords("Reporting training result"),
    "ray.train.v2.torch.train_loop_utils": _DropRecords("Moving model to device"),
    "ray.train.torch.config": _DropRecords("Setting up process group"),
}


def quiet_ray_logging() -> None:
    """Filter Ray's routine log lines (above) in this process, and Ray Train's own deprecation notice about a
    setting it uses itself; errors and warnings of substance stay. Also runs in every Ray worker process (the
    runtime env's setup hook, see init_ray), where Ray Data's and Ray Train's coordinators log. Lines that Ray's C++
    core writes itself (its 8.8.8.8 probe, the note on actors' constructor arguments) cannot be filtered here: the
    README explains them."""
    for name, record_filter in _QUIET_LOGGERS.items():
        if name.startswith("file:"):  # the module's path, found without importing it (and its package's imports)
            import ray

            parts = name.removeprefix("file:").split(".")
            name = os.path.join(os.path.dirname(ray.__file__), *parts[1:]) + ".py"
        logger = logging.getLogger(name)
        if record_filter not in logger.filters:
            logger.addFilter(record_filter)
    warnings.filterwarnings("ignore", message="`ExecutionOptions.exclude_resources` is deprecated")
    # torch's c10d warns that a socket's hostname cannot be looked up, where hostnames do not resolve (containers).
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")


def configure_ray_data() -> None:
    """Settings of this process's Ray Data context that every pipeline here relies on."""
    import ray.data

    quiet_ray_logging()
    context = ray.data.DataContext.get_current()
    # Ray Data's progress inside Ray's own actors (Ray Train's data coordinator) is otherwise drawn with tqdm escape
    # codes into the driver's log: plain progress lines instead. An interactive driver keeps its bars.
    context.use_ray_tqdm = False
    # Ray Data 2.60 reserves half of the cluster's CPUs in equal shares for the operators and holds each operator
    # near its share: a 3-stage pipeline whose middle stage had 8 CPUs to use ran it at 55% of 8 x its 1-CPU rate
    # (92% without the reservation), and the CRF stage scaled 0.51 -> 0.77 from 1 to 2 CPUs on 2 cores. Without it
    # every free CPU goes to whichever stage has work queued; the object-store back-pressure that keeps a fast
    # stage from flooding a slow one stays on.
    context.op_resource_reservation_enabled = False


def init_ray() -> None:
    """Join the cluster in RAY_ADDRESS (or the one a submitted job runs on), else start a local Ray.

    The S3 variables travel in the job's runtime env: Ray Train's controller and Ray Data's workers are
    separate processes that do not inherit this driver's environment.
    """
    keep_local_ray_on_loopback()
    import ray

    configure_ray_data()  # and quiet_ray_logging
    if ray.is_initialized():
        return
    # Inside `ray job submit`, the job's runtime env already applies to every process; Ray refuses a driver
    # runtime env that sets the same variables again, so add only what the job lacks.
    job = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}"))
    given = (job.get("runtime_env") or {}).get("env_vars") or {}
    missing = {name: value for name, value in s3_variables().items() if name not in given}
    runtime_env: dict = {"env_vars": missing} if missing else {}
    if "worker_process_setup_hook" not in (job.get("runtime_env") or {}):
        runtime_env["worker_process_setup_hook"] = f"{__name__}.quiet_ray_logging"
    ray.init(runtime_env=runtime_env or None, log_to_driver=True)


def keep_local_ray_on_loopback() -> None:
    """A driver with no cluster to join (no ``RAY_ADDRESS``) starts a Ray of its own, on this machine only: keep it
    on 127.0.0.1 (``LOOPBACK_ONLY``). Never for a cluster: its nodes need their routable addresses, and a submitted
    job's driver has RAY_ADDRESS set. Ray reads the switch once, when first imported: no driver imports Ray before
    ``init_ray`` (tests/test_layering.py), and a process that did is told here too."""
    if os.environ.get("RAY_ADDRESS"):
        return
    for name, value in LOOPBACK_ONLY.items():
        os.environ.setdefault(name, value)
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None and os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == "0":
        constants.ENABLE_RAY_CLUSTER = False


def check_cluster_address(timeout: float = 10.0) -> None:
    """Fail in seconds, with one line, when ``RAY_ADDRESS`` names a cluster that does not answer (an address left in
    the shell after ``cluster.local down``): Ray itself retries for minutes."""
    address = os.environ.get("RAY_ADDRESS", "").strip()
    if not address or address == "auto" or "://" in address:  # ray:// and http:// clients check for themselves
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except (OSError, ValueError) as err:
        raise ConnectionError(f"RAY_ADDRESS={address}: no Ray cluster answers there ({err}); start it "
                              "(python -m cluster.local up), point RAY_ADDRESS at a running cluster, or unset it "
                              "(`unset RAY_ADDRESS`) to run on a local Ray") from None


def pyarrow_storage(uri: str) -> tuple[str, pyarrow.fs.FileSystem | None]:
    """``(path, filesystem)`` for Ray Train's ``RunConfig(storage_path=..., storage_filesystem=...)``.

    Local paths become absolute; ``s3://`` URIs get a pyarrow S3 filesystem configured from the standard AWS
    variables (``AWS_ENDPOINT_URL`` included) and a path without the scheme; other fsspec URIs are wrapped.
    """
    protocol = protocol_of(uri)
    if protocol == "file":
        return os.path.abspath(uri.removeprefix("file://")), None
    if protocol in ("s3", "s3a"):
        # The same settings as every other S3 access (deeplab_core.io.s3_options), in pyarrow's names.
        settings = s3_options()
        client = settings.get("client_kwargs", {})
        options: dict = {}
        if "endpoint_url" in client:
            endpoint = urlparse(client["endpoint_url"])
            options["endpoint_override"] = endpoint.netloc or endpoint.path
            options["scheme"] = endpoint.scheme or "https"
        if "region_name" in client:
            options["region"] = client["region_name"]
        if "key" in settings:
            options.update(access_key=settings["key"], secret_key=settings["secret"],
                           session_token=settings.get("token"))
        return uri.split("://", 1)[1].rstrip("/"), pyarrow.fs.S3FileSystem(**options)
    fs, path = filesystem(uri)
    return path, pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs))


def is_user_error(error: Exception) -> bool:
    """A mistake in what the user gave (a path, a checkpoint, data, credentials), as opposed to a bug."""
    return isinstance(error, (OSError, ValueError)) or "Credentials" in type(error).__name__


def refuse(error: Exception) -> int:
    """For a driver's checks before any work: a user's mistake (``is_user_error``) becomes one ``error:`` line on
    stderr and the exit status 2; anything else is a bug and is raised again with its traceback."""
    if not is_user_error(error):
        raise error
    print(f"error: {explain(error)}", file=sys.stderr)
    return 2


def explain(error: Exception) -> str:
    """One line for a driver's ``error:``: S3 access problems name the variables to check."""
    if "Credentials" in type(error).__name__:
        return (f"no S3 credentials found ({error}); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and "
                "AWS_ENDPOINT_URL for a non-AWS endpoint)")
    if isinstance(error, PermissionError):
        return (f"access denied ({error}); check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL) "
                "for the bucket")
    return str(error)


def check_writable(output: str) -> None:
    """Write and delete a probe file, so that an unwritable --output fails before any work is done."""
    probe = join_uri(output, f".write-test-{uuid.uuid4().hex[:8]}")
    fs, path = filesystem(output)
    if fs.isfile(path):
        raise OSError(f"--output {output} is a file; give a folder (or prefix) for the outputs")
    try:
        write_bytes(probe, b"")
    except OSError as err:
        raise OSError(f"--output {output} is not writable ({type(err).__name__}: {err})") from None
    fs.rm(filesystem(probe)[1])
