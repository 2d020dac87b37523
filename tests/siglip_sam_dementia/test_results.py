"""results.py averages only seed replicates: every other setting in config.json makes its own row."""

import json
import re

from projects.siglip_sam_dementia import results
from projects.siglip_sam_dementia.config import TrainingConfig


def write_run(root, name, optimizer, test_auc, loss="cross_entropy", held_out="Greek", parser="cross_lingual",
              seed=0, learning_rate=2e-5, **settings):
    """A run folder as the trainer leaves it: config.json (RunTracker) and a training summary."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    train = [lang for lang in ("English", "Spanish", "Mandarin", "Greek") if lang != held_out][:3]
    config = TrainingConfig(optimizer_type=optimizer, loss_type=loss, parser=parser, seed=seed,
                            train_languages=train, test_languages=[held_out], learning_rate=learning_rate,
                            weight_decay=0.01, output_dir=str(root), **settings).to_dict()
    (run_dir / "config.json").write_text(json.dumps({**config, "run_dir": str(run_dir), "device": "cpu",
                                                     "amp": "off", "languages_used": [*train, held_out]}))
    (run_dir / "training_summary_20260101-000000.json").write_text(json.dumps({
        "optimizer_type": optimizer, "loss_type": loss, "modality": "multimodal", "parser": parser,
        "languages": [*train, held_out], "train_languages": train if parser == "cross_lingual" else None,
        "test_languages": [held_out] if parser == "cross_lingual" else None,
        "train_acc": 0.9, "test_acc": 0.7, "generalization_gap": 0.2, "test_auc": test_auc}))


def table_rows(markdown, section):
    """The body rows of one of the two tables (header and rule left out)."""
    optimizer_part, cross_part = markdown.split("## Cross-lingual transfer")
    part = optimizer_part if section == "optimizer" else cross_part
    return [line for line in part.splitlines() if line.startswith("| ") and "---" not in line][1:]


def header(markdown, section):
    optimizer_part, cross_part = markdown.split("## Cross-lingual transfer")
    return next(line for line in (optimizer_part if section == "optimizer" else cross_part).splitlines()
                if line.startswith("| "))


def test_cross_lingual_table_averages_seeds_and_keeps_experiments_apart(tmp_path):
    for seed, (sam_auc, adamw_auc) in enumerate([(0.80, 0.70), (0.90, 0.60)]):
        write_run(tmp_path, f"sam_ce_{seed}", "sam", sam_auc, seed=seed)
        write_run(tmp_path, f"adamw_ce_{seed}", "adamw", adamw_auc, seed=seed)
    write_run(tmp_path, "sam_focal", "sam", 0.10, loss="focal")  # another experiment: never averaged in
    write_run(tmp_path, "lion_ce", "lion", 0.99)  # not part of the SAM vs AdamW table
    write_run(tmp_path, "sam_es", "sam", 0.65, held_out="Spanish")
    write_run(tmp_path, "pooled", "adamw", 0.99, parser="all")
    assert table_rows(results.results_markdown([tmp_path]), "cross") == [
        "| Greek | English+Spanish+Mandarin | cross_entropy | multimodal | 0.850 ± 0.071 | 0.650 ± 0.071 | +0.200 |",
        "| Greek | English+Spanish+Mandarin | focal | multimodal | 0.100 | — | — |",
        "| Spanish | English+Mandarin+Greek | cross_entropy | multimodal | 0.650 | — | — |",
    ]


def test_two_seeds_are_one_row_with_std(tmp_path):
    write_run(tmp_path, "a", "adamw", 0.80, seed=1)
    write_run(tmp_path, "b", "adamw", 0.60, seed=2)
    markdown = results.results_markdown([tmp_path])
    assert "settings" not in header(markdown, "optimizer")
    assert table_rows(markdown, "optimizer") == [
        "| English+Spanish+Mandarin → Greek | multimodal | cross_entropy | adamw | 2 | 0.900 ± 0.000 | "
        "0.700 ± 0.000 | 0.200 ± 0.000 | 0.700 ± 0.141 |"]


def test_two_learning_rates_are_two_rows_with_the_setting_shown(tmp_path):
    for seed in (0, 1):
        write_run(tmp_path, f"slow_{seed}", "adamw", 0.60, seed=seed, learning_rate=1e-5)
    write_run(tmp_path, "fast", "adamw", 0.90, learning_rate=1e-3)
    markdown = results.results_markdown([tmp_path])
    assert header(markdown, "optimizer").startswith("| data (train → test) | modality | loss | optimizer | settings | runs |")
    assert table_rows(markdown, "optimizer") == [
        "| English+Spanish+Mandarin → Greek | multimodal | cross_entropy | adamw | learning_rate=0.001 | 1 | "
        "0.900 | 0.700 | 0.200 | 0.900 |",
        "| English+Spanish+Mandarin → Greek | multimodal | cross_entropy | adamw | learning_rate=1e-05 | 2 | "
        "0.900 ± 0.000 | 0.700 ± 0.000 | 0.200 ± 0.000 | 0.600 ± 0.000 |"]
    assert table_rows(markdown, "cross") == [
        "| Greek | English+Spanish+Mandarin | cross_entropy | multimodal | learning_rate=0.001 | — | 0.900 | — |",
        "| Greek | English+Spanish+Mandarin | cross_entropy | multimodal | learning_rate=1e-05 | — | 0.600 ± 0.000 | — |"]


def test_cross_lingual_pairs_sam_with_the_adamw_that_matches_all_but_the_optimizer(tmp_path):
    write_run(tmp_path, "adamw_concat", "adamw", 0.60)
    write_run(tmp_path, "adamw_gated", "adamw", 0.70, fusion="gated")
    # sam_rho / sam_base of an AdamW run change nothing, so they do not split AdamW's seeds
    write_run(tmp_path, "adamw_concat_1", "adamw", 0.80, seed=1, sam_rho=0.5)
    write_run(tmp_path, "sam_rho05", "sam", 0.90, sam_rho=0.05)
    write_run(tmp_path, "sam_rho2", "sam", 0.75, sam_rho=2.0, sam_adaptive=True)
    write_run(tmp_path, "sam_gated", "sam", 0.72, fusion="gated")
    assert table_rows(results.results_markdown([tmp_path]), "cross") == [
        "| Greek | English+Spanish+Mandarin | cross_entropy | multimodal | fusion=concat, sam_adaptive=False, "
        "sam_rho=0.05 | 0.900 | 0.700 ± 0.141 | +0.200 |",
        "| Greek | English+Spanish+Mandarin | cross_entropy | multimodal | fusion=concat, sam_adaptive=True, "
        "sam_rho=2 | 0.750 | 0.700 ± 0.141 | +0.050 |",
        "| Greek | English+Spanish+Mandarin | cross_entropy | multimodal | fusion=gated, sam_adaptive=False, "
        "sam_rho=0.05 | 0.720 | 0.700 | +0.020 |"]


def test_run_without_config_or_with_broken_json_stops_with_one_line(tmp_path, capsys):
    write_run(tmp_path, "ok", "adamw", 0.6)
    (tmp_path / "ok" / "config.json").unlink()
    assert results.cli([str(tmp_path)]) == 2
    assert re.match(r"^error: .*ok/config.json: missing, so seeds cannot be told apart", capsys.readouterr().err)
    (tmp_path / "ok" / "config.json").write_text("{not json")
    assert results.cli([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert re.match(r"^error: .*ok/config.json: not valid JSON", err) and err.count("\n") == 1


def test_one_data_folder_written_two_ways_is_one_setting(tmp_path, monkeypatch):
    (tmp_path / "dset").mkdir()
    monkeypatch.chdir(tmp_path)
    write_run(tmp_path / "runs", "relative", "adamw", 0.60, seed=0, data_dir="dset")
    write_run(tmp_path / "runs", "absolute", "adamw", 0.80, seed=1, data_dir=str(tmp_path / "dset") + "/")
    write_run(tmp_path / "runs", "other", "adamw", 0.90, seed=2, data_dir=str(tmp_path / "elsewhere"))
    rows = table_rows(results.results_markdown([tmp_path / "runs"]), "optimizer")
    assert len(rows) == 2 and sum("| 2 |" in row for row in rows) == 1


def test_test_fraction_does_not_split_cross_lingual_runs_but_does_pooled_ones(tmp_path):
    write_run(tmp_path, "a", "adamw", 0.60, seed=0, test_fraction=0.15)
    write_run(tmp_path, "b", "adamw", 0.80, seed=1, test_fraction=0.3)
    write_run(tmp_path, "c", "adamw", 0.60, seed=0, test_fraction=0.15, parser="all")
    write_run(tmp_path, "d", "adamw", 0.80, seed=1, test_fraction=0.3, parser="all")
    rows = table_rows(results.results_markdown([tmp_path]), "optimizer")
    assert sorted(row.split(" | ")[4:6] for row in rows) == [["test_fraction=0.15", "1"], ["test_fraction=0.3", "1"],
                                                              ["—", "2"]]


def test_tables_state_how_checkpoints_were_chosen(tmp_path):
    write_run(tmp_path, "a", "adamw", 0.60)
    summary_path = next((tmp_path / "a").glob("training_summary_*.json"))
    summary_path.write_text(json.dumps({**json.loads(summary_path.read_text()),
                                        "selection_rule": "val_macro_f1 (ties: lower val_loss)"}))
    markdown = results.results_markdown([tmp_path])
    assert markdown.count("Checkpoints chosen on validation by: val_macro_f1 (ties: lower val_loss).") == 2
