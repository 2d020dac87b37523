"""Synthetic DementiaBank-style corpus for tests and the demo.

Writes the standard layout (``<out>/<Language>/metadata.csv`` + wav files) for English, Greek,
Spanish and Mandarin. Each speaker gives one picture-description-like recording; speakers with
dementia speak more slowly, pause longer and use more fillers and repetitions, and these cues are
present in BOTH the audio (silences, syllable rate, long filler vowels, repeated bursts) and the
transcript (filler words, repeated words). Recording conditions (noise floor, gain) do not depend on
the label, so the only shortcut is the one the task is about.

    python projects/siglip_sam_dementia/synthetic.py --out_dir /tmp/dementia_data --speakers 24
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from projects.siglip_sam_dementia.config import LANGUAGES

# Words a picture description would use, and the fillers speakers of each language use.
LEXICON: dict[str, tuple[list[str], list[str]]] = {
    "English": (
        "the boy is taking cookies from the jar while his mother washes dishes and the water "
        "overflows the sink the girl asks for a cookie the stool is falling over".split(),
        ["uh", "um", "er"],
    ),
    "Greek": (
        "το αγόρι παίρνει μπισκότα από το βάζο ενώ η μητέρα πλένει τα πιάτα και το νερό "
        "ξεχειλίζει το κορίτσι ζητά ένα μπισκότο το σκαμπό πέφτει".split(),
        ["εε", "εμ", "ααα"],
    ),
    "Spanish": (
        "el niño toma galletas del frasco mientras su madre lava los platos y el agua se "
        "desborda la niña pide una galleta el taburete se cae".split(),
        ["eh", "este", "em"],
    ),
    "Mandarin": (
        list("男孩从罐子里拿饼干妈妈在洗碗水从水槽里溢出来女孩要饼干凳子倒了"),
        ["嗯", "那个", "呃"],
    ),
}

# How each language's metadata spells its labels: the importer and loader accept all of these.
LABEL_SPELLINGS: dict[str, tuple[str, str]] = {
    "English": ("0", "1"),
    "Greek": ("HC", "AD"),
    "Spanish": ("control", "dementia"),
    "Mandarin": ("cc", "cd"),
}


@dataclass(frozen=True)
class SpeechStyle:
    """Label-dependent speaking style (dementia: slower, longer pauses, more fillers/repetitions)."""

    syllables_per_second: float
    mean_pause_seconds: float
    filler_probability: float
    repetition_probability: float


STYLES = {
    0: SpeechStyle(syllables_per_second=5.5, mean_pause_seconds=0.10, filler_probability=0.03, repetition_probability=0.02),
    1: SpeechStyle(syllables_per_second=2.5, mean_pause_seconds=0.60, filler_probability=0.40, repetition_probability=0.30),
}


def _syllable(f0: float, seconds: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A voiced syllable: a few harmonics of f0 with a vowel-like spectral tilt and a smooth envelope."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    pitch = f0 * (1.0 + 0.05 * rng.standard_normal())
    tone = sum((0.6 ** k) * np.sin(2 * np.pi * pitch * (k + 1) * t + rng.uniform(0, 2 * np.pi)) for k in range(5))
    return (np.hanning(len(t)) * tone).astype(np.float32)


def _words_for_recording(language: str, style: SpeechStyle, num_words: int, rng: np.random.Generator) -> list[tuple[str, bool]]:
    """The spoken token sequence: (token, is_filler). Repetitions repeat the previous word."""
    words, fillers = LEXICON[language]
    tokens: list[tuple[str, bool]] = []
    for _ in range(num_words):
        if rng.random() < style.filler_probability:
            tokens.append((str(rng.choice(fillers)), True))
        word = str(rng.choice(words))
        tokens.append((word, False))
        if rng.random() < style.repetition_probability:
            tokens.append((word, False))
    return tokens


def synthesize_recording(tokens: list[tuple[str, bool]], style: SpeechStyle, f0: float, sample_rate: int,
                         rng: np.random.Generator) -> np.ndarray:
    """Render tokens as audio: syllable bursts per word, a long low vowel per filler, silences between."""
    pieces: list[np.ndarray] = [np.zeros(int(0.2 * sample_rate), np.float32)]
    syllable_seconds = 1.0 / style.syllables_per_second
    for token, is_filler in tokens:
        if is_filler:
            pieces.append(0.7 * _syllable(0.85 * f0, rng.uniform(0.4, 0.7), sample_rate, rng))
        else:
            for _ in range(max(1, len(token) // 3)):
                pieces.append(_syllable(f0, syllable_seconds * rng.uniform(0.8, 1.2), sample_rate, rng))
        pause = rng.exponential(style.mean_pause_seconds)
        pieces.append(np.zeros(int(pause * sample_rate), np.float32))
    audio = np.concatenate(pieces)
    audio = 0.3 * audio / (np.abs(audio).max() + 1e-8)
    audio += 0.003 * rng.standard_normal(len(audio)).astype(np.float32)  # same noise floor for both labels
    return audio.astype(np.float32)


def make_synthetic_corpus(out_dir: str | Path, languages: tuple[str, ...] = LANGUAGES, speakers_per_language: int = 24,
                          words_per_recording: int = 14, sample_rate: int = 16000, seed: int = 0,
                          write_split_column: bool = False) -> Path:
    """Write ``<out_dir>/<Language>/{metadata.csv, audio/*.wav}``; half the speakers have dementia.

    With ``write_split_column`` a speaker-level ``split`` column (train/val/test) is written too.
    """
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    for language in languages:
        (out_dir / language / "audio").mkdir(parents=True, exist_ok=True)
        rows = []
        for index in range(speakers_per_language):
            label = index % 2
            speaker_id = f"{language[:2].upper()}{index:03d}"
            style = STYLES[label]
            tokens = _words_for_recording(language, style, words_per_recording, rng)
            audio = synthesize_recording(tokens, style, f0=rng.uniform(100, 240), sample_rate=sample_rate, rng=rng)
            relative_path = f"audio/{speaker_id}.wav"
            sf.write(out_dir / language / relative_path, audio, sample_rate)
            joiner = "" if language == "Mandarin" else " "
            row = {
                "audio_path": relative_path,
                "transcript": joiner.join(token for token, _ in tokens),
                "label": LABEL_SPELLINGS[language][label],
                "speaker_id": speaker_id,
            }
            if write_split_column:
                row["split"] = ("train", "train", "train", "train", "val", "test")[(index // 2) % 6]
            rows.append(row)
        pd.DataFrame(rows).to_csv(out_dir / language / "metadata.csv", index=False)
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out_dir", required=True)
    parser.add_argument("--languages", nargs="+", default=list(LANGUAGES), choices=LANGUAGES)
    parser.add_argument("--speakers", type=int, default=24, help="speakers per language (half with dementia)")
    parser.add_argument("--words", type=int, default=14, help="words per recording")
    parser.add_argument("--sample_rate", type=int, default=16000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--with_split", action="store_true", help="write a speaker-level split column")
    args = parser.parse_args(argv)
    path = make_synthetic_corpus(args.out_dir, tuple(args.languages), args.speakers, args.words, args.sample_rate,
                                 args.seed, args.with_split)
    print(f"wrote synthetic corpus to {path}")


if __name__ == "__main__":
    main()
