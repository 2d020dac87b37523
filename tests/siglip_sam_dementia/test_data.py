import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from transformers import AutoProcessor

from projects.siglip_sam_dementia.audio_features import LogMelCache, LogMelParams, split_into_windows
from projects.siglip_sam_dementia.config import parse_config
from projects.siglip_sam_dementia.data_processor import (
    DataError,
    assign_splits,
    build_datasets,
    load_samples,
    parse_label,
    transcripts_to_text_inputs,
    windows_to_image_inputs,
)
from projects.siglip_sam_dementia.synthetic import make_synthetic_corpus

from .conftest import write_wav

PARAMS = LogMelParams(n_mels=32)


def config_for(data_dir, *extra):
    return parse_config(["--data_dir", str(data_dir), "--n_mels", "32", "--window_seconds", "2.5", *extra])


@pytest.mark.parametrize("raw, expected", [("0", 0), ("1", 1), (" Control ", 0), ("dementia", 1), ("HC", 0),
                                           ("AD", 1), ("cc", 0), ("cd", 1), ("1.0", 1), ("2", None), ("", None),
                                           ("MCI", None)])
def test_label_spellings(raw, expected):
    assert parse_label(raw) == expected


def test_speaker_split_is_stratified_seeded_and_leak_free(corpus_dir, tmp_path):
    config = config_for(corpus_dir, "--parser", "all", "--cache_dir", str(tmp_path / "cache"))
    samples, skipped = load_samples(config, LogMelCache(tmp_path / "cache", PARAMS))
    assert skipped == [] and len(samples) == 96
    splits = assign_splits(samples, config)
    speakers = {name: {s.speaker_id for s in members} for name, members in splits.items()}
    assert not (speakers["train"] & speakers["val"] or speakers["train"] & speakers["test"]
                or speakers["val"] & speakers["test"])
    for name, members in splits.items():  # every language in every split, both classes each
        for language in ("English", "Greek", "Spanish", "Mandarin"):
            labels = {s.label for s in members if s.language == language}
            assert labels == {0, 1}, (name, language)
    again = assign_splits(samples, config)
    assert [s.speaker_id for s in again["val"]] == [s.speaker_id for s in splits["val"]]
    other_seed = assign_splits(samples, config_for(corpus_dir, "--parser", "all", "--seed", "7"))
    assert {s.speaker_id for s in other_seed["val"]} != speakers["val"]


def test_val_and_test_fractions_set_split_sizes(corpus_dir, tmp_path):
    cache = LogMelCache(tmp_path / "cache", PARAMS)
    small = assign_splits(load_samples(config_for(corpus_dir), cache)[0], config_for(corpus_dir))
    large = config_for(corpus_dir, "--val_fraction", "0.25", "--test_fraction", "0.4")
    large_splits = assign_splits(load_samples(large, cache)[0], large)
    assert (len(small["val"]), len(small["test"])) == (4, 4)  # 12 speakers per class: round(1.8) each
    assert (len(large_splits["val"]), len(large_splits["test"])) == (6, 10)  # round(3.0), round(4.8) per class


