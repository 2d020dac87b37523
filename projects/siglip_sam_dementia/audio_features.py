"""Audio -> log-mel spectrogram (librosa), cached on disk by file content and parameters.

The first epoch (or first run) does the audio work; every later read is one `np.load`. A changed
file or a changed parameter gives a different cache key, so a stale spectrogram is never reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import librosa
import numpy as np

MIN_DURATION_SECONDS = 0.1
SILENCE_PEAK = 1e-4  # peak |amplitude| below this is treated as a silent recording


class BadAudioError(ValueError):
    """A recording that cannot be used (unreadable, empty, silent); the message names file and reason."""


@dataclass(frozen=True)
class LogMelParams:
    sample_rate: int = 16000
    n_fft: int = 400
    hop_length: int = 160
    n_mels: int = 128
    top_db: float = 80.0

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop_length


def file_digest(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_audio(path: Path, sample_rate: int) -> np.ndarray:
    """Mono float32 audio at `sample_rate`; raises BadAudioError naming the file and the reason."""
    if not path.is_file():
        raise BadAudioError(f"{path}: audio file not found")
    try:
        with warnings.catch_warnings():  # librosa warns before its audioread fallback; we report below
            warnings.simplefilter("ignore")
            audio, _ = librosa.load(path, sr=sample_rate, mono=True)
    except Exception as error:  # librosa/soundfile/audioread raise many types for broken files
        detail = (str(error).splitlines() or [""])[0][:120]
        raise BadAudioError(f"{path}: unreadable audio ({type(error).__name__}{': ' + detail if detail else ''})") from None
    if audio.size < MIN_DURATION_SECONDS * sample_rate:
        raise BadAudioError(f"{path}: empty audio ({audio.size} samples, under {MIN_DURATION_SECONDS}s)")
    if not np.isfinite(audio).all():
        raise BadAudioError(f"{path}: audio contains NaN/inf samples")
    if np.abs(audio).max() < SILENCE_PEAK:
        raise BadAudioError(f"{path}: silent audio (peak amplitude below {SILENCE_PEAK:g})")
    return audio


def compute_log_mel(audio: np.ndarray, params: LogMelParams) -> np.ndarray:
    """(n_mels, frames) log-mel in [0, 1]: dB relative to the recording's peak, floored at -top_db."""
    mel = librosa.feature.melspectrogram(y=audio, sr=params.sample_rate, n_fft=params.n_fft,
                                         hop_length=params.hop_length, n_mels=params.n_mels)
    db = librosa.power_to_db(mel, ref=np.max, top_db=params.top_db)
    return ((db + params.top_db) / params.top_db).astype(np.float32)


class LogMelCache:
    """Computes log-mels once per (file content, parameters) and stores them as .npy files."""

    def __init__(self, cache_dir: str | Path, params: LogMelParams):
        self.cache_dir = Path(cache_dir)
        self.params = params
        self._params_key = hashlib.sha1(json.dumps(asdict(params), sort_keys=True).encode()).hexdigest()[:12]
        self.hits = 0
        self.misses = 0

    def cache_path(self, audio_path: Path) -> Path:
        return self.cache_dir / f"{file_digest(audio_path)}_{self._params_key}.npy"

    def get(self, audio_path: str | Path) -> Path:
        """Path of the cached (n_mels, frames) array for this recording, computing it when missing."""
        audio_path = Path(audio_path)
        if not audio_path.is_file():
            raise BadAudioError(f"{audio_path}: audio file not found")
        target = self.cache_path(audio_path)
        if target.exists():
            self.hits += 1
            return target
        self.misses += 1
        log_mel = compute_log_mel(load_audio(audio_path, self.params.sample_rate), self.params)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        temporary = target.with_suffix(f".tmp{os.getpid()}.npy")  # DDP ranks may race on one entry
        np.save(temporary, log_mel)
        temporary.replace(target)  # atomic: a killed run never leaves a half-written cache entry
        return target


def split_into_windows(log_mel: np.ndarray, window_frames: int) -> list[np.ndarray]:
    """Cut (n_mels, T) into consecutive (n_mels, <= window_frames) pieces.

    A tail shorter than half a window joins the previous piece instead of becoming a sliver that
    NaFlex would blow up to fill the patch budget.
    """
    total = log_mel.shape[1]
    starts = list(range(0, total, window_frames))
    if len(starts) > 1 and total - starts[-1] < window_frames // 2:
        starts.pop()
    bounds = [*starts[1:], total]
    return [log_mel[:, start:end] for start, end in zip(starts, bounds)]
