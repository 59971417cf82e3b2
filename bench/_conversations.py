"""Realistic conversations for the benchmarks: what every script under ``bench/`` sends.

Not a benchmark itself: the scripts beside it import it (Python puts a script's own
folder first on ``sys.path``). Human messages are 20 to 60 support-desk words; AI
messages are as long and carry the usage and response metadata ``ChatOpenAI`` returns.
"""

from __future__ import annotations

import random
import uuid

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

__all__ = ["WORDS", "conversation", "sentence"]

WORDS = (  # noqa: SIM905 - a paragraph reads better than 130 list items
    "the a to of and in is it you that for on with as this was be at by not are "
    "from or have an they which one can there all will would their what so if "
    "about more when up out time some could them into other than then now only "
    "its over also after use two how our work first well way even new want "
    "because any these give day most us order invoice refund account password "
    "reset shipping delivery tracking number address update payment card charge "
    "subscription plan upgrade cancel support ticket error message screen login "
    "browser app version install please thanks help issue problem question "
    "answer step check again later today tomorrow week month customer service "
    "team email phone receipt return policy"
).split()


def sentence(rng: random.Random) -> str:
    """One sentence of 20 to 60 words."""
    words = rng.choices(WORDS, k=rng.randint(20, 60))
    return " ".join(words).capitalize() + "."


def conversation(rng: random.Random, count: int) -> list[BaseMessage]:
    """``count`` alternating human and AI messages, human first."""
    out: list[BaseMessage] = []
    for i in range(count):
        if i % 2 == 0:
            out.append(HumanMessage(sentence(rng)))
            continue
        prompt, completion = rng.randint(200, 4000), rng.randint(20, 120)
        out.append(
            AIMessage(
                sentence(rng),
                id=f"run-{uuid.UUID(int=rng.getrandbits(128))}",
                usage_metadata={
                    "input_tokens": prompt,
                    "output_tokens": completion,
                    "total_tokens": prompt + completion,
                    "input_token_details": {"cache_read": 0},
                    "output_token_details": {"reasoning": 0},
                },
                response_metadata={
                    "token_usage": {
                        "completion_tokens": completion,
                        "prompt_tokens": prompt,
                        "total_tokens": prompt + completion,
                    },
                    "model_name": "gpt-4o-mini-2024-07-18",
                    "system_fingerprint": "fp_0ba0d124f1",
                    "finish_reason": "stop",
                    "logprobs": None,
                },
            )
        )
    return out
