"""pipelines.training.config: flags over YAML over defaults, the recipe filling what neither sets."""

import pytest

from deeplab_core.training import RECIPES
from pipelines import train


def test_the_recipe_fills_what_flags_and_yaml_leave_out(tmp_path):
    config = train.parse_args(["--data", "d", "--output", "o", "--arch", "deeplabv3"])
    recipe = RECIPES["deeplabv3"]
    assert (config.lr, config.weight_decay, config.crop_size) == (recipe.lr, recipe.weight_decay, recipe.crop_size)
    assert (config.momentum, config.lr_power, config.min_scale) == (recipe.momentum, recipe.lr_power, recipe.min_scale)
    assert config.batch_size == 10 and config.use_gpu is False


def test_flags_win_over_yaml_which_wins_over_defaults(tmp_path):
    options = tmp_path / "run.yaml"
    options.write_text("lr: 0.01\nbatch-size: 4\namp: true\nval_split: holdout\n")
    config = train.parse_args(["--data", "d", "--output", "o", "--config", str(options), "--lr", "0.02"])
    assert (config.lr, config.batch_size, config.amp, config.val_split) == (0.02, 4, True, "holdout")


@pytest.mark.parametrize("text, message", [("amp: 3\n", "--amp must be true or false"),
                                           ("arch: deeplabv9\n", "--arch must be one of"),
                                           ("lr: fast\n", "--lr expected a number")])
def test_yaml_values_are_checked_like_flags(tmp_path, capsys, text, message):
    options = tmp_path / "run.yaml"
    options.write_text(text)
    with pytest.raises(SystemExit):
        train.parse_args(["--data", "d", "--output", "o", "--config", str(options)])
    assert message in capsys.readouterr().err


def test_unknown_yaml_keys_are_named(tmp_path):
    options = tmp_path / "run.yaml"
    options.write_text("learning_rate: 0.1\n")
    with pytest.raises(SystemExit, match="unknown options \\['learning_rate'\\]"):
        train.parse_args(["--data", "d", "--output", "o", "--config", str(options)])
