"""Import the ADReSS folder layout into the standard ``<out>/<Language>/metadata.csv`` layout.

ADReSS (DementiaBank Pitt, Cookie Theft) ships audio and CHAT transcripts in ``cc/`` (control) and
``cd/`` (dementia) folders, e.g. ``train/Full_wave_enhanced_audio/cc/S001.wav`` and
``train/transcription/cc/S001.cha``. The test half has no cc/cd folders; its labels come from a
file passed with --labels_file (ADReSS's ``meta_data_test.txt``: ``ID ; age ; gender ; Label ; mmse``).

Only the participant's speech (``*PAR:`` tiers, with their continuation lines) is kept, with CHAT
codes removed: timing bullets, [annotations], &=events, xxx, (.) pauses, <scopes>, +terminators,
@markers. Fillers (&uh, &-um) are kept as words: they are part of the signal.

    python projects/siglip_sam_dementia/importers.py --adress_dir ADReSS-IS2020-data --out_dir training_dset
"""

from __future__ import annotations

import argparse
import os
import re
import warnings
from pathlib import Path

import pandas as pd

from projects.siglip_sam_dementia.config import LABEL_ALIASES, LANGUAGES

AUDIO_SUFFIXES = {".wav", ".mp3", ".flac"}
CLASS_FOLDERS = {"cc": 0, "cd": 1}

_CHAT_PATTERNS = [
    (re.compile(r"\x15[^\x15]*\x15"), " "),  # media timing bullets
    (re.compile(r"\[[^\]]*\]"), " "),  # [/] [//] [* p:w] [+ gram] ... annotations
    (re.compile(r"&[=*]\S+"), " "),  # &=laughs, &*INV:mhm: events and interjections of others
    (re.compile(r"&[-+~]?(?=\w)"), ""),  # &uh, &-um (fillers), &+fragment: keep the word
    (re.compile(r"\((?:\.+|\d[\d.:]*)\)"), " "),  # (.) (..) (...) (1.5) pauses
    (re.compile(r"(?<!\S)(?:xxx|yyy|www)(?!\S)"), " "),  # unintelligible / untranscribed
    (re.compile(r"(?<!\S)0\S+"), " "),  # omitted words
    (re.compile(r"\+\S*"), " "),  # +... +/. +//. +"/. terminators and linkers
    (re.compile(r"@\S+"), ""),  # word@o, word@l special-form markers
    (re.compile(r"[<>‡„↫ˈˌ^:()]"), ""),  # scopes, tone marks, lengthening, omitted-sound parens
    (re.compile(r"(?<!\w)[.?!,;]+|[.?!,;]+(?!\w)"), " "),  # stray punctuation / utterance terminators
]


def participant_speech(chat_text: str, speaker_tier: str = "PAR") -> str:
    """The participant's words from a CHAT transcript, with CHAT codes removed."""
    utterances: list[str] = []
    current: list[str] | None = None
    for line in chat_text.splitlines():
        if line.startswith(("\t", " ")) and current is not None:  # continuation of the previous tier
            current.append(line.strip())
            continue
        current = None
        if line.startswith(f"*{speaker_tier}:"):
            current = [line.split(":", 1)[1].strip()]
            utterances.append(current)  # type: ignore[arg-type]
    text = " ".join(" ".join(parts) for parts in utterances)
    for pattern, replacement in _CHAT_PATTERNS:
        text = pattern.sub(replacement, text)
    return " ".join(text.split())


def read_labels_file(path: Path) -> dict[str, int]:
    """ID -> 0/1 from a table with ID and Label columns (ADReSS uses ';' and padded spaces)."""
    frame = pd.read_csv(path, sep=None, engine="python", dtype=str)
    frame.columns = [c.strip().lower() for c in frame.columns]
    if "id" not in frame.columns or "label" not in frame.columns:
        raise ValueError(f"{path}: labels file needs ID and Label columns, has {', '.join(frame.columns)}")
    labels = {}
    for _, row in frame.iterrows():
        value = LABEL_ALIASES.get(str(row["label"]).strip().lower())
        if value is None:
            raise ValueError(f"{path}: label {row['label']!r} for {row['id'].strip()} is not 0/1/cc/cd/...")
        labels[str(row["id"]).strip()] = value
    return labels


def import_adress(adress_dir: str | Path, out_dir: str | Path, labels_file: str | Path | None = None,
                  language: str = "English") -> dict:
    """Write ``<out_dir>/<language>/metadata.csv`` (audio referenced in place, transcripts inline).

    Returns counts: imported, skipped (with reasons), per split and label.
    """
    adress_dir, out_dir = Path(adress_dir), Path(out_dir)
    if not adress_dir.is_dir():
        raise FileNotFoundError(f"{adress_dir}: ADReSS folder does not exist")
    extra_labels = read_labels_file(Path(labels_file)) if labels_file else {}
    transcripts = {p.stem: p for p in adress_dir.rglob("*.cha")}
    target = out_dir / language
    target.mkdir(parents=True, exist_ok=True)

    rows, skipped = [], []
    for audio in sorted(p for p in adress_dir.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES):
        parts = [part.lower() for part in audio.relative_to(adress_dir).parts]
        folder_label = next((CLASS_FOLDERS[p] for p in parts if p in CLASS_FOLDERS), None)
        label = folder_label if folder_label is not None else extra_labels.get(audio.stem)
        reason = None
        if label is None:
            reason = "no label (not in a cc/ or cd/ folder and not in --labels_file)"
        elif audio.stem not in transcripts:
            reason = f"no transcript {audio.stem}.cha"
        else:
            text = participant_speech(transcripts[audio.stem].read_text(encoding="utf-8", errors="replace"))
            if not text:
                reason = f"{transcripts[audio.stem]}: no *PAR: speech"
        if reason:
            warnings.warn(f"skipping {audio}: {reason}", stacklevel=2)
            skipped.append({"file": str(audio), "reason": reason})
            continue
        split = "test" if "test" in parts else "train"
        rows.append({"audio_path": os.path.relpath(audio.resolve(), target.resolve()), "transcript": text,
                     "label": label, "speaker_id": audio.stem, "split": split})
    if not rows:
        raise ValueError(f"{adress_dir}: no importable recordings ({len(skipped)} skipped)")
    frame = pd.DataFrame(rows)
    frame.to_csv(target / "metadata.csv", index=False)
    return {"metadata": str(target / "metadata.csv"), "imported": len(frame), "skipped": skipped,
            "by_split_and_label": {f"{s}/{'dementia' if y else 'control'}": int(n)
                                   for (s, y), n in frame.groupby(["split", "label"]).size().items()}}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adress_dir", required=True, help="root of the ADReSS download (train/ and test/)")
    parser.add_argument("--out_dir", required=True, help="the --data_dir for trainer.py")
    parser.add_argument("--labels_file", default=None, help="labels for audio outside cc/cd folders (ID;Label)")
    parser.add_argument("--language", default="English", choices=LANGUAGES, help="language folder to write")
    args = parser.parse_args(argv)
    try:
        summary = import_adress(args.adress_dir, args.out_dir, args.labels_file, args.language)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    print(f"imported {summary['imported']} recordings into {summary['metadata']} "
          f"({summary['by_split_and_label']}); skipped {len(summary['skipped'])}")
    return summary


if __name__ == "__main__":
    main()
