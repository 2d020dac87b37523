"""Every importer on a small generated copy of its corpus layout, with real CHAT syntax (@ID headers,
*PAR:/*INV: tiers, retracings, pause codes, timing bullets); each result is read by the trainer's loader."""

import numpy as np
import pandas as pd
import pytest

from projects.siglip_sam_dementia.audio_features import LogMelCache, LogMelParams
from projects.siglip_sam_dementia.chat import participant_speech, speaker_ids
from projects.siglip_sam_dementia.config import parse_config
from projects.siglip_sam_dementia.data_processor import assign_splits, load_samples
from projects.siglip_sam_dementia.importers import cli, import_adress, import_pitt, main

from .conftest import write_wav

CHAT = """@UTF8
@Begin
@Participants:\tPAR Participant, INV Investigator
*INV:\ttell me everything you see going on in that picture . \x150_2000\x15
*PAR:\twell &uh the boy is [/] is <taking the> [//] takin(g) cookies . \x152000_5000\x15
%mor:\tco|well det|the n|boy
*PAR:\t&=laughs and the &-um mother xxx (.) she is washin(g) dishes +...
\tand the water@o is overflowing [* s:r] . \x155000_9000\x15
*INV:\tmhm .
*PAR:\t0is the stool ‡ tipping ?
@End
"""


def pitt_chat(group: str, language: str = "eng") -> str:
    """A Pitt Cookie-Theft transcript as DementiaBank writes it (header, @ID lines, bullets, pauses)."""
    return (f"@UTF8\n@PID:\t11312/t-00002420-1\n@Begin\n@Languages:\t{language}\n"
            "@Participants:\tPAR Participant, INV Investigator\n"
            f"@ID:\t{language}|Pitt|PAR|67;|female|{group}||Participant|12||\n"
            f"@ID:\t{language}|Pitt|INV|||||Investigator|||\n@Media:\t001-0, audio\n"
            "*INV:\tjust tell me what's happening in the picture . \x150_2500\x15\n"
            "*PAR:\tthe boy is (..) &uh getting cookies [/] cookies (...) . \x152500_7100\x15\n"
            "*PAR:\tand (.) the &-um <mother is> [//] lady is drying dishes (2.5) . \x157100_9900\x15\n"
            "*INV:\tanything else ?\n*PAR:\tno .\n@End\n")


def test_participant_lines_only_with_chat_codes_stripped():
    assert participant_speech(CHAT) == ("well uh the boy is is taking the taking cookies and the um mother she is "
                                        "washing dishes and the water is overflowing the stool tipping")
    assert "picture" not in participant_speech(CHAT) and "mhm" not in participant_speech(CHAT)
    assert "picture" in participant_speech(CHAT, include_investigator=True)


def test_pause_codes_become_tokens_when_asked():
    text = pitt_chat("Control")
    assert participant_speech(text) == ("the boy is uh getting cookies cookies and the um mother is lady is drying "
                                        "dishes no")
    assert participant_speech(text, pause_tokens=True) == (
        "the boy is <pause> uh getting cookies cookies <long_pause> and <short_pause> the um mother is lady is "
        "drying dishes <long_pause> no")
    assert speaker_ids(text)["PAR"]["group"] == "Control" and speaker_ids(text)["PAR"]["language"] == "eng"


def read_back(data_dir, tmp_path, *flags):
    """The imported folder through the trainer's own loader (audio decoded, splits assigned)."""
    config = parse_config(["--data_dir", str(data_dir), "--n_mels", "16", "--val_fraction", "0.25",
                           "--test_fraction", "0.25", *flags])
    return load_samples(config, LogMelCache(tmp_path / "cache", LogMelParams(n_mels=16)) if config.modality != "text"
                        else None), config


