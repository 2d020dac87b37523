"""Metadata, validation, speaker-level splits, the dataset and the NaFlex collator.

Layout: ``<data_dir>/<Language>/metadata.csv`` (or one ``<data_dir>/metadata.csv`` with a ``language``
column) with columns ``audio_path`` (relative to the CSV's folder; not needed for --modality text),
``transcript`` or ``transcript_path`` (not needed for --modality audio), ``label`` (0/1,
control/dementia, HC/AD, cc/cd), ``speaker_id`` (stripped; one label per speaker) and an optional
``split`` (train/val/test). Bad samples are skipped with a warning and
counted, never zero-filled; structural problems (missing folder, missing column, a split with one
class) stop the run with a one-line message naming the file.
"""

from __future__ import annotations

import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from projects.siglip_sam_dementia.audio_features import BadAudioError, LogMelCache, split_into_windows
from projects.siglip_sam_dementia.config import LABEL_ALIASES, LANGUAGES, TrainingConfig, selected_languages

SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "dev": "val", "test": "test", "testing": "test"}
CLASS_NAMES = ("control", "dementia")


class DataError(ValueError):
    """A problem with the dataset as a whole; the message names the file and the reason."""


@dataclass
class Sample:
    audio_path: Path | None  # None in text-only runs
    transcript: str  # "" in audio-only runs
    label: int
    speaker_id: str  # "<language>/<speaker id stripped>"
    language: str
    split: str | None  # from metadata, or None when the metadata has no split column
    log_mel_path: Path | None = None  # None in text-only runs
    source: str = ""  # "<metadata.csv> row <n>"


@dataclass
class SkippedSample:
    file: str
    reason: str


def parse_label(value: Any) -> int | None:
    """0/1 from any accepted spelling; None for anything else."""
    text = str(value).strip().lower().replace(" ", "")
    try:
        number = float(text)
        text = str(int(number)) if number.is_integer() else text
    except ValueError:
        pass
    return LABEL_ALIASES.get(text)


def discover_languages(data_dir: str | Path) -> list[str]:
    """The languages present in the data: `<data_dir>/<Language>/metadata.csv` folders and the
    `language` column of a `<data_dir>/metadata.csv`; the documented four first, then the rest."""
    data_dir = Path(data_dir)
    found = {p.parent.name for p in data_dir.glob("*/metadata.csv")}
    top = data_dir / "metadata.csv"
    if top.is_file():
        frame = _read_csv(top)
        if "language" in frame.columns:
            found |= {v.strip() for v in frame["language"] if v.strip()}
    return [lang for lang in LANGUAGES if lang in found] + sorted(found - set(LANGUAGES))