def test_two_recordings_of_one_speaker_stay_together(tmp_path):
    data = make_synthetic_corpus(tmp_path / "data", languages=("English",), speakers_per_language=12,
                                 words_per_recording=4)
    frame = pd.read_csv(data / "English" / "metadata.csv", dtype=str)
    frame["speaker_id"] = [f"P{i // 2}" for i in range(len(frame))]  # pairs of recordings per speaker...
    frame["label"] = [str((i // 2) % 2) for i in range(len(frame))]  # ...with one label per speaker
    frame.to_csv(data / "English" / "metadata.csv", index=False)
    config = config_for(data, "--val_fraction", "0.3", "--test_fraction", "0.3")
    splits = assign_splits(load_samples(config, LogMelCache(tmp_path / "c", PARAMS))[0], config)
    owner = {}
    for name, members in splits.items():
        for sample in members:
            assert owner.setdefault(sample.speaker_id, name) == name


def test_split_column_is_respected_and_val_carved_when_missing(tmp_path):
    data = make_synthetic_corpus(tmp_path / "data", languages=("English",), speakers_per_language=24,
                                 words_per_recording=4, write_split_column=True)
    cache = LogMelCache(tmp_path / "c", PARAMS)
    config = config_for(data)
    splits = assign_splits(load_samples(config, cache)[0], config)
    frame = pd.read_csv(data / "English" / "metadata.csv", dtype=str)
    for name in ("train", "val", "test"):
        expected = {f"English/{s}" for s in frame.loc[frame["split"] == name, "speaker_id"]}
        assert {s.speaker_id for s in splits[name]} == expected
    frame["split"] = frame["split"].replace({"val": "train"})  # ADReSS-style: train/test only
    frame.to_csv(data / "English" / "metadata.csv", index=False)
    splits = assign_splits(load_samples(config, cache)[0], config)
    test_speakers = {f"English/{s}" for s in frame.loc[frame["split"] == "test", "speaker_id"]}
    assert {s.speaker_id for s in splits["test"]} == test_speakers
    assert len(splits["val"]) > 0 and {s.label for s in splits["val"]} == {0, 1}
    frame.loc[:2, "split"] = ""  # a partly filled column is an error, not a silent random re-split
    frame.to_csv(data / "English" / "metadata.csv", index=False)
    with pytest.raises(DataError, match=r"English/metadata.csv: the split column is empty for 3 of 24 usable rows"):
        assign_splits(load_samples(config, cache)[0], config)


def test_cross_lingual_never_shows_the_test_language_before_test(corpus_dir, tmp_path):
    config = config_for(corpus_dir, "--parser", "cross_lingual", "--train_languages", "English", "Spanish",
                        "--test_languages", "Greek")
    splits = assign_splits(load_samples(config, LogMelCache(tmp_path / "c", PARAMS))[0], config)
    assert {s.language for s in splits["test"]} == {"Greek"}
    assert len(splits["test"]) == 24  # the whole held-out language
    assert {s.language for s in splits["train"]} == {s.language for s in splits["val"]} == {"English", "Spanish"}


def test_log_mel_cache_reuses_and_invalidates(corpus_dir, tmp_path):
    audio = tmp_path / "a.wav"
    shutil.copy(corpus_dir / "English" / "audio" / "EN000.wav", audio)
    cache = LogMelCache(tmp_path / "cache", PARAMS)
    first = cache.get(audio)
    assert (cache.hits, cache.misses) == (0, 1)
    assert cache.get(audio) == first and (cache.hits, cache.misses) == (1, 1)
    log_mel = np.load(first)
    assert log_mel.shape[0] == 32 and 0.0 <= log_mel.min() and log_mel.max() <= 1.0
    assert LogMelCache(tmp_path / "cache", LogMelParams(n_mels=16)).cache_path(audio) != first  # parameters
    write_wav(audio, np.random.default_rng(0).standard_normal(16000) * 0.1)
    assert cache.cache_path(audio) != first  # content


def test_flac_and_mp3_give_the_wav_spectrogram(corpus_dir, tmp_path):
    import soundfile as sf

    audio, sample_rate = sf.read(corpus_dir / "English" / "audio" / "EN000.wav", dtype="float32")
    reference = np.load(LogMelCache(tmp_path / "wav_cache", PARAMS).get(corpus_dir / "English" / "audio" / "EN000.wav"))
    flac = tmp_path / "a.flac"
    sf.write(flac, audio, sample_rate, format="FLAC")
    np.testing.assert_allclose(np.load(LogMelCache(tmp_path / "c", PARAMS).get(flac)), reference, atol=2e-3)
    mp3 = tmp_path / "a.mp3"
    sf.write(mp3, audio, sample_rate, format="MP3")
    decoded = np.load(LogMelCache(tmp_path / "c", PARAMS).get(mp3))  # lossy, with encoder padding
    assert decoded.shape[0] == reference.shape[0] and abs(decoded.shape[1] - reference.shape[1]) < 0.1 * reference.shape[1]
    # Same recording: the mean spectrum over time matches closely (lossy codec, small time shift).
    assert np.corrcoef(decoded.mean(axis=1), reference.mean(axis=1))[0, 1] > 0.95


def test_second_pass_does_no_audio_work(corpus_dir, tmp_path, monkeypatch):
    config = config_for(corpus_dir, "--parser", "Greek", "--cache_dir", str(tmp_path / "cache"))
    build_datasets(config, LogMelCache(tmp_path / "cache", PARAMS))
    import projects.siglip_sam_dementia.audio_features as features

    def no_audio(*args, **kwargs):
        raise AssertionError("audio decoded although the cache is warm")

    monkeypatch.setattr(features, "load_audio", no_audio)
    cache = LogMelCache(tmp_path / "cache", PARAMS)
    datasets, _ = build_datasets(config, cache)
    assert cache.misses == 0 and cache.hits == 24
    assert len(datasets["train"][0]["windows"]) >= 1


def test_bad_samples_are_skipped_counted_and_named(tmp_path):
    data = make_synthetic_corpus(tmp_path / "data", languages=("English",), speakers_per_language=12,
                                 words_per_recording=4)
    folder = data / "English"
    (folder / "audio" / "broken.wav").write_bytes(b"RIFF....not a wav")
    write_wav(folder / "audio" / "silent.wav", np.zeros(16000))
    write_wav(folder / "audio" / "empty.wav", np.zeros(10))
    frame = pd.read_csv(folder / "metadata.csv", dtype=str)
    bad = pd.DataFrame([
        {"audio_path": "audio/broken.wav", "transcript": "x", "label": "0", "speaker_id": "B1"},
        {"audio_path": "audio/silent.wav", "transcript": "x", "label": "1", "speaker_id": "B2"},
        {"audio_path": "audio/empty.wav", "transcript": "x", "label": "1", "speaker_id": "B3"},
        {"audio_path": "audio/missing.wav", "transcript": "x", "label": "1", "speaker_id": "B4"},
        {"audio_path": "audio/EN000.wav", "transcript": "", "label": "1", "speaker_id": "B5"},
        {"audio_path": "audio/EN001.wav", "transcript": "words", "label": "MCI", "speaker_id": "B6"},
    ])
    pd.concat([frame, bad]).to_csv(folder / "metadata.csv", index=False)
    with pytest.warns(UserWarning, match="skipping sample"):
        samples, skipped = load_samples(config_for(data), LogMelCache(tmp_path / "c", PARAMS))
    assert len(samples) == 12
    reasons = {Path(s.file).name: s.reason for s in skipped}
    assert "unreadable audio" in reasons["broken.wav"]
    assert "silent audio" in reasons["silent.wav"]
    assert "empty audio" in reasons["empty.wav"]
    assert "audio file not found" in reasons["missing.wav"]
    assert "missing transcript" in reasons["EN000.wav"]
    assert "label 'MCI' is not one of" in reasons["EN001.wav"]
    assert all(str(folder) in s.reason for s in skipped)  # every reason names the file


def test_dataset_level_problems_stop_with_one_line_naming_the_file(tmp_path):
    data = make_synthetic_corpus(tmp_path / "data", languages=("English",), speakers_per_language=12,
                                 words_per_recording=4)
    cache = LogMelCache(tmp_path / "c", PARAMS)
    with pytest.raises(DataError, match=r"Greek: language folder does not exist"):
        load_samples(config_for(data, "--parser", "Greek"), cache)
    frame = pd.read_csv(data / "English" / "metadata.csv", dtype=str)
    frame.drop(columns=["speaker_id"]).to_csv(data / "English" / "metadata.csv", index=False)
    with pytest.raises(DataError, match=r"metadata.csv: missing column\(s\) speaker_id"):
        load_samples(config_for(data), cache)
    frame["label"] = "0"  # only controls
    frame.to_csv(data / "English" / "metadata.csv", index=False)
    config = config_for(data)
    with pytest.raises(DataError, match=r"split 'train' \(English\) needs both classes, has control=") as error:
        assign_splits(load_samples(config, cache)[0], config)
    assert "\n" not in str(error.value)


def test_transcript_path_column_is_read(tmp_path):
    data = make_synthetic_corpus(tmp_path / "data", languages=("English",), speakers_per_language=12,
                                 words_per_recording=4)
    frame = pd.read_csv(data / "English" / "metadata.csv", dtype=str)
    for i, text in enumerate(frame["transcript"]):
        (data / "English" / f"t{i}.txt").write_text(text + "\n")
    frame["transcript_path"] = [f"t{i}.txt" for i in range(len(frame))]
    frame.drop(columns=["transcript"]).to_csv(data / "English" / "metadata.csv", index=False)
    samples, _ = load_samples(config_for(data), LogMelCache(tmp_path / "c", PARAMS))
    assert [s.transcript for s in samples] == [" ".join(t.split()) for t in frame["transcript"]]


def test_windows_keep_aspect_ratio_and_cover_the_recording(tiny_model_dir):
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    log_mel = np.random.default_rng(0).random((32, 620)).astype(np.float32)
    windows = split_into_windows(log_mel, 250)
    assert [w.shape[1] for w in windows] == [250, 370]  # the 120-frame tail joins the previous window
    assert sum(w.shape[1] for w in windows) == 620
    inputs = windows_to_image_inputs(windows, processor.image_processor, max_num_patches=None)
    rows, columns = inputs["spatial_shapes"][0].tolist()
    assert rows * columns <= 64 and columns > rows * 4  # wide like the spectrogram, not a square
    assert inputs["pixel_values"].shape == (2, 64, 3 * 8 * 8)
    assert int(inputs["pixel_attention_mask"][0].sum()) == rows * columns
    more = windows_to_image_inputs(windows, processor.image_processor, max_num_patches=128)
    assert more["pixel_values"].shape[1] == 128  # --max_num_patches overrides the processor's budget


def test_long_transcripts_become_windows_not_truncated(tiny_model_dir):
    tokenizer = AutoProcessor.from_pretrained(tiny_model_dir).tokenizer
    long_text = " ".join(["the boy takes cookies from the jar"] * 40)
    encoded = transcripts_to_text_inputs(["the boy", long_text], tokenizer, max_length=64, stride=16)
    owners = encoded["text_owner"].tolist()
    assert owners.count(0) == 1 and owners.count(1) > 3
    n_tokens = len(tokenizer(long_text, add_special_tokens=False)["input_ids"])
    covered = int(encoded["attention_mask"][encoded["text_owner"] == 1].sum())
    assert covered >= n_tokens  # every token is in some window (overlaps count twice)


def english_corpus(tmp_path, speakers=12):
    data = make_synthetic_corpus(tmp_path / "data", languages=("English",), speakers_per_language=speakers,
                                 words_per_recording=4)
    return data, pd.read_csv(data / "English" / "metadata.csv", dtype=str)


def test_speaker_ids_are_stripped_and_a_speaker_with_two_labels_is_an_error(tmp_path):
    data, frame = english_corpus(tmp_path)
    extra = frame.iloc[[0]].assign(speaker_id=f"  {frame['speaker_id'][0]} ")  # the same person, padded
    pd.concat([frame, extra]).to_csv(data / "English" / "metadata.csv", index=False)
    config = config_for(data)
    samples, _ = load_samples(config, LogMelCache(tmp_path / "c", PARAMS))
    assert len(samples) == 13 and len({s.speaker_id for s in samples}) == 12
    splits = assign_splits(samples, config)
    assert sum(s.speaker_id == f"English/{frame['speaker_id'][0]}" for s in splits["train"] + splits["val"]
               + splits["test"]) == 2
    extra = extra.assign(label="1" if frame["label"][0] in ("0", "control") else "0")
    frame.iloc[[1]] = frame.iloc[[1]].assign(speaker_id=frame["speaker_id"][1].lower())  # case is kept: another id
    pd.concat([frame, extra]).to_csv(data / "English" / "metadata.csv", index=False)
    with pytest.raises(DataError, match=rf"speaker English/{frame['speaker_id'][0]} has conflicting labels "
                                        r"\(control: .*metadata.csv row 2; dementia: .*metadata.csv row 14\)"):
        load_samples(config, LogMelCache(tmp_path / "c", PARAMS))


def test_audio_only_needs_no_transcripts_and_text_only_no_audio(tmp_path, monkeypatch):
    data, frame = english_corpus(tmp_path)
    frame.drop(columns=["transcript"]).to_csv(data / "English" / "metadata.csv", index=False)
    with pytest.raises(DataError, match="missing column\\(s\\) transcript or transcript_path .*--modality multimodal"):
        load_samples(config_for(data), LogMelCache(tmp_path / "c", PARAMS))
    samples, skipped = load_samples(config_for(data, "--modality", "audio"), LogMelCache(tmp_path / "c", PARAMS))
    assert len(samples) == 12 and not skipped and all(s.transcript == "" and s.log_mel_path for s in samples)

    frame.drop(columns=["audio_path"]).to_csv(data / "English" / "metadata.csv", index=False)
    shutil.rmtree(data / "English" / "audio")
    config = config_for(data, "--modality", "text")
    datasets, skipped = build_datasets(config, None)  # no log-mel cache at all
    assert sum(len(d) for d in datasets.values()) == 12 and not skipped
    item = datasets["train"][0]
    assert item["windows"] == [] and item["transcript"]


def test_one_metadata_csv_with_a_language_column_and_any_language_name(tmp_path):
    data = make_synthetic_corpus(tmp_path / "data", languages=("English", "Greek"), speakers_per_language=12,
                                 words_per_recording=4)
    rows = []
    for language, name in (("English", "Cantonese"), ("Greek", "Basque")):
        part = pd.read_csv(data / language / "metadata.csv", dtype=str)
        rows.append(part.assign(audio_path=f"{language}/" + part["audio_path"], language=name))
        (data / language / "metadata.csv").unlink()
    pd.concat(rows).to_csv(data / "metadata.csv", index=False)
    config = config_for(data, "--parser", "cross_lingual", "--train_languages", "Cantonese", "--test_languages",
                        "Basque")
    splits = assign_splits(load_samples(config, LogMelCache(tmp_path / "c", PARAMS))[0], config)
    assert {s.language for s in splits["test"]} == {"Basque"} and {s.language for s in splits["train"]} == {"Cantonese"}
    datasets, _ = build_datasets(config_for(data, "--parser", "all"), LogMelCache(tmp_path / "c", PARAMS))
    assert {s.language for d in datasets.values() for s in d.samples} == {"Cantonese", "Basque"}
    with pytest.raises(DataError, match="no rows with language 'Welsh' \\(has Basque, Cantonese\\)"):
        load_samples(config_for(data, "--parser", "Welsh"), LogMelCache(tmp_path / "c", PARAMS))
