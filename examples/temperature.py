"""The same question at two temperatures: settings live on the assistant.

Two assistants share one ChatOpenAI: one at temperature 0, one at 1.2. Their runs go
out together (``runner.batch``), each with its own assistant's temperature as a
per-call parameter; the shared ChatOpenAI is never changed.

Runs as is. With OPENAI_API_KEY set it talks to that endpoint through ChatOpenAI
(OPENAI_BASE_URL points it at any OpenAI-compatible server, OPENAI_MODEL names the
model, default gpt-4o-mini). Without a key it starts the package's offline echo model,
says so, and shows what each request carried. Data goes to LANGCHAIN_RETRO_DB if set,
else to a fresh temporary file; with RETRO_BASE_URL (and RETRO_API_KEY) set, to that
`langchain-retro serve` through an AssistantsAPIStore.

    .venv/bin/python examples/temperature.py    # or python, with .venv activated
"""

from __future__ import annotations

from _setup import MODEL, chat_model, open_store
from langchain_core.runnables import RunnableConfig

from langchain_retro import Assistant, ChatCompletionThread, ThreadRunner

QUESTION = "Invent a name for a coffee shop run by robots."
TEMPERATURES = (0.0, 1.2)


def main() -> None:
    with open_store() as store, chat_model() as (llm, server):
        configs: list[RunnableConfig] = []
        for temperature in TEMPERATURES:
            assistant = Assistant.create(
                store,
                model=MODEL,
                name=f"Namer at {temperature}",
                instructions="Answer with the name only.",
                temperature=temperature,
            )
            thread = ChatCompletionThread.create(store, assistant_id=assistant.id)
            configs.append({"configurable": {"thread_id": thread.id}})

        runner = ThreadRunner(store=store, llm=llm)
        print(f"you> {QUESTION}")
        replies = runner.batch([QUESTION] * len(configs), configs)
        for temperature, reply in zip(TEMPERATURES, replies, strict=True):
            print(f"assistant at temperature {temperature}> {reply.content}")

        if server is not None:
            print("what the offline model received:")
            for request in sorted(server.requests, key=lambda r: r.temperature or 0):
                print(f"  model={request.model} temperature={request.temperature}")
        print(f"the shared ChatOpenAI still has temperature={llm.temperature}")


if __name__ == "__main__":
    main()