def test_pitt_layout_labels_from_id_speakers_across_visits_and_groups_skipped(tmp_path):
    root, rng = tmp_path / "Pitt", np.random.default_rng(0)
    for folder, group, ids in (("Control", "Control", ["002-0", "002-1", "004-0", "006-0"]),
                               ("Dementia", "ProbableAD", ["001-0", "001-2", "003-0", "005-0"]),
                               ("Dementia", "MCI", ["007-0"])):
        for stem in ids:
            (root / folder / "cookie").mkdir(parents=True, exist_ok=True)
            (root / folder / "cookie" / f"{stem}.cha").write_text(pitt_chat(group))
            write_wav(root / "media" / folder / f"{stem}.wav", 0.1 * rng.standard_normal(8000))
    with pytest.warns(UserWarning, match="007-0.cha: @ID group 'MCI' is neither Control"):
        summary = import_pitt(root, tmp_path / "dset", pause_tokens=True)
    frame = pd.read_csv(tmp_path / "dset" / "English" / "metadata.csv")
    assert summary["imported"] == len(frame) == 8 and len(summary["skipped"]) == 1
    assert dict(zip(frame["speaker_id"].astype(str).str.zfill(3), frame["label"])) == {
        "002": 0, "004": 0, "006": 0, "001": 1, "003": 1, "005": 1}
    assert (frame["transcript"].str.contains("<long_pause>")).all() and "split" not in frame
    assert set(frame["language"]) == {"English"}
    (samples, skipped), config = read_back(tmp_path / "dset", tmp_path)
    assert len(samples) == 8 and skipped == []
    splits = assign_splits(samples, config)
    assert len({s.speaker_id for s in samples}) == 6
    visits = [s for s in samples if s.speaker_id == "English/001"]  # 001-0 and 001-2: one speaker
    assert len(visits) == 2 and len({name for name, members in splits.items() for s in members if s in visits}) == 1


def make_adress_tree(root, n_per_class=4):
    rng = np.random.default_rng(0)
    for split in ("train",):
        for folder in ("cc", "cd"):
            for i in range(n_per_class):
                stem = f"S{folder}{i:02d}"
                write_wav(root / split / "Full_wave_enhanced_audio" / folder / f"{stem}.wav",
                          0.1 * rng.standard_normal(8000))
                (root / split / "transcription" / folder).mkdir(parents=True, exist_ok=True)
                (root / split / "transcription" / folder / f"{stem}.cha").write_text(CHAT)
    for i in range(2):  # test half: no cc/cd folders, labels from a file
        write_wav(root / "test" / "Full_wave_enhanced_audio" / f"T{i:02d}.wav", 0.1 * rng.standard_normal(8000))
        (root / "test" / "transcription").mkdir(parents=True, exist_ok=True)
        (root / "test" / "transcription" / f"T{i:02d}.cha").write_text(CHAT)
    write_wav(root / "test" / "Full_wave_enhanced_audio" / "T99.wav", 0.1 * rng.standard_normal(8000))  # no .cha


def test_adress_layout_imports_into_the_standard_layout(tmp_path):
    root = tmp_path / "ADReSS"
    make_adress_tree(root)
    labels = tmp_path / "meta_data_test.txt"
    labels.write_text("ID   ; age; gender; Label ; mmse\nT00  ; 70 ; 1 ; 0 ; 29\nT01  ; 72 ; 0 ; 1 ; 18\n"
                      "T99  ; 75 ; 0 ; 1 ; 20\n")
    with pytest.warns(UserWarning, match="T99.wav: no transcript T99.cha"):
        summary = main(["adress", "--root", str(root), "--out_dir", str(tmp_path / "dset"), "--labels_file",
                        str(labels)])
    frame = pd.read_csv(tmp_path / "dset" / "English" / "metadata.csv")
    assert summary["imported"] == len(frame) == 10 and len(summary["skipped"]) == 1
    assert dict(zip(frame["speaker_id"], frame["label"])) == {
        **{f"Scc{i:02d}": 0 for i in range(4)}, **{f"Scd{i:02d}": 1 for i in range(4)}, "T00": 0, "T01": 1}
    assert set(frame.loc[frame["speaker_id"].str.startswith("T"), "split"]) == {"test"}
    assert (frame["transcript"] == participant_speech(CHAT)).all()
    # The result is a dataset the trainer reads: audio paths resolve, val is carved from train speakers.
    (samples, skipped), config = read_back(tmp_path / "dset", tmp_path)
    assert len(samples) == 10 and skipped == []
    splits = assign_splits(samples, config)
    assert {s.speaker_id for s in splits["test"]} == {"English/T00", "English/T01"}
    assert len(splits["val"]) == 2 and len(splits["train"]) == 6


