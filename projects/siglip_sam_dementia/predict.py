"""Dementia probability for one recording and/or transcript with a trained best_model.pth.

    python predict.py --checkpoint outputs/<run>/best_model.pth --audio x.wav \
        --transcript "well the boy is taking cookies" --language English

Prints one JSON line: probability of dementia, the decision at the threshold chosen on the run's
validation set, and whether the language was among the languages the model was trained on
(the model has no language input; an unseen language is a zero-shot prediction).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from transformers import AutoProcessor

from projects.siglip_sam_dementia.audio_features import (
    BadAudioError,
    LogMelParams,
    compute_log_mel,
    load_audio,
    split_into_windows,
)
from projects.siglip_sam_dementia.config import LANGUAGES, TrainingConfig
from projects.siglip_sam_dementia.data_processor import DementiaCollator
from projects.siglip_sam_dementia.losses import dementia_probability
from projects.siglip_sam_dementia.model import build_model
from shared.checkpoint import CheckpointError, load_checkpoint, load_model_state


def trained_languages(config: TrainingConfig) -> list[str]:
    if config.parser == "cross_lingual":
        return list(config.train_languages)
    return list(config.languages) if config.parser == "all" else [config.parser]


class DementiaPredictor:
    """A best_model.pth with its config and validation threshold, ready to score recordings."""

    def __init__(self, checkpoint: str | Path, model_name: str | None = None):
        payload = load_checkpoint(checkpoint)
        if not isinstance(payload, dict) or "config" not in payload or "threshold" not in payload:
            raise CheckpointError(f"{checkpoint}: not a best_model.pth from trainer.py (needs config and threshold)")
        self.config = TrainingConfig(**payload["config"])
        if model_name:  # e.g. the hub id when the run used a local copy that is not on this machine
            self.config.model_name = model_name
        self.threshold = float(payload["threshold"])
        self.model = build_model(self.config).eval()
        load_model_state(self.model, payload["model_state_dict"], strict=True)
        self.processor = AutoProcessor.from_pretrained(self.config.model_name)
        self.collator = DementiaCollator(self.processor, self.config.modality, self.model.text_max_length,
                                         self.config.max_num_patches)
        self.log_mel_params = LogMelParams(self.config.sample_rate, self.config.n_fft, self.config.hop_length,
                                           self.config.n_mels)

    @torch.no_grad()
    def probability(self, audio_path: str | Path | None, transcript: str | None) -> float:
        uses_audio = self.config.modality in ("multimodal", "audio")
        uses_text = self.config.modality in ("multimodal", "text")
        if uses_audio and not audio_path:
            raise ValueError(f"this {self.config.modality} model needs --audio")
        if uses_text and not (transcript and transcript.strip()):
            raise ValueError(f"this {self.config.modality} model needs --transcript")
        windows = []
        if uses_audio:
            log_mel = compute_log_mel(load_audio(Path(audio_path), self.log_mel_params.sample_rate),
                                      self.log_mel_params)
            frames = max(1, round(self.config.window_seconds * self.log_mel_params.frames_per_second))
            windows = split_into_windows(log_mel, frames)
        batch = self.collator([{"windows": windows, "transcript": " ".join((transcript or "").split()),
                                "label": 0, "language": "", "speaker_id": ""}])
        return float(dementia_probability(self.model(**batch["inputs"]))[0])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="best_model.pth of a training run")
    parser.add_argument("--audio", default=None, help="wav/mp3/flac recording")
    parser.add_argument("--transcript", default=None, help="what the participant said")
    parser.add_argument("--language", choices=LANGUAGES, default=None,
                        help="reported with the result, flagged when the model never trained on it")
    parser.add_argument("--model_name", default=None, help="override the backbone location saved in the run")
    args = parser.parse_args(argv)
    try:
        predictor = DementiaPredictor(args.checkpoint, args.model_name)
        probability = predictor.probability(args.audio, args.transcript)
    except (CheckpointError, BadAudioError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    result = {"probability": probability, "threshold": predictor.threshold,
              "prediction": "dementia" if probability >= predictor.threshold else "control"}
    if args.language:
        result["language"] = args.language
        result["language_seen_in_training"] = args.language in trained_languages(predictor.config)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
