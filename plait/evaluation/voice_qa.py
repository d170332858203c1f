"""The voice assistant end to end: spoken questions about held-out scenes, transcribed, then
answered by the VLM, against the same VLM given the written question.

Scene ``i`` of the ``heldout`` split (colour+shape pairs no training image shows) is asked one
of its questions, drawn at random, in the first phrasing (the VQA evaluation's); so the kinds
come as often as scenes have them (colour most, shape least). espeak-ng
speaks it (:func:`plait.data.speech.synthesize`) with a held-out speaker of the speech data
(new voice variants and the en-gb-scotland accent, never in the recogniser's training) at a
drawn speed and pitch. Everything is a pure function of ``seed``.

Reported: ``voice_accuracy`` (answers to the spoken questions equal the reference),
``text_accuracy`` (the same VLM, questions written), ``asr_wer`` and ``asr_exact`` over those
questions, and ``voice_<kind>`` / ``text_<kind>`` per question kind.
"""

from __future__ import annotations

import random
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

from plait.data.scenes import QA, Scene, answer_right, scenes
from plait.data.speech import PITCHES, SPEEDS, Utterance, speakers, synthesize, transcript_of
from plait.evaluation.speech import score
from plait.inference.voice import VoiceAsker


def spoken_questions(n: int, seed: int = 0) -> list[tuple[Scene, QA, Utterance]]:
    """The first ``n`` held-out scenes, each with one question and how it is spoken."""
    if n <= 0:
        raise ValueError(f"need at least one question, got n={n}")
    who = speakers("heldout")
    rng = random.Random(f"voice-qa/{seed}")
    out = []
    for scene in scenes(n, "heldout", seed):
        q = rng.choice(scene.qa)
        voice, _, variant = rng.choice(who).partition("+")
        u = Utterance(q.question, transcript_of(q.question), q.kind, voice, variant,
                      rng.randint(*SPEEDS), rng.randint(*PITCHES))
        out.append((scene, q, u))
    return out


def evaluate_voice_qa(voice: VoiceAsker, n: int = 200, seed: int = 0, workers: int = 2,
                      asr_beams: int = 8) -> dict[str, float]:
    """Accuracy of spoken and of written questions about ``n`` held-out scenes (see the
    module docstring for every metric). The questions are transcribed with ``asr_beams``
    beams, as the speech recipe scores its held-out utterances; answered greedily."""
    items = spoken_questions(n, seed)
    with ThreadPoolExecutor(workers) as pool:  # each thread waits on an espeak-ng process
        audio = list(pool.map(synthesize, [u for _, _, u in items]))
    size = voice.asker.processor.config.crop_size
    images = [s.render(size) for s, _, _ in items]
    heard = voice.ask(images, audio, asr_beams=asr_beams)
    written = voice.asker.ask(images, [q.question for _, q, _ in items])
    right: dict[str, dict[str, list[bool]]] = {"voice": defaultdict(list),
                                               "text": defaultdict(list)}
    for (scene, q, _), h, a in zip(items, heard, written, strict=True):
        right["voice"][q.kind].append(answer_right(scene, q, h.answer))
        right["text"][q.kind].append(answer_right(scene, q, a))
    asr = score([u.transcript for _, _, u in items], [h.transcript for h in heard])
    out = {f"{how}_accuracy": sum(sum(v) for v in right[how].values()) / len(items)
           for how in ("voice", "text")}
    out.update({"asr_wer": asr["wer"], "asr_exact": asr["exact"]})
    for how in ("voice", "text"):
        out.update({f"{how}_{k}": sum(v) / len(v) for k, v in right[how].items()})
    return out