def test_adress_importer_without_labels_skips_unlabelled_test_audio(tmp_path, capsys):
    root = tmp_path / "ADReSS"
    make_adress_tree(root, n_per_class=1)
    with pytest.warns(UserWarning, match="no label"):
        summary = import_adress(root, tmp_path / "dset")
    assert summary["imported"] == 2 and len(summary["skipped"]) == 3
    with pytest.warns(UserWarning):
        main(["adress", "--root", str(root), "--out_dir", str(tmp_path / "dset"), "--language", "Greek"])
    assert len(pd.read_csv(tmp_path / "dset" / "Greek" / "metadata.csv")) == 2
    assert cli(["adress", "--root", str(tmp_path / "nope"), "--out_dir", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.strip().endswith("nope: ADReSS folder does not exist")


def test_adresso_audio_only_trains_with_modality_audio(tmp_path):
    root, rng = tmp_path / "ADReSSo21", np.random.default_rng(1)
    for folder in ("ad", "cn"):
        for i in range(4):
            write_wav(root / "diagnosis" / "train" / "audio" / folder / f"adrso{folder}{i}.wav",
                      0.1 * rng.standard_normal(8000))
    for i in range(4):
        write_wav(root / "diagnosis" / "test-dist" / "audio" / f"adrsdt{i}.wav", 0.1 * rng.standard_normal(8000))
    (tmp_path / "task1.csv").write_text("ID,Dx\n" + "".join(f"adrsdt{i},{'ProbableAD' if i % 2 else 'Control'}\n"
                                                             for i in range(4)))
    summary = main(["adresso", "--root", str(root), "--out_dir", str(tmp_path / "dset"), "--labels_file",
                    str(tmp_path / "task1.csv")])
    frame = pd.read_csv(tmp_path / "dset" / "English" / "metadata.csv")
    assert summary["imported"] == 12 and "transcript" not in frame
    assert frame.groupby("split")["label"].sum().to_dict() == {"test": 2, "train": 4}
    (samples, skipped), _ = read_back(tmp_path / "dset", tmp_path, "--modality", "audio")
    assert len(samples) == 12 and skipped == [] and all(s.transcript == "" for s in samples)


def test_adress_m_english_train_greek_test(tmp_path):
    rng = np.random.default_rng(2)
    for folder, prefix, count in (("train", "adrso", 4), ("test-gr", "adrsgr", 4)):
        for i in range(count):
            write_wav(tmp_path / "ADReSS-M" / folder / f"{prefix}{i:03d}.mp3".replace(".mp3", ".wav"),
                      0.1 * rng.standard_normal(8000))
    (tmp_path / "training-groundtruth.csv").write_text(
        "addressfname,mmse,dx,age,gender\n" + "".join(f"adrso{i:03d},25,{'ProbableAD' if i % 2 else 'Control'},70,male\n"
                                                      for i in range(4)))
    (tmp_path / "test-gr-groundtruth.csv").write_text(
        "addressfname,dx\n" + "".join(f"adrsgr{i:03d},{'Control' if i % 2 else 'ProbableAD'}\n" for i in range(4)))
    main(["adress_m", "--train_dir", str(tmp_path / "ADReSS-M" / "train"), "--train_labels",
          str(tmp_path / "training-groundtruth.csv"), "--test_dir", str(tmp_path / "ADReSS-M" / "test-gr"),
          "--test_labels", str(tmp_path / "test-gr-groundtruth.csv"), "--out_dir", str(tmp_path / "dset")])
    english = pd.read_csv(tmp_path / "dset" / "English" / "metadata.csv")
    greek = pd.read_csv(tmp_path / "dset" / "Greek" / "metadata.csv")
    assert set(english["split"]) == {"train"} and set(greek["split"]) == {"test"}
    assert greek.set_index("speaker_id")["label"].to_dict() == {"adrsgr000": 1, "adrsgr001": 0, "adrsgr002": 1,
                                                                "adrsgr003": 0}
    (samples, _), config = read_back(tmp_path / "dset", tmp_path, "--modality", "audio", "--parser", "cross_lingual",
                                     "--train_languages", "English", "--test_languages", "Greek")
    assert {s.language for s in samples} == {"English", "Greek"} and len(samples) == 8


def test_upstream_training_dset_layout_with_npy_voice_data(tmp_path):
    root, rng = tmp_path / "upstream", np.random.default_rng(3)
    for language in ("English", "Cantonese"):
        for label in ("control", "dementia"):
            for i in range(3):
                stem = f"{language[:2]}{label[0]}{i}"
                (root / language / "textdata" / label).mkdir(parents=True, exist_ok=True)
                (root / language / "voicedata" / label).mkdir(parents=True, exist_ok=True)
                (root / language / "textdata" / label / f"{stem}.txt").write_text("the boy  takes\ncookies")
                np.save(root / language / "voicedata" / label / f"{stem}.npy",
                        (0.1 * rng.standard_normal(8000)).astype(np.float32))
    np.save(root / "English" / "voicedata" / "control" / "Encbad.npy", np.zeros((4, 4), np.float32))
    with pytest.warns(UserWarning, match="Encbad.npy: not a 1-D waveform"):
        summary = main(["training_dset", "--root", str(root), "--out_dir", str(tmp_path / "dset"),
                        "--npy_sample_rate", "8000"])
    assert summary["imported"] == 12 and len(summary["skipped"]) == 1
    frame = pd.read_csv(tmp_path / "dset" / "Cantonese" / "metadata.csv")
    assert (frame["transcript"] == "the boy takes cookies").all() and set(frame["label"]) == {0, 1}
    (samples, skipped), _ = read_back(tmp_path / "dset", tmp_path, "--parser", "all", "--sample_rate", "8000")
    assert len(samples) == 12 and {s.language for s in samples} == {"English", "Cantonese"}


def test_generator_and_tiny_model_clis(tmp_path):
    from transformers import AutoModel, AutoProcessor

    from projects.siglip_sam_dementia import synthetic, tiny_model

    synthetic.main(["--out_dir", str(tmp_path / "d"), "--languages", "Spanish", "--speakers", "6", "--words", "3",
                    "--sample_rate", "8000", "--seed", "1", "--with_split"])
    frame = pd.read_csv(tmp_path / "d" / "Spanish" / "metadata.csv")
    assert len(frame) == 6 and set(frame["label"]) == {"control", "dementia"} and "split" in frame
    assert not (tmp_path / "d" / "English").exists()
    import soundfile as sf

    assert sf.info(str(tmp_path / "d" / "Spanish" / frame["audio_path"][0])).samplerate == 8000
    tiny_model.main(["--out_dir", str(tmp_path / "m"), "--hidden_size", "16", "--num_layers", "1", "--patch_size", "4",
                     "--max_num_patches", "32"])
    model = AutoModel.from_pretrained(tmp_path / "m")
    processor = AutoProcessor.from_pretrained(tmp_path / "m")
    assert type(model).__name__ == "Siglip2Model" and model.config.vision_config.hidden_size == 16
    assert model.config.vision_config.num_hidden_layers == 1 and processor.image_processor.patch_size == 4
    assert processor.image_processor.max_num_patches == 32
