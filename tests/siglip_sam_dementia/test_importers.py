import numpy as np
import pandas as pd
import pytest

from projects.siglip_sam_dementia.audio_features import LogMelCache, LogMelParams
from projects.siglip_sam_dementia.config import parse_config
from projects.siglip_sam_dementia.data_processor import assign_splits, load_samples
from projects.siglip_sam_dementia.importers import import_adress, main, participant_speech

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


def test_participant_lines_only_with_chat_codes_stripped():
    assert participant_speech(CHAT) == ("well uh the boy is is taking the taking cookies and the um mother she is "
                                        "washing dishes and the water is overflowing the stool tipping")
    assert "picture" not in participant_speech(CHAT) and "mhm" not in participant_speech(CHAT)


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
        summary = main(["--adress_dir", str(root), "--out_dir", str(tmp_path / "dset"), "--labels_file", str(labels)])
    frame = pd.read_csv(tmp_path / "dset" / "English" / "metadata.csv")
    assert summary["imported"] == len(frame) == 10 and len(summary["skipped"]) == 1
    assert dict(zip(frame["speaker_id"], frame["label"])) == {
        **{f"Scc{i:02d}": 0 for i in range(4)}, **{f"Scd{i:02d}": 1 for i in range(4)}, "T00": 0, "T01": 1}
    assert set(frame.loc[frame["speaker_id"].str.startswith("T"), "split"]) == {"test"}
    assert (frame["transcript"] == participant_speech(CHAT)).all()
    # The result is a dataset the trainer reads: audio paths resolve, val is carved from train speakers.
    config = parse_config(["--data_dir", str(tmp_path / "dset"), "--n_mels", "16", "--val_fraction", "0.25"])
    samples, skipped = load_samples(config, LogMelCache(tmp_path / "cache", LogMelParams(n_mels=16)))
    assert len(samples) == 10 and skipped == []
    splits = assign_splits(samples, config)
    assert {s.speaker_id for s in splits["test"]} == {"English/T00", "English/T01"}
    assert len(splits["val"]) == 2 and len(splits["train"]) == 6


def test_importer_without_labels_skips_unlabelled_test_audio(tmp_path):
    root = tmp_path / "ADReSS"
    make_adress_tree(root, n_per_class=1)
    with pytest.warns(UserWarning, match="no label"):
        summary = import_adress(root, tmp_path / "dset")
    assert summary["imported"] == 2 and len(summary["skipped"]) == 3
    with pytest.warns(UserWarning):
        main(["--adress_dir", str(root), "--out_dir", str(tmp_path / "dset"), "--language", "Greek"])
    assert len(pd.read_csv(tmp_path / "dset" / "Greek" / "metadata.csv")) == 2
    with pytest.raises(SystemExit, match="does not exist"):
        main(["--adress_dir", str(tmp_path / "nope"), "--out_dir", str(tmp_path / "x")])


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
