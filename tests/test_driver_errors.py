"""A user's mistake ends in one `error:` line and exit code 2, before Ray starts where it can be checked there."""

import numpy as np
import pytest

from deeplab_core.checkpoint import save_checkpoint
from deeplab_core.crf import PAPER_PARAMS
from deeplab_core.io import encode_palette_png, write_bytes
from deeplab_core.models import build_model
from deeplab_core.synthetic import generate
from pipelines import evaluate, segment, train
from tests.helpers import NUM_CLASSES, SMALL_MODEL


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_checkpoint(str(path), build_model("deeplabv2", "resnet50", 16, NUM_CLASSES))
    return str(path)


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_a_checkpoint_whose_config_does_not_fit_its_weights_is_refused_before_ray(tmp_path, capsys):
    mismatched = tmp_path / "mismatched.pt"
    model = build_model("deeplabv2", "resnet50", 16, NUM_CLASSES)
    config = {"arch": "deeplabv3", "backbone": "resnet50", "output_stride": 16, "num_classes": 5,
              "class_names": [str(i) for i in range(5)], "mean": [0.5] * 3, "std": [0.2] * 3}
    save_checkpoint(str(mismatched), model, config)
    (tmp_path / "in").mkdir()
    for main in (segment.main, lambda argv: evaluate.main(["--data", str(tmp_path / "in")] + argv[2:])):
        assert main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                     "--checkpoint", str(mismatched)]) == 2
        assert "weights do not fit the model in its config" in _error_line(capsys)
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_an_unwritable_output_is_refused_before_any_work(tmp_path, tiny_checkpoint, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "a-file").write_text("not a folder")
    assert segment.main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "a-file" / "out"),
                         "--checkpoint", tiny_checkpoint]) == 2
    assert "is not writable" in _error_line(capsys)
    assert segment.main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "a-file"),
                         "--checkpoint", tiny_checkpoint]) == 2
    assert "a-file is a file; give a folder" in _error_line(capsys)


@pytest.mark.parametrize("argv", [["--batch-size", "0"], ["--iterations", "-5"], ["--crop-size", "x"],
                                  ["--workers", "0"], ["--lr", "0"]])
def test_impossible_training_numbers_are_refused_by_the_parser(argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.parse_args(["--data", "d", "--output", str(tmp_path / "run"), *argv])
    assert exit_info.value.code == 2
    assert argv[0] in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_impossible_numbers_in_a_yaml_config_are_refused_too(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("batch_size: 0\n")
    with pytest.raises(SystemExit):
        train.parse_args(["--data", "d", "--output", "o", "--config", str(config)])
    assert "--batch-size must be at least 1, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--batch-size", "0"], ["--max-pixels", "-1"], ["--crf-prune-ratio", "-0.1"],
                                  ["--crf-prune-ratio", "0"], ["--crf-prune-ratio", "5"],
                                  ["--precision", "int8"]])
