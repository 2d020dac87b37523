"""CHAT transcripts (TalkBank / DementiaBank `.cha`): the speakers' `@ID` headers and their words.

Only the chosen tiers are kept (the participant's `*PAR:` by default; the investigator's `*INV:` is
excluded unless asked), with their continuation lines, and CHAT codes removed: timing bullets,
[annotations], &=events, xxx, <scopes>, +terminators, @markers, omitted words. Retraced words stay
(they were spoken) and fillers (&uh, &-um) stay as words: both are signal for dementia detection.
Pause codes `(.)`, `(..)`, `(...)` and timed pauses `(1.5)` are dropped, or become explicit tokens
with `pause_tokens=True` (pauses carry signal too).
"""

from __future__ import annotations

import re

# (.) short, (..) medium, (...) long; a timed pause (2.5) counts as long.
PAUSE_TOKENS = {1: "<short_pause>", 2: "<pause>", 3: "<long_pause>"}
# ISO 639-3 codes of @ID lines -> language folder names (the documented four first); others keep the code.
LANGUAGE_CODES = {"eng": "English", "ell": "Greek", "gre": "Greek", "spa": "Spanish", "zho": "Mandarin",
                  "cmn": "Mandarin", "chi": "Mandarin", "yue": "Cantonese", "deu": "German", "fra": "French"}

_PAUSE = re.compile(r"\((\.{1,3})\)|\(\d[\d.:]*\)")
_PLACEHOLDER = "\ue000{}\ue000"  # private-use characters: no CHAT pattern below touches them
_CHAT_PATTERNS = [
    (re.compile(r"\x15[^\x15]*\x15"), " "),  # media timing bullets
    (re.compile(r"\[[^\]]*\]"), " "),  # [/] [//] [* p:w] [+ gram] ... annotations
    (re.compile(r"&[=*]\S+"), " "),  # &=laughs, &*INV:mhm: events and interjections of others
    (re.compile(r"&[-+~]?(?=\w)"), ""),  # &uh, &-um (fillers), &+fragment: keep the word
    (_PAUSE, " "),  # pauses (already tokens when asked for)
    (re.compile(r"(?<!\S)(?:xxx|yyy|www)(?!\S)"), " "),  # unintelligible / untranscribed
    (re.compile(r"(?<!\S)0\S+"), " "),  # omitted words
    (re.compile(r"\+\S*"), " "),  # +... +/. +//. +"/. terminators and linkers
    (re.compile(r"@\S+"), ""),  # word@o, word@l special-form markers
    (re.compile(r"[<>‡„↫ˈˌ^:()]"), ""),  # scopes, tone marks, lengthening, omitted-sound parens
    (re.compile(r"(?<!\w)[.?!,;]+|[.?!,;]+(?!\w)"), " "),  # stray punctuation / utterance terminators
]


def speaker_ids(chat_text: str) -> dict[str, dict[str, str]]:
    """`@ID: language|corpus|code|age|sex|group|SES|role|education|custom|` -> {code: fields}."""
    ids = {}
    for line in chat_text.splitlines():
        if line.startswith("@ID:"):
            fields = [f.strip() for f in line.split(":", 1)[1].split("|")] + [""] * 10
            ids[fields[2]] = {"language": fields[0], "corpus": fields[1], "age": fields[3], "sex": fields[4],
                              "group": fields[5], "role": fields[7]}
    return ids


def language_name(code: str) -> str:
    """'eng' -> 'English'; a multilingual 'eng, spa' is named by its first code."""
    first = code.replace(",", " ").split()[0] if code.strip() else "eng"
    return LANGUAGE_CODES.get(first.lower(), first)


def tier_lines(chat_text: str, tiers: tuple[str, ...] = ("PAR",)) -> list[str]:
    """The utterances of the given speaker tiers, each with its continuation lines joined."""
    utterances: list[list[str]] = []
    current: list[str] | None = None
    for line in chat_text.splitlines():
        if line.startswith(("\t", " ")) and current is not None:  # continuation of the previous tier
            current.append(line.strip())
            continue
        current = None
        speaker = line[1:].split(":", 1)[0] if line.startswith("*") else None
        if speaker in tiers:
            current = [line.split(":", 1)[1].strip()]
            utterances.append(current)
    return [" ".join(parts) for parts in utterances]


def _pause_token(match: re.Match) -> str:
    dots = match.group(1)
    return f" {_PLACEHOLDER.format(len(dots) if dots else 3)} "


def clean_utterance(text: str, pause_tokens: bool = False) -> str:
    if pause_tokens:
        text = _PAUSE.sub(_pause_token, text)
    for pattern, replacement in _CHAT_PATTERNS:
        text = pattern.sub(replacement, text)
    if pause_tokens:
        for length, token in PAUSE_TOKENS.items():
            text = text.replace(_PLACEHOLDER.format(length), token)
    return " ".join(text.split())


def participant_speech(chat_text: str, speaker_tier: str = "PAR", pause_tokens: bool = False,
                       include_investigator: bool = False) -> str:
    """The participant's words (and the investigator's when asked) with CHAT codes removed."""
    tiers = (speaker_tier, "INV") if include_investigator else (speaker_tier,)
    return " ".join(t for t in (clean_utterance(u, pause_tokens) for u in tier_lines(chat_text, tiers)) if t)
