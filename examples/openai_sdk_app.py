"""An application written for OpenAI's Assistants API, served by langchain-retro.

Everything in ``main`` is plain openai SDK code, as written for OpenAI: only the
client's ``base_url`` and key point at ``langchain-retro serve`` instead. The server
is RETRO_BASE_URL / RETRO_API_KEY if set, else one started here on 127.0.0.1 (see
``_setup.assistants_server``), answering with the real model if OPENAI_API_KEY is
set, else with the offline echo model.
"""

from __future__ import annotations

import warnings

from _setup import MODEL, assistants_server
from openai import AssistantEventHandler, OpenAI
from typing_extensions import override

# The SDK warns that the Assistants API is deprecated at OpenAI: it is served here.
warnings.filterwarnings("ignore", category=DeprecationWarning, module="openai")
warnings.filterwarnings("ignore", message=".*deprecated.*", category=DeprecationWarning)


class Printer(AssistantEventHandler):
    """Prints the reply as it streams."""

    @override
    def on_text_created(self, text: object) -> None:
        print("assistant (streamed)> ", end="", flush=True)

    @override
    def on_text_delta(self, delta: object, snapshot: object) -> None:
        print(getattr(delta, "value", ""), end="", flush=True)

    @override
    def on_run_step_done(self, run_step: object) -> None:
        print()


def main(client: OpenAI) -> None:
    """The application: unchanged Assistants API code."""
    assistant = client.beta.assistants.create(
        name="Math Tutor",
        instructions="You are a personal math tutor. Answer math questions briefly.",
        model=MODEL,
    )
    thread = client.beta.threads.create()
    client.beta.threads.messages.create(
        thread_id=thread.id,
        role="user",
        content="I need to solve the equation `3x + 11 = 14`. Can you help me?",
    )
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id,
        assistant_id=assistant.id,
        instructions="Please address the user as Jane Doe.",
    )
    print(f"run {run.id}: {run.status}")
    if run.status == "completed":
        messages = client.beta.threads.messages.list(thread_id=thread.id)
        for message in reversed(messages.data):
            print(f"{message.role}> {message.content[0].text.value}")  # type: ignore[union-attr]

    client.beta.threads.messages.create(
        thread_id=thread.id, role="user", content="And what is x squared?"
    )
    with client.beta.threads.runs.stream(
        thread_id=thread.id, assistant_id=assistant.id, event_handler=Printer()
    ) as stream:
        stream.until_done()
    steps = client.beta.threads.runs.steps.list(
        thread_id=thread.id, run_id=client.beta.threads.runs.list(thread.id).data[0].id
    )
    print(f"run steps: {[step.type for step in steps.data]}")
    client.beta.assistants.delete(assistant.id)


if __name__ == "__main__":
    with (
        assistants_server() as (base_url, api_key),
        OpenAI(base_url=base_url, api_key=api_key) as client,
    ):
        main(client)
