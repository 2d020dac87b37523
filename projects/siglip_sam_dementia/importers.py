"""Import the corpora researchers hold into the standard layout: ``<out>/<Language>/metadata.csv``
(audio referenced in place, transcripts inline) that ``trainer.py --data_dir <out>`` reads.

One importer per layout, the same output (columns audio_path, transcript when the corpus has
transcripts, label, speaker_id, split when the corpus has one, language):

    pitt           DementiaBank Pitt (Cookie Theft): CHAT .cha files in Dementia/ and Control/ folders,
                   labels from the participant's @ID group (Control, ProbableAD, PossibleAD; other
                   groups such as MCI are skipped), speaker = file name before '-' (visits stay together)
    adress         ADReSS 2020: cc/ and cd/ folders of audio + .cha; test labels from --labels_file
    adresso        ADReSSo 2021: audio only, ad/ and cn/ folders; test labels from --labels_file
    adress_m       ADReSS-M 2023: audio only, English train and Greek test, labels from their CSVs
    training_dset  the upstream project's layout: <Language>/textdata/*.txt and <Language>/voicedata/*.npy
                   (1-D waveforms, written out as wav at --npy_sample_rate), labels from class folders or
                   a labels.csv in the language folder

    python projects/siglip_sam_dementia/importers.py pitt --root Pitt --out_dir training_dset --pause_tokens
    python projects/siglip_sam_dementia/importers.py adress --root ADReSS-IS2020-data --out_dir training_dset \
        --labels_file ADReSS-IS2020-data/test/meta_data_test.txt

The participant's speech only (*PAR: tiers) unless --include_investigator; CHAT codes removed as in
chat.py; pause codes become tokens with --pause_tokens. A recording that cannot be imported is skipped
with a warning naming it and the reason, and counted in the summary.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from projects.siglip_sam_dementia.chat import language_name, participant_speech, speaker_ids
from projects.siglip_sam_dementia.config import LABEL_ALIASES
from shared.cli_errors import run_reporting_errors

AUDIO_SUFFIXES = {".wav", ".mp3", ".flac"}
CLASS_FOLDERS = {"cc": 0, "cd": 1, "cn": 0, "ad": 1, "control": 0, "dementia": 1, "hc": 0}
PITT_GROUPS = {"control": 0, "probablead": 1, "possiblead": 1}
ID_COLUMNS = ("id", "addressfname", "adressfname", "file", "speaker_id")
LABEL_COLUMNS = ("label", "dx", "diagnosis", "class")


class CorpusError(ValueError):
    """A corpus that cannot be imported as a whole (missing folder, labels file without columns)."""


def _skip(skipped: list[dict], file: Path | str, reason: str) -> None:
    warnings.warn(f"skipping {file}: {reason}", stacklevel=3)
    skipped.append({"file": str(file), "reason": reason})


def folder_label(path: Path, root: Path) -> int | None:
    """0/1 from a class folder (cc, cd, ad, cn, control, dementia, hc) in the path below `root`."""
    parts = [part.lower() for part in path.relative_to(root).parts[:-1]]
    return next((CLASS_FOLDERS[p] for p in parts if p in CLASS_FOLDERS), None)


def read_labels_file(path: str | Path) -> dict[str, int]:
    """ID -> 0/1 from a table with an id column (ID, addressfname, ...) and a label column (Label, dx, ...);
    separators are sniffed (ADReSS uses ';' and padded spaces)."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"{path}: labels file does not exist")
    frame = pd.read_csv(path, sep=None, engine="python", dtype=str)
    frame.columns = [c.strip().lower() for c in frame.columns]
    id_column = next((c for c in ID_COLUMNS if c in frame.columns), None)
    label_column = next((c for c in LABEL_COLUMNS if c in frame.columns), None)
    if id_column is None or label_column is None:
        raise CorpusError(f"{path}: labels file needs an id column ({', '.join(ID_COLUMNS)}) and a label column "
                           f"({', '.join(LABEL_COLUMNS)}); has {', '.join(frame.columns)}")
    labels = {}
    for _, row in frame.iterrows():
        value = LABEL_ALIASES.get(str(row[label_column]).strip().lower().replace(" ", ""))
        if value is None:
            raise CorpusError(f"{path}: label {row[label_column]!r} for {str(row[id_column]).strip()} is not one of "
                               f"{', '.join(sorted(LABEL_ALIASES))}")
        labels[Path(str(row[id_column]).strip()).stem] = value
    return labels


