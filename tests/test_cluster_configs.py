from pathlib import Path

import pytest
import yaml

CLUSTER = Path(__file__).resolve().parents[1] / "cluster"


def test_launcher_yaml_passes_rays_own_validator():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    validate_config(prepare_config(config))
    types = config["available_node_types"]
    assert types["head"]["resources"] == {"CPU": 0}
    assert types["gpu_worker"]["node_config"]["InstanceType"].startswith(("g", "p"))
    assert types["crf_worker"]["max_workers"] > types["gpu_worker"]["max_workers"]
    assert all("RAY_AUTH_MODE=token" in " ".join(config[key]) for key in ("head_start_ray_commands",
                                                                           "worker_start_ray_commands"))
    assert any("pip install" in command and "constraints.txt" in command for command in config["setup_commands"])


def test_a_broken_launcher_yaml_is_rejected_by_the_validator():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    config["head_node_type"] = "no_such_type"
    with pytest.raises(ValueError):
        validate_config(prepare_config(config))


def _check_cluster_spec(spec: dict) -> None:
    assert spec["authOptions"]["mode"] == "token"
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    for group in [head, *spec["workerGroupSpecs"]]:
        containers = group["template"]["spec"]["containers"]
        assert containers and all(c["name"] and c["image"] for c in containers)
    for group in spec["workerGroupSpecs"]:
        assert group["groupName"] and isinstance(group["rayStartParams"], dict)
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    gpu_groups = [g for g in spec["workerGroupSpecs"]
                  if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"]]
    assert gpu_groups, "no worker group requests GPUs"


def test_kuberay_raycluster_has_the_required_fields():
    doc = yaml.safe_load((CLUSTER / "kuberay" / "raycluster.yaml").read_text())
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayCluster") and doc["metadata"]["name"]
    _check_cluster_spec(doc["spec"])


@pytest.mark.parametrize("name, pipeline", [("rayjob-train.yaml", "train"), ("rayjob-segment.yaml", "segment")])
def test_kuberay_rayjobs_have_the_required_fields_and_real_command_lines(name, pipeline):
    doc = yaml.safe_load((CLUSTER / "kuberay" / name).read_text())
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayJob") and doc["metadata"]["name"]
    entrypoint = doc["spec"]["entrypoint"].split()
    assert entrypoint[:3] == ["python", "-m", f"pipelines.{pipeline}"]
    module = __import__(f"pipelines.{pipeline}", fromlist=["parse_args"])
    module.parse_args(entrypoint[3:])  # the job's flags are ones the pipeline accepts
    _check_cluster_spec(doc["spec"]["rayClusterSpec"])


def test_runtime_env_example_parses():
    runtime_env = yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text())
    assert runtime_env["working_dir"] == "." and "AWS_DEFAULT_REGION" in runtime_env["env_vars"]


def test_env_unset_clears_every_variable_env_exports(tmp_path, capsys):
    from cluster import local

    assert local.main(["env", "--state", str(tmp_path)]) == 0
    exported = {line.split("=", 1)[0].removeprefix("export ") for line in capsys.readouterr().out.splitlines()}
    assert local.main(["env", "--unset"]) == 0
    unset = capsys.readouterr().out.split()
    assert unset[0] == "unset" and set(unset[1:]) == exported and "RAY_ADDRESS" in exported


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayjob-train.yaml", "rayjob-segment.yaml"])
def test_kuberay_clusters_scale_from_zero_with_the_autoscaler_on(name):
    doc = yaml.safe_load((CLUSTER / "kuberay" / name).read_text())
    spec = doc["spec"].get("rayClusterSpec", doc["spec"])
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["autoscalerOptions"]["idleTimeoutSeconds"] > 0
    assert all(group["minReplicas"] == 0 and group["maxReplicas"] > 0 for group in spec["workerGroupSpecs"])


def test_the_kuberay_jobs_grow_their_workers_and_actors():
    from pipelines import segment, train

    train_job = yaml.safe_load((CLUSTER / "kuberay" / "rayjob-train.yaml").read_text())
    config = train.parse_args(train_job["spec"]["entrypoint"].split()[3:])
    assert not config.workers.fixed and config.restarts >= 1
    segment_job = yaml.safe_load((CLUSTER / "kuberay" / "rayjob-segment.yaml").read_text())
    assert not segment.parse_args(segment_job["spec"]["entrypoint"].split()[3:]).resources.model_actors.fixed


def test_the_launcher_yaml_scales_every_worker_type_from_zero():
    doc = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    workers = [node for name, node in doc["available_node_types"].items() if name != doc["head_node_type"]]
    assert workers and all(node["min_workers"] == 0 and node["max_workers"] > 0 for node in workers)
    assert doc["idle_timeout_minutes"] > 0
