"""Dementia probability for recordings and/or transcripts with a trained best_model.pth.

One recording (prints one JSON line):

    python predict.py --checkpoint outputs/<run>/best_model.pth --audio x.wav \
        --transcript "well the boy is taking cookies" --language English

Many recordings (writes one CSV, batched, under the run's mixed-precision setting):

    python predict.py --checkpoint outputs/<run>/best_model.pth --input recordings/ --output predictions.csv
    python predict.py --checkpoint outputs/<run>/best_model.pth --input list.csv --output predictions.csv

A folder: every wav/mp3/flac in it (recursively), with the transcript from a `.txt` of the same name
beside it when there is one. A CSV: columns `audio_path` and/or `transcript` / `transcript_path`
(paths relative to the CSV), optional `id` and `language`. The output has one row per input: id,
audio_path, language, probability, prediction (at the threshold chosen on the run's validation set),
language_seen_in_training, and `error` for a row that could not be scored (skipped, counted, never
zero-filled). The model has no language input: an unseen language is a zero-shot prediction.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
import torch
from transformers import AutoProcessor

from projects.siglip_sam_dementia.audio_features import (
    BadAudioError,
    LogMelParams,
    compute_log_mel,
    load_audio,
    split_into_windows,
)
from projects.siglip_sam_dementia.config import TrainingConfig
from projects.siglip_sam_dementia.data_processor import DementiaCollator
from projects.siglip_sam_dementia.importers import AUDIO_SUFFIXES
from projects.siglip_sam_dementia.losses import dementia_probability
from projects.siglip_sam_dementia.model import build_model
from shared.amp import AmpPolicy
from shared.checkpoint import CheckpointError, load_checkpoint, load_model_state
from shared.cli_errors import run_reporting_errors
from shared.hub import ModelNotFoundError, from_pretrained_or_error

OUTPUT_COLUMNS = ["id", "audio_path", "language", "probability", "prediction", "language_seen_in_training", "error"]


class InputError(ValueError):
    """A bad --input (missing folder, CSV without usable columns); one line naming the file."""


def trained_languages(config: TrainingConfig, languages_used: list[str] | None = None) -> list[str]:
    """The languages the model trained on (`languages_used`: every language the run read)."""
    if config.parser == "cross_lingual":
        return list(config.train_languages)
    return list(config.languages or languages_used or []) if config.parser == "all" else [config.parser]


class DementiaPredictor:
    """A best_model.pth with its config and validation threshold, ready to score recordings."""

    def __init__(self, checkpoint: str | Path, model_name: str | None = None, device: str | None = None):
        payload = load_checkpoint(checkpoint)
        if not isinstance(payload, dict) or "config" not in payload or "threshold" not in payload:
            raise CheckpointError(f"{checkpoint}: not a best_model.pth from trainer.py (needs config and threshold)")
        known = TrainingConfig.__dataclass_fields__
        self.config = TrainingConfig(**{k: v for k, v in payload["config"].items() if k in known})
        self.config.gradient_checkpointing = False  # inference only
        if model_name:  # e.g. the hub id when the run used a local copy that is not on this machine
            self.config.model_name = model_name
        self.threshold = float(payload["threshold"])
        self.trained_languages = trained_languages(self.config, payload.get("languages_used"))
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.amp = AmpPolicy.create(self.device, self.config.mixed_precision)  # as the run trained and validated
        self.model = build_model(self.config).eval()
        load_model_state(self.model, payload["model_state_dict"], strict=True, source_name=str(checkpoint))
        self.model.to(self.device)
        self.processor = from_pretrained_or_error(AutoProcessor.from_pretrained, self.config.model_name)
        self.collator = DementiaCollator(self.processor, self.config.modality, self.model.text_max_length,
                                         self.config.max_num_patches)
        self.log_mel_params = LogMelParams(self.config.sample_rate, self.config.n_fft, self.config.hop_length,
                                           self.config.n_mels)
        self.uses_audio = self.config.modality in ("multimodal", "audio")
        self.uses_text = self.config.modality in ("multimodal", "text")

    def item(self, audio_path: str | Path | None, transcript: str | None) -> dict:
        """One collator item; ValueError / BadAudioError name what is missing or unreadable."""
        if self.uses_audio and not audio_path:
            raise ValueError(f"this {self.config.modality} model needs --audio")
        if self.uses_text and not (transcript and str(transcript).strip()):
            raise ValueError(f"this {self.config.modality} model needs --transcript")
        windows = []
        if self.uses_audio:
            log_mel = compute_log_mel(load_audio(Path(audio_path), self.log_mel_params.sample_rate),
                                      self.log_mel_params)
            frames = max(1, round(self.config.window_seconds * self.log_mel_params.frames_per_second))
            windows = split_into_windows(log_mel, frames)
        text = " ".join(str(transcript or "").split()) if self.uses_text else ""
        return {"windows": windows, "transcript": text, "label": 0, "language": "", "speaker_id": ""}

    @torch.no_grad()
    def probabilities(self, items: list[dict]) -> list[float]:
        """Dementia probability of each item, scored as one batch."""
        inputs = self.collator(items)["inputs"]
        inputs = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        with self.amp.autocast():
            logits = self.model(**inputs)
        return dementia_probability(logits).cpu().tolist()

    def probability(self, audio_path: str | Path | None, transcript: str | None) -> float:
        return self.probabilities([self.item(audio_path, transcript)])[0]


def read_inputs(path: Path) -> pd.DataFrame:
    """id, audio_path, transcript, language for every recording of a folder or CSV (paths absolute)."""
    if path.is_dir():
        audio = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        if not audio:
            raise InputError(f"{path}: no wav/mp3/flac recordings in this folder")
        rows = []
        for file in audio:
            text_file = file.with_suffix(".txt")
            rows.append({"id": str(file.relative_to(path).with_suffix("")), "audio_path": str(file),
                         "transcript": text_file.read_text(encoding="utf-8") if text_file.is_file() else "",
                         "language": ""})
        return pd.DataFrame(rows)
    if not path.is_file():
        raise InputError(f"{path}: no such folder or CSV")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as error:  # noqa: BLE001 - pandas raises many types for a broken file
        raise InputError(f"{path}: unreadable CSV ({error})") from None
    if not {"audio_path", "transcript", "transcript_path"} & set(frame.columns):
        raise InputError(f"{path}: needs an audio_path and/or transcript (or transcript_path) column; "
                         f"has {', '.join(frame.columns)}")
    folder = path.parent
    out = pd.DataFrame({
        "id": frame["id"] if "id" in frame else frame.get("speaker_id", pd.Series(frame.index.astype(str))),
        "audio_path": [str(folder / p) if p else "" for p in frame.get("audio_path", [""] * len(frame))],
        "transcript": frame.get("transcript", pd.Series([""] * len(frame))),
        "language": frame.get("language", pd.Series([""] * len(frame))),
    })
    if "transcript_path" in frame:
        for index, relative in enumerate(frame["transcript_path"]):
            if relative and not out.at[index, "transcript"]:
                text_file = folder / relative
                out.at[index, "transcript"] = text_file.read_text(encoding="utf-8") if text_file.is_file() else ""
    return out


def predict_table(predictor: DementiaPredictor, inputs: pd.DataFrame, batch_size: int = 8) -> pd.DataFrame:
    """One output row per input row; unusable rows carry their `error` and no probability."""
    seen = set(predictor.trained_languages)
    rows, pending = [], []

    def flush() -> None:
        scored = predictor.probabilities([item for _, item in pending])
        for (row_index, _), probability in zip(pending, scored):
            rows[row_index].update(probability=probability,
                                   prediction="dementia" if probability >= predictor.threshold else "control")
        pending.clear()

    for record in inputs.itertuples(index=False):
        row = {"id": record.id, "audio_path": record.audio_path, "language": record.language, "probability": None,
               "prediction": None, "language_seen_in_training": (record.language in seen) if record.language else None,
               "error": ""}
        rows.append(row)
        try:
            pending.append((len(rows) - 1, predictor.item(record.audio_path or None, record.transcript)))
        except (ValueError, BadAudioError) as error:
            row["error"] = str(error).replace("--audio", "audio_path").replace("--transcript", "transcript")
        if len(pending) == batch_size:
            flush()
    if pending:
        flush()
    return pd.DataFrame(rows, columns=OUTPUT_COLUMNS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="best_model.pth of a training run")
    parser.add_argument("--audio", default=None, help="one wav/mp3/flac recording")
    parser.add_argument("--transcript", default=None, help="what the participant said (with --audio or alone)")
    parser.add_argument("--language", default=None,
                        help="reported with the result, flagged when the model never trained on it")
    parser.add_argument("--input", default=None, help="a folder of recordings or a CSV of them (batch mode)")
    parser.add_argument("--output", default=None, help="the CSV batch mode writes (required with --input)")
    parser.add_argument("--batch_size", type=int, default=8, help="recordings per forward pass in batch mode")
    parser.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available)")
    parser.add_argument("--model_name", default=None, help="override the backbone location saved in the run")
    return parser


def main(argv: list[str] | None = None) -> dict | pd.DataFrame:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.input and (args.audio or args.transcript):
        parser.error("--input (batch) and --audio/--transcript (one recording) are exclusive")
    if args.input and not args.output:
        parser.error("--input needs --output (the CSV to write)")
    if args.input:
        inputs = read_inputs(Path(args.input))
        predictor = DementiaPredictor(args.checkpoint, args.model_name, args.device)
        table = predict_table(predictor, inputs, args.batch_size)
        table.to_csv(args.output, index=False)
        failed = int((table["error"] != "").sum())
        print(f"wrote {len(table) - failed} predictions to {args.output} ({failed} skipped, see its error column; "
              f"threshold {predictor.threshold:.4f}, {predictor.amp.describe()})")
        return table
    predictor = DementiaPredictor(args.checkpoint, args.model_name, args.device)
    try:
        probability = predictor.probability(args.audio, args.transcript)
    except BadAudioError as error:
        raise InputError(str(error)) from None
    result = {"probability": probability, "threshold": predictor.threshold,
              "prediction": "dementia" if probability >= predictor.threshold else "control"}
    if args.language:
        result["language"] = args.language
        result["language_seen_in_training"] = args.language in predictor.trained_languages
    print(json.dumps(result))
    return result


def cli(argv: list[str] | None = None) -> int:
    return run_reporting_errors(lambda: main(argv), (CheckpointError, InputError, ModelNotFoundError, ValueError))


if __name__ == "__main__":
    sys.exit(cli())