def audio_index(*roots: Path) -> dict[str, Path]:
    """stem -> audio file under the roots (first found)."""
    index: dict[str, Path] = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.suffix.lower() in AUDIO_SUFFIXES:
                index.setdefault(path.stem, path)
    return index


def write_layout(rows: list[dict], out_dir: Path, skipped: list[dict], source: Path) -> dict:
    """Write one metadata.csv per language (audio paths relative to it); drop the speakers whose
    recordings disagree on the label (skipped, named). Returns the import summary."""
    labels_by_speaker: dict[tuple[str, str], set[int]] = defaultdict(set)
    for row in rows:
        labels_by_speaker[(row["language"], row["speaker_id"])].add(row["label"])
    kept = []
    for row in rows:
        if len(labels_by_speaker[(row["language"], row["speaker_id"])]) > 1:
            _skip(skipped, row["audio_path"] or row["speaker_id"],
                  f"speaker {row['speaker_id']} has recordings labelled both control and dementia")
        else:
            kept.append(row)
    if not kept:
        raise CorpusError(f"{source}: no importable recordings ({len(skipped)} skipped)")
    written = {}
    frame = pd.DataFrame(kept)
    for language, group in frame.groupby("language", sort=True):
        target = out_dir / str(language)
        target.mkdir(parents=True, exist_ok=True)
        group = group.copy()
        group["audio_path"] = [os.path.relpath(Path(p).resolve(), target.resolve()) if p else ""
                               for p in group["audio_path"]]
        group.dropna(axis=1, how="all").to_csv(target / "metadata.csv", index=False)
        written[str(language)] = str(target / "metadata.csv")
    counts = frame.groupby(["language", frame.get("split", pd.Series("all", index=frame.index)), "label"]).size()
    return {"metadata": written, "imported": len(frame), "skipped": skipped,
            "by_language_split_label": {f"{lang}/{split}/{'dementia' if y else 'control'}": int(n)
                                        for (lang, split, y), n in counts.items()}}


def split_from_path(path: Path, root: Path) -> str:
    """test when a folder below `root` is named test* (test, test-dist, test-gr), else train."""
    return "test" if any(p.lower().startswith("test") for p in path.relative_to(root).parts[:-1]) else "train"