def _read_csv(csv_path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except Exception as error:
        raise DataError(f"{csv_path}: unreadable CSV ({error})") from None


def required_columns(modality: str) -> list[str]:
    """audio_path unless text-only; transcript (or transcript_path) unless audio-only."""
    columns = ["label", "speaker_id"]
    if modality != "text":
        columns.insert(0, "audio_path")
    if modality != "audio":
        columns.append("transcript or transcript_path")
    return columns


def read_metadata(data_dir: str | Path, language: str, modality: str = "multimodal") -> tuple[Path, Path, pd.DataFrame]:
    """(folder paths are relative to, the CSV, its rows of `language`): `<data_dir>/<language>/metadata.csv`,
    else the rows of `<data_dir>/metadata.csv` whose `language` column is `language`."""
    data_dir = Path(data_dir)
    folder = data_dir / language
    csv_path = folder / "metadata.csv"
    top = data_dir / "metadata.csv"
    if not folder.is_dir() and top.is_file():
        folder, csv_path = data_dir, top
        frame = _read_csv(top)
        if "language" not in frame.columns:
            raise DataError(f"{top}: no language column and no {language}/ folder beside it")
        frame = frame[frame["language"].str.strip() == language]
        if frame.empty:
            raise DataError(f"{top}: no rows with language {language!r} (has "
                            f"{', '.join(discover_languages(data_dir)) or 'none'})")
    elif not folder.is_dir():
        raise DataError(f"{folder}: language folder does not exist (expected <data_dir>/{language}/metadata.csv; "
                        f"languages in {data_dir}: {', '.join(discover_languages(data_dir)) or 'none'})")
    elif not csv_path.is_file():
        raise DataError(f"{csv_path}: metadata.csv not found")
    else:
        frame = _read_csv(csv_path)
    columns = set(frame.columns)
    missing = [c for c in required_columns(modality) if c not in columns and not (
        c.startswith("transcript") and columns & {"transcript", "transcript_path"})]
    if missing:
        raise DataError(f"{csv_path}: missing column(s) {', '.join(missing)} (needed for --modality {modality}); "
                        f"has {', '.join(frame.columns)}")
    if frame.empty:
        raise DataError(f"{csv_path}: no rows")
    return folder, csv_path, frame


def _transcript_of(row: pd.Series, folder: Path, where: str) -> str:
    text = row.get("transcript", "")
    if not text and row.get("transcript_path", ""):
        path = folder / row["transcript_path"]
        if not path.is_file():
            raise ValueError(f"{path}: transcript file not found")
        text = path.read_text(encoding="utf-8")
    text = " ".join(str(text).split())
    if not text:
        raise ValueError(f"{where}: missing transcript")
    return text


def normalise_speaker(value: Any) -> str:
    """Speaker ids are compared stripped of surrounding white space; case is kept (S001 != s001)."""
    return str(value).strip()


def load_samples(config: TrainingConfig, cache: LogMelCache | None,
                 languages: list[str] | None = None) -> tuple[list[Sample], list[SkippedSample]]:
    """Every usable sample of `languages` (default: the run's), with its log-mel cached (unless
    text-only); the rest are skipped. Audio-only runs need no transcripts, text-only runs no audio."""
    if languages is None:
        languages = selected_languages(config, discover_languages(config.data_dir))
    uses_audio, uses_text = config.modality != "text", config.modality != "audio"
    samples: list[Sample] = []
    skipped: list[SkippedSample] = []
    rows = []
    for language in languages:
        folder, csv_path, frame = read_metadata(config.data_dir, language, config.modality)
        # row numbers as a spreadsheet shows them (the header is row 1)
        rows += [(language, folder, f"{csv_path} row {index + 2}", row) for index, row in frame.iterrows()]
    for language, folder, where, row in tqdm(rows, desc="log-mel features", unit="rec", leave=False):
        audio_path = folder / row["audio_path"] if uses_audio else None
        name = str(audio_path) if audio_path is not None else where
        try:
            label = parse_label(row["label"])
            if label is None:
                raise ValueError(f"{name}: label {row['label']!r} is not one of {', '.join(sorted(LABEL_ALIASES))}")
            speaker = normalise_speaker(row["speaker_id"])
            if not speaker:
                raise ValueError(f"{name}: missing speaker_id")
            transcript = _transcript_of(row, folder, name) if uses_text else ""
            split = None
            if "split" in row and str(row["split"]).strip():
                split = SPLIT_ALIASES.get(str(row["split"]).strip().lower())
                if split is None:
                    raise ValueError(f"{name}: split {row['split']!r} is not train/val/test")
            if uses_audio and not str(row["audio_path"]).strip():
                raise ValueError(f"{where}: no audio_path (this corpus row has a transcript only)")
            log_mel_path = cache.get(audio_path) if uses_audio else None
        except (ValueError, BadAudioError) as error:
            warnings.warn(f"skipping sample: {error}", stacklevel=2)
            skipped.append(SkippedSample(name, str(error)))
            continue
        samples.append(Sample(audio_path, transcript, label, f"{language}/{speaker}", language, split,
                              log_mel_path, where))
    if not samples:
        raise DataError(f"{config.data_dir}: no usable samples ({len(skipped)} skipped)")
    check_speaker_labels(samples)
    return samples, skipped


def check_speaker_labels(samples: list[Sample]) -> None:
    """A speaker is either a control or a dementia participant: conflicting labels are an error."""
    rows_by_speaker: dict[str, dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
    for sample in samples:
        rows_by_speaker[sample.speaker_id][sample.label].append(sample.source)
    for speaker, by_label in rows_by_speaker.items():
        if len(by_label) > 1:
            details = "; ".join(f"{CLASS_NAMES[label]}: {', '.join(rows)}" for label, rows in sorted(by_label.items()))
            raise DataError(f"speaker {speaker} has conflicting labels ({details})")


def _speaker_split(speakers_by_label: dict[int, list[str]], fractions: dict[str, float],
                   rng: np.random.Generator) -> dict[str, str]:
    """Stratified by the speaker's label: each class contributes the same fraction to each split."""
    assignment: dict[str, str] = {}
    for label in sorted(speakers_by_label):
        speakers = sorted(speakers_by_label[label])
        rng.shuffle(speakers)
        start = 0
        for split, fraction in fractions.items():
            count = max(1, round(len(speakers) * fraction)) if len(speakers) > len(fractions) else 0
            for speaker in speakers[start:start + count]:
                assignment[speaker] = split
            start += count
        for speaker in speakers[start:]:
            assignment[speaker] = "train"
    return assignment


def _speakers_by_label(samples: list[Sample]) -> dict[int, list[str]]:
    """Speakers grouped by the label of their first recording."""
    speaker_label: dict[str, int] = {}
    for sample in samples:
        speaker_label.setdefault(sample.speaker_id, sample.label)
    grouped: dict[int, list[str]] = defaultdict(list)
    for speaker, label in speaker_label.items():
        grouped[label].append(speaker)
    return grouped


def assign_splits(samples: list[Sample], config: TrainingConfig) -> dict[str, list[Sample]]:
    """train/val/test by speaker. Cross-lingual: val comes from the training languages; the test
    languages go to test whole and are seen nowhere else."""
    rng = np.random.default_rng(config.seed)
    by_language: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        by_language[sample.language].append(sample)

    splits: dict[str, list[Sample]] = {name: [] for name in SPLITS}
    for language in sorted(by_language):
        group = by_language[language]
        if config.parser == "cross_lingual" and language in config.test_languages:
            splits["test"] += group
            continue
        cross_lingual_train = config.parser == "cross_lingual"
        unsplit = sum(s.split is None for s in group)
        if 0 < unsplit < len(group):  # a random split would silently override the given ones
            raise DataError(f"{Path(config.data_dir) / language / 'metadata.csv'}: the split column is empty for "
                            f"{unsplit} of {len(group)} usable rows; fill it for every row or drop the column")
        if unsplit == 0:
            # The metadata's split, except: a training language's test speakers train in cross-lingual
            # runs, and a language without val speakers gets val carved from its train speakers.
            given = {id(s): ("train" if cross_lingual_train and s.split == "test" else s.split) for s in group}
            pool = [s for s in group if given[id(s)] == "train"]
            if not any(split == "val" for split in given.values()):
                carved = _speaker_split(_speakers_by_label(pool), {"val": config.val_fraction}, rng)
                given.update({id(s): carved[s.speaker_id] for s in pool})
            for sample in group:
                splits[given[id(sample)]].append(sample)
            continue
        fractions = {"val": config.val_fraction} if cross_lingual_train else {
            "val": config.val_fraction, "test": config.test_fraction}
        assignment = _speaker_split(_speakers_by_label(group), fractions, rng)
        for sample in group:
            splits[assignment[sample.speaker_id]].append(sample)

    check_splits(splits, config)
    return splits


def check_splits(splits: dict[str, list[Sample]], config: TrainingConfig) -> None:
    owner: dict[str, str] = {}
    for name, members in splits.items():
        for sample in members:
            previous = owner.setdefault(sample.speaker_id, name)
            if previous != name:
                raise DataError(f"{config.data_dir}: speaker {sample.speaker_id} is in both {previous} and "
                                f"{name} (the split column must be per speaker)")
    for name in SPLITS:
        labels = Counter(s.label for s in splits[name])
        if len(labels) < 2:
            languages = ", ".join(sorted({s.language for s in splits[name]})) or "no language"
            present = ", ".join(f"{CLASS_NAMES[k]}={v}" for k, v in sorted(labels.items())) or "no samples"
            raise DataError(f"{config.data_dir}: split '{name}' ({languages}) needs both classes, has {present}")


class DementiaDataset(Dataset):
    """One item per recording: its log-mel windows (read from the cache) and its transcript."""

    def __init__(self, samples: list[Sample], window_frames: int):
        self.samples = samples
        self.window_frames = window_frames

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        windows = []
        if sample.log_mel_path is not None:
            log_mel = np.load(sample.log_mel_path)  # (n_mels, frames), no audio work after the first pass
            windows = split_into_windows(log_mel, self.window_frames)
        return {
            "windows": windows,
            "transcript": sample.transcript,
            "label": sample.label,
            "language": sample.language,
            "speaker_id": sample.speaker_id,
        }


def windows_to_image_inputs(windows: list[np.ndarray], image_processor, max_num_patches: int | None) -> dict:
    """Spectrogram windows -> NaFlex patches, keeping each window's aspect ratio within the patch budget.

    Low frequencies go at the bottom (an image of the spectrogram as people look at it); the three
    channels are copies, values already in [0, 1] so the processor only normalises.
    """
    images = [torch.from_numpy(np.ascontiguousarray(window[::-1])).unsqueeze(0).expand(3, -1, -1) for window in windows]
    kwargs = {"max_num_patches": max_num_patches} if max_num_patches else {}
    encoded = image_processor(images=images, do_rescale=False, return_tensors="pt", **kwargs)
    return {"pixel_values": encoded["pixel_values"],  # (N, L, 3*P*P)
            "pixel_attention_mask": encoded["pixel_attention_mask"],  # (N, L)
            "spatial_shapes": encoded["spatial_shapes"]}  # (N, 2)


def transcripts_to_text_inputs(texts: list[str], tokenizer, max_length: int, stride: int) -> dict:
    """Tokenise; a transcript longer than the text tower's positions becomes overlapping windows."""
    encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length,
                        return_overflowing_tokens=True, stride=stride, return_tensors="pt")
    return {"input_ids": encoded["input_ids"],  # (M, max_length)
            "attention_mask": encoded["attention_mask"],
            "text_owner": encoded["overflow_to_sample_mapping"].long()}  # (M,) recording index


class DementiaCollator:
    """Batches recordings into flat window tensors plus an owner index per window (for pooling)."""

    def __init__(self, processor, modality: str, text_max_length: int, max_num_patches: int | None = None,
                 text_stride: int = 16):
        self.processor = processor
        self.modality = modality
        self.text_max_length = text_max_length
        self.max_num_patches = max_num_patches
        self.text_stride = text_stride

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        inputs: dict[str, Any] = {"batch_size": len(items)}
        if self.modality in ("multimodal", "audio"):
            windows = [w for item in items for w in item["windows"]]
            owner = [i for i, item in enumerate(items) for _ in item["windows"]]
            inputs.update(windows_to_image_inputs(windows, self.processor.image_processor, self.max_num_patches))
            inputs["audio_owner"] = torch.tensor(owner, dtype=torch.long)
        if self.modality in ("multimodal", "text"):
            inputs.update(transcripts_to_text_inputs([item["transcript"] for item in items], self.processor.tokenizer,
                                                     self.text_max_length, self.text_stride))
        return {
            "inputs": inputs,
            "labels": torch.tensor([item["label"] for item in items], dtype=torch.long),
            "languages": [item["language"] for item in items],
            "speakers": [item["speaker_id"] for item in items],
        }


def build_datasets(config: TrainingConfig, cache: LogMelCache | None,
                   languages: list[str] | None = None) -> tuple[dict[str, DementiaDataset], list[SkippedSample]]:
    """train/val/test datasets of `languages` (default: the run's, from the data), and the skipped samples."""
    samples, skipped = load_samples(config, cache, languages)
    splits = assign_splits(samples, config)
    frames_per_second = cache.params.frames_per_second if cache is not None else 1.0  # text-only: no windows
    window_frames = max(1, int(round(config.window_seconds * frames_per_second)))
    return {name: DementiaDataset(members, window_frames) for name, members in splits.items()}, skipped