def test_impossible_segmentation_options_are_refused_by_the_parser(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        segment.parse_args(["--input", "i", "--output", "o", "--checkpoint", "c", *argv])
    assert exit_info.value.code == 2
    assert argv[0] in capsys.readouterr().err  # the message names the flag


def test_help_marks_required_options_and_says_the_crf_is_on_by_default(capsys):
    with pytest.raises(SystemExit):
        segment.parse_args(["--help"])
    text = capsys.readouterr().out
    assert "(default: None)" not in text and "on by default" in " ".join(text.split())
    with pytest.raises(SystemExit):
        train.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--data DATA (required)" in text and "--output OUTPUT (required)" in text


@pytest.mark.integration
def test_s3_input_without_credentials_names_the_variables_to_set(s3, tiny_checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    assert segment.main(["--input", f"s3://{s3.bucket}/photos", "--output", str(tmp_path / "out"),
                         "--checkpoint", tiny_checkpoint]) == 2
    line = _error_line(capsys)
    assert "AWS_ACCESS_KEY_ID" in line and "AWS_SECRET_ACCESS_KEY" in line


@pytest.mark.integration
def test_a_bad_class_id_found_by_a_worker_is_one_line_naming_the_file(ray_cluster, tmp_path, capsys):
    data = str(tmp_path / "data")
    splits = generate(data, num_images=8, size=64, num_classes=NUM_CLASSES, seed=8)
    bad_id = splits["train"][-1]  # not among the first masks the driver checks
    mask = np.zeros((64, 64), np.uint8)
    mask[10:20, 10:20] = 7
    write_bytes(f"{data}/SegmentationClass/{bad_id}.png", encode_palette_png(mask))
    output = str(tmp_path / "run")
    assert train.main(["--data", data, "--output", output, *SMALL_MODEL, "--workers", "1",
                       "--iterations", "4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    # Ray's own log lines and the worker's echoed traceback (prefixed with its name) come first; the driver ends
    # with one line of its own naming the file, and no traceback of its own.
    assert err[-1].startswith("error: ") and f"{bad_id}.png" in err[-1] and "class ids [7]" in err[-1], err[-1]
    assert sum(line.startswith("error: ") for line in err) == 1
    assert not any(line.startswith("Traceback") for line in err)
    assert not (tmp_path / "run" / "train").exists()  # nothing that blocks the next run


def test_a_cluster_address_that_does_not_answer_is_one_error_line_in_seconds(tiny_checkpoint, tmp_path, monkeypatch,
                                                                            capsys):
    import socket
    import time

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    data = str(tmp_path / "data")
    generate(data, num_images=4, size=32, num_classes=NUM_CLASSES)
    model = tiny_checkpoint
    started = time.monotonic()
    for driver, argv in ((segment, ["--input", f"{data}/JPEGImages", "--output", str(tmp_path / "seg")]),
                         (evaluate, ["--data", data, "--output", str(tmp_path / "ev")])):
        assert driver.main([*argv, "--checkpoint", model]) == 2
        line = _error_line(capsys)
        assert line.startswith("error: RAY_ADDRESS=127.0.0.1:") and "unset" in line, line
    assert time.monotonic() - started < 15


def test_a_random_file_as_checkpoint_is_one_line_without_unsafe_advice(tmp_path, capsys):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(bytes(range(256)) * 64)
    assert segment.main(["--input", str(tmp_path), "--output", str(tmp_path / "seg"), "--checkpoint", str(junk)]) == 2
    line = _error_line(capsys)
    assert str(junk) in line and "weights_only" not in line, line


def test_segment_and_evaluate_both_take_crf_and_no_crf():
    base = ["--output", "o", "--checkpoint", "c"]
    assert segment.parse_args(["--input", "i", *base]).inference.crf == PAPER_PARAMS
    assert segment.parse_args(["--input", "i", *base, "--no-crf"]).inference.crf is None
    assert evaluate.parse_args(["--data", "d", *base]).inference.crf is None
    assert evaluate.parse_args(["--data", "d", *base, "--crf"]).inference.crf == PAPER_PARAMS
    assert evaluate.parse_args(["--data", "d", *base, "--crf", "--no-crf"]).inference.crf is None
    exact = segment.parse_args(["--input", "i", *base, "--crf-exact", "--crf-iterations", "5", "--scales", "0.5,1"])
    assert exact.inference.crf.method == "exact" and exact.inference.crf.iterations == 5
    assert exact.inference.scales == (0.5, 1.0)


def test_the_crf_method_is_a_flag_and_every_crf_field_with_help_is_one():
    from dataclasses import fields

    from deeplab_core.crf import CRFParams

    base = ["--input", "i", "--output", "o", "--checkpoint", "c"]
    native = segment.parse_args([*base, "--crf-method", "native", "--crf-iterations", "3"]).inference.crf
    assert (native.method, native.iterations, native.prune_ratio) == ("native", 3, PAPER_PARAMS.prune_ratio)
    assert segment.parse_args([*base, "--crf-prune-ratio", "0.2"]).inference.crf.prune_ratio == 0.2
    flagged = [spec.name for spec in fields(CRFParams) if "help" in spec.metadata]
    assert flagged == ["iterations", "method", "prune_ratio"]


@pytest.mark.parametrize("argv, named", [
    (["--no-crf", "--crf-exact"], "--crf-exact"),
    (["--no-crf", "--crf-iterations", "3"], "--crf-iterations"),
    (["--crf-exact", "--crf-prune-ratio", "0.2"], "--crf-prune-ratio"),
    (["--crf-method", "native", "--crf-prune-ratio", "0.2"], "--crf-prune-ratio"),
    (["--crf-exact", "--crf-method", "native"], "--crf-exact"),
])
def test_contradicting_crf_flags_are_one_line(argv, named, capsys):
    with pytest.raises(SystemExit) as exit_info:
        segment.parse_args(["--input", "i", "--output", "o", "--checkpoint", "c", *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("python -m pipelines.segment: error: ") and named in err, err


def test_evaluate_refuses_crf_flags_without_crf(capsys):
    with pytest.raises(SystemExit):
        evaluate.parse_args(["--data", "d", "--output", "o", "--checkpoint", "c", "--crf-method", "exact"])
    assert "the CRF is off" in capsys.readouterr().err


def test_every_inference_setting_and_resource_is_a_flag_of_segment_evaluate_and_tune_crf():
    """The flags derive from the types: a field added to InferenceSettings or ModelResources becomes a flag of every
    driver that runs the model, with its default."""
    from dataclasses import fields

    from deeplab_core.inference_settings import InferenceSettings
    from pipelines import tune_crf
    from pipelines.common.ranges import CountRange
    from pipelines.segmentation.model_pool import ModelResources

    base = ["--output", "o", "--checkpoint", "c"]
    drivers = {"segment": (segment.parse_args, ["--input", "i"]), "evaluate": (evaluate.parse_args, ["--data", "d"]),
               "tune_crf": (tune_crf.parse_args, ["--data", "d"])}
    given = {"scales": ("--scales", "0.5,1", (0.5, 1.0)), "flip": ("--flip", None, True),
             "precision": ("--precision", "bf16", "bf16"), "batch_size": ("--batch-size", "3", 3),
             "max_side": ("--max-side", "900", 900), "max_pixels": ("--max-pixels", "1000", 1000),
             "model_actors": ("--model-actors", "2-5", CountRange(2, 5)), "gpus_per_actor": ("--gpus-per-actor", "0.5", 0.5),
             "cpus_per_actor": ("--cpus-per-actor", "3", 3.0), "crf_cpus": ("--crf-cpus", "2", 2.0)}
    names = {f.name for f in fields(InferenceSettings)} - {"crf"} | {f.name for f in fields(ModelResources)}
    assert names == set(given)
    for name, (parse, first) in drivers.items():
        defaults = parse(first + base)
        assert (defaults.inference.scales, defaults.inference.batch_size) == (InferenceSettings().scales,
                                                                              InferenceSettings().batch_size), name
        assert defaults.resources == ModelResources(), name
        argv = first + base + [part for flag, value, _ in given.values() for part in (flag, value) if part]
        config = parse(argv)
        for field_name, (_, _, expected) in given.items():
            holder = config.resources if field_name in {f.name for f in fields(ModelResources)} else config.inference
            assert getattr(holder, field_name) == expected, (name, field_name)