def _require_dir(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise CorpusError(f"{path}: {what} folder does not exist")
    return path


def import_pitt(root: str | Path, out_dir: str | Path, audio_dir: str | Path | None = None,
                pause_tokens: bool = False, include_investigator: bool = False) -> dict:
    """DementiaBank Pitt: every .cha under `root`, its audio (same name) under `root` or `audio_dir`."""
    root = _require_dir(root, "Pitt")
    audio = audio_index(root, *([_require_dir(audio_dir, "audio")] if audio_dir else []))
    rows, skipped = [], []
    for cha in sorted(root.rglob("*.cha")):
        text = cha.read_text(encoding="utf-8", errors="replace")
        participant = speaker_ids(text).get("PAR", {})
        group = participant.get("group", "").lower().replace(" ", "")
        label = PITT_GROUPS.get(group) if group else folder_label(cha, root)
        if label is None:
            _skip(skipped, cha, f"@ID group {participant.get('group')!r} is neither Control nor ProbableAD/PossibleAD"
                  if group else "no @ID group for PAR and no Dementia/Control folder")
            continue
        words = participant_speech(text, pause_tokens=pause_tokens, include_investigator=include_investigator)
        if not words:
            _skip(skipped, cha, "no *PAR: speech")
            continue
        recording = audio.get(cha.stem)
        rows.append({"audio_path": str(recording) if recording else "", "transcript": words, "label": label,
                     "speaker_id": cha.stem.split("-")[0], "language": language_name(participant.get("language", ""))})
    return write_layout(rows, Path(out_dir), skipped, root)


def labelled_recordings(root: Path, labels_file: str | Path | None, skipped: list[dict]) -> Iterator[tuple[Path, int]]:
    """(audio file, 0/1) under `root`: the label from a class folder (cc/cd, ad/cn), else from `labels_file`;
    unlabelled files are skipped."""
    extra_labels = read_labels_file(labels_file) if labels_file else {}
    for recording in sorted(audio_index(root).values()):
        label = folder_label(recording, root)
        label = label if label is not None else extra_labels.get(recording.stem)
        if label is None:
            _skip(skipped, recording, "no label (not in a cc/cd or ad/cn folder and not in --labels_file)")
        else:
            yield recording, label


def import_adress(root: str | Path, out_dir: str | Path, labels_file: str | Path | None = None,
                  language: str = "English", pause_tokens: bool = False, include_investigator: bool = False) -> dict:
    """ADReSS 2020: audio in cc/ and cd/ folders (test: labels from `labels_file`), a .cha of the same name."""
    root = _require_dir(root, "ADReSS")
    transcripts = {p.stem: p for p in root.rglob("*.cha")}
    rows, skipped = [], []
    for recording, label in labelled_recordings(root, labels_file, skipped):
        if recording.stem not in transcripts:
            _skip(skipped, recording, f"no transcript {recording.stem}.cha")
            continue
        words = participant_speech(transcripts[recording.stem].read_text(encoding="utf-8", errors="replace"),
                                   pause_tokens=pause_tokens, include_investigator=include_investigator)
        if not words:
            _skip(skipped, recording, f"{transcripts[recording.stem]}: no *PAR: speech")
            continue
        split = split_from_path(recording, root)
        rows.append({"audio_path": str(recording), "transcript": words, "label": label,
                     "speaker_id": recording.stem, "split": split, "language": language})
    return write_layout(rows, Path(out_dir), skipped, root)


def import_audio_only(root: str | Path, out_dir: str | Path, labels_file: str | Path | None = None,
                      language: str = "English", split: str | None = None) -> dict:
    """Audio-only corpora (ADReSSo 2021): labels from ad/cn (or cc/cd) folders, else from `labels_file`;
    split from a train/test folder in the path unless `split` is given."""
    root = _require_dir(root, "corpus")
    rows, skipped = [], []
    for recording, label in labelled_recordings(root, labels_file, skipped):
        rows.append({"audio_path": str(recording), "label": label, "speaker_id": recording.stem,
                     "split": split or split_from_path(recording, root), "language": language})
    return write_layout(rows, Path(out_dir), skipped, root)


def import_adresso(root: str | Path, out_dir: str | Path, labels_file: str | Path | None = None) -> dict:
    """ADReSSo 2021 (English, audio only: train with --modality audio)."""
    return import_audio_only(root, out_dir, labels_file, "English")


def import_adress_m(train_dir: str | Path, train_labels: str | Path, test_dir: str | Path, test_labels: str | Path,
                    out_dir: str | Path, train_language: str = "English", test_language: str = "Greek") -> dict:
    """ADReSS-M 2023: English training audio and Greek test audio, each labelled by its CSV (audio only:
    train with --modality audio --parser cross_lingual --train_languages English --test_languages Greek)."""
    train = import_audio_only(train_dir, out_dir, train_labels, train_language, split="train")
    test = import_audio_only(test_dir, out_dir, test_labels, test_language, split="test")
    return {"metadata": {**train["metadata"], **test["metadata"]}, "imported": train["imported"] + test["imported"],
            "skipped": train["skipped"] + test["skipped"],
            "by_language_split_label": {**train["by_language_split_label"], **test["by_language_split_label"]}}


def import_training_dset(root: str | Path, out_dir: str | Path, npy_sample_rate: int = 16000) -> dict:
    """The upstream layout: <root>/<Language>/textdata/**/<id>.txt and voicedata/**/<id>.npy (1-D waveform,
    written as <out>/<Language>/audio/<id>.wav), labels from class folders or <Language>/labels.csv."""
    root = _require_dir(root, "training_dset")
    rows, skipped = [], []
    for language_dir in sorted(p for p in root.iterdir() if (p / "textdata").is_dir() or (p / "voicedata").is_dir()):
        labels_csv = language_dir / "labels.csv"
        table = read_labels_file(labels_csv) if labels_csv.is_file() else {}
        texts = {p.stem: p for p in (language_dir / "textdata").rglob("*.txt")}
        voices = {p.stem: p for p in (language_dir / "voicedata").rglob("*.npy")}
        for stem in sorted(set(texts) | set(voices)):
            source = voices.get(stem) or texts[stem]
            label = folder_label(source, language_dir)
            label = label if label is not None else table.get(stem)
            if label is None:
                _skip(skipped, source, "no label (no class folder and not in labels.csv)")
                continue
            audio_path = ""
            if stem in voices:
                try:
                    waveform = np.load(voices[stem], allow_pickle=False)
                except (OSError, ValueError) as error:
                    _skip(skipped, voices[stem], f"unreadable .npy ({error})")
                    continue
                if waveform.ndim != 1 or not np.issubdtype(waveform.dtype, np.number) or waveform.size == 0:
                    _skip(skipped, voices[stem], f"not a 1-D waveform (shape {waveform.shape}, {waveform.dtype})")
                    continue
                wav = Path(out_dir) / language_dir.name / "audio" / f"{stem}.wav"
                wav.parent.mkdir(parents=True, exist_ok=True)
                sf.write(wav, waveform.astype(np.float32), npy_sample_rate)
                audio_path = str(wav)
            transcript = " ".join(texts[stem].read_text(encoding="utf-8").split()) if stem in texts else ""
            rows.append({"audio_path": audio_path, "transcript": transcript, "label": label, "speaker_id": stem,
                         "language": language_dir.name})
    if not rows and not skipped:
        raise CorpusError(f"{root}: no <Language>/textdata or <Language>/voicedata folders")
    return write_layout(rows, Path(out_dir), skipped, root)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    layouts = parser.add_subparsers(dest="layout", required=True)

    def layout(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = layouts.add_parser(name, help=help_text)
        sub.add_argument("--out_dir", required=True, help="the --data_dir for trainer.py")
        return sub

    pitt = layout("pitt", "DementiaBank Pitt (CHAT, Dementia/ and Control/)")
    pitt.add_argument("--root", required=True)
    pitt.add_argument("--audio_dir", default=None, help="where the media are, when not beside the .cha files")
    adress = layout("adress", "ADReSS 2020 (cc/cd folders, audio + CHAT)")
    adress.add_argument("--root", required=True)
    adress.add_argument("--labels_file", default=None, help="labels of the test audio (ID;Label)")
    adress.add_argument("--language", default="English", help="language folder to write")
    for sub in (pitt, adress):
        sub.add_argument("--pause_tokens", action="store_true",
                         help="CHAT pauses (.) (..) (...) become <short_pause> <pause> <long_pause>")
        sub.add_argument("--include_investigator", action="store_true", help="keep *INV: speech too")
    adresso = layout("adresso", "ADReSSo 2021 (audio only, ad/cn folders)")
    adresso.add_argument("--root", required=True)
    adresso.add_argument("--labels_file", default=None, help="labels of the test audio (ID/Dx CSV)")
    adress_m = layout("adress_m", "ADReSS-M 2023 (English train, Greek test, audio only)")
    for flag in ("--train_dir", "--train_labels", "--test_dir", "--test_labels"):
        adress_m.add_argument(flag, required=True)
    adress_m.add_argument("--train_language", default="English")
    adress_m.add_argument("--test_language", default="Greek")
    upstream = layout("training_dset", "the upstream textdata/ + voicedata/*.npy layout")
    upstream.add_argument("--root", required=True)
    upstream.add_argument("--npy_sample_rate", type=int, default=16000, help="sample rate of the .npy waveforms")
    return parser


def run_import(args: argparse.Namespace) -> dict:
    if args.layout == "pitt":
        return import_pitt(args.root, args.out_dir, args.audio_dir, args.pause_tokens, args.include_investigator)
    if args.layout == "adress":
        return import_adress(args.root, args.out_dir, args.labels_file, args.language, args.pause_tokens,
                             args.include_investigator)
    if args.layout == "adresso":
        return import_adresso(args.root, args.out_dir, args.labels_file)
    if args.layout == "adress_m":
        return import_adress_m(args.train_dir, args.train_labels, args.test_dir, args.test_labels, args.out_dir,
                               args.train_language, args.test_language)
    return import_training_dset(args.root, args.out_dir, args.npy_sample_rate)


def main(argv: list[str] | None = None) -> dict:
    summary = run_import(build_parser().parse_args(argv))
    print(f"imported {summary['imported']} recordings into {', '.join(summary['metadata'].values())} "
          f"({summary['by_language_split_label']}); skipped {len(summary['skipped'])}")
    return summary


def cli(argv: list[str] | None = None) -> int:
    return run_reporting_errors(lambda: main(argv), (CorpusError,))


if __name__ == "__main__":
    sys.exit(cli())
