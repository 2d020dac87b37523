import time

import pytest

from projects.siglip_sam_dementia.config import (
    TrainingConfig,
    build_arg_parser,
    parse_config,
    selected_languages,
)
from shared.optim import resolve_lr_and_weight_decay

ISSUE_FLAGS = ["--data_dir", "--output_dir", "--model_name", "--optimizer_type", "--sam_rho", "--sam_adaptive",
               "--sam_base", "--loss_type", "--focal_gamma", "--focal_alpha", "--parser", "--languages",
               "--train_languages", "--test_languages", "--batch_size", "--num_epochs", "--learning_rate",
               "--weight_decay", "--warmup_ratio", "--mixed_precision", "--no_mixed_precision", "--modality",
               "--freeze_vision", "--freeze_text", "--seed", "--num_workers", "--resume", "--use_wandb",
               "--wandb_project"]


def test_cli_has_every_flag_of_the_issue_with_its_spelling_and_defaults():
    options = {o for action in build_arg_parser()._actions for o in action.option_strings}
    assert set(ISSUE_FLAGS) <= options
    config = parse_config([])
    assert config.model_name == "google/siglip2-base-patch16-naflex"
    assert config.wandb_project == "dementia-prediction-siglip-sam"
    assert (config.sam_rho, config.focal_gamma, config.mixed_precision) == (0.05, 2.0, True)
    assert parse_config(["--no_mixed_precision"]).mixed_precision is False


def test_issue_example_command_parses():
    config = parse_config("--data_dir ../training_dset --optimizer_type sam --sam_rho 0.05 --loss_type cross_entropy "
                          "--batch_size 32 --num_epochs 100 --parser all".split())
    assert (config.optimizer_type, config.parser, config.batch_size) == ("sam", "all", 32)
    assert selected_languages(config) == ["English", "Greek", "Spanish", "Mandarin"]


@pytest.mark.parametrize("argv, message", [
    (["--optimizer_type", "adam"], "invalid choice"),
    (["--parser", "../x"], "invalid language"),
    (["--select_by", "auc"], "invalid choice"),
    (["--class_weights", "auto", "--focal_alpha", "0.3"], "use one"),
    (["--early_stopping_patience", "0"], "--early_stopping_patience"),
    (["--languages", "Greek"], "--languages is only used with --parser all"),
    (["--parser", "cross_lingual", "--train_languages", "Greek", "--test_languages", "Greek"], "overlap: Greek"),
    (["--test_languages", "Greek"], "only used with --parser cross_lingual"),
    (["--focal_alpha", "1.5"], "must be between 0 and 1"),
    (["--val_fraction", "0.6", "--test_fraction", "0.5"], "must be below 1"),
])
def test_bad_flags_fail_at_parse_time_naming_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit):
        parse_config(argv)
    assert message in capsys.readouterr().err


def test_languages_are_any_names_of_the_data_with_the_four_as_defaults():
    assert selected_languages(parse_config(["--parser", "all"]), ["English", "Cantonese"]) == ["English", "Cantonese"]
    assert selected_languages(parse_config(["--parser", "all"])) == ["English", "Greek", "Spanish", "Mandarin"]
    cross = parse_config(["--parser", "cross_lingual", "--train_languages", "Cantonese", "--test_languages", "Taiwanese"])
    assert selected_languages(cross) == ["Cantonese", "Taiwanese"]
    assert parse_config(["--parser", "Cantonese", "--learning_rate", "1e-3"]).run_name().startswith("siglip-sam_Cantonese_")


def test_language_selection_per_parser():
    assert selected_languages(parse_config(["--parser", "Greek"])) == ["Greek"]
    assert selected_languages(parse_config(["--parser", "all", "--languages", "English", "Mandarin"])) == [
        "English", "Mandarin"]
    cross = parse_config(["--parser", "cross_lingual"])
    assert (cross.train_languages, cross.test_languages) == (["English", "Spanish", "Mandarin"], ["Greek"])
    cross = parse_config(["--parser", "cross_lingual", "--test_languages", "Spanish", "--train_languages", "English"])
    assert selected_languages(cross) == ["English", "Spanish"]


def test_lion_gets_its_authors_scaling_only_when_lr_and_wd_are_not_given():
    adamw = resolve_lr_and_weight_decay("adamw", "adamw", None, None, 2e-5, 0.01)
    lion = resolve_lr_and_weight_decay("lion", "adamw", None, None, 2e-5, 0.01)
    assert adamw == (2e-5, 0.01)
    assert lion[0] < adamw[0] / 2 and lion[1] > adamw[1] * 2
    assert resolve_lr_and_weight_decay("lion", "adamw", 3e-4, 0.5, 2e-5, 0.01) == (3e-4, 0.5)
    assert parse_config([]).learning_rate is None  # resolved by the trainer, not hard-coded to AdamW's


def test_max_grad_norm_zero_turns_clipping_off():
    assert parse_config([]).max_grad_norm == 1.0
    assert parse_config(["--max_grad_norm", "0"]).max_grad_norm is None


def test_run_name_and_wandb_tags_follow_the_documented_pattern():
    config = TrainingConfig(parser="cross_lingual", loss_type="focal", optimizer_type="sam", batch_size=16,
                            learning_rate=2e-5)
    now = time.mktime((2024, 5, 6, 7, 8, 9, 0, 0, -1))
    assert config.run_name(now) == ("siglip-sam_English-Spanish-Mandarin_to_Greek_siglip2-base-patch16-naflex"
                                    "_focal_sam_bs16_lr2e-05_20240506-070809")
    assert config.wandb_tags() == ["loss_focal", "optimizer_sam", "batch_size_16", "sam_optimizer"]
    assert "sam_optimizer" not in TrainingConfig(optimizer_type="lion").wandb_tags()
    assert TrainingConfig(parser="all", learning_rate=1e-3).run_name(now).startswith("siglip-sam_all_")


def test_bce_means_one_logit():
    assert TrainingConfig(loss_type="bce").num_logits == 1
    assert TrainingConfig(loss_type="focal").num_logits == 2
