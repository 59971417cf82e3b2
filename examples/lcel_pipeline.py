"""ThreadRunner inside LCEL: composed with other runnables, streamed, batched, retried.

The runner is a Runnable: a step before it shapes the input, a parser after it turns
the stored reply into text, and the whole chain streams, batches over threads and
retries like any other.

Runs as is. With OPENAI_API_KEY set it talks to that endpoint through ChatOpenAI
(OPENAI_BASE_URL points it at any OpenAI-compatible server, OPENAI_MODEL names the
model, default gpt-4o-mini). Without a key it starts the package's offline echo model
and says so. Data goes to LANGCHAIN_RETRO_DB if set, else to a fresh temporary file.

    .venv/bin/python examples/lcel_pipeline.py    # or python, with .venv activated
"""

from __future__ import annotations

from _setup import MODEL, chat_model, database_path
from langchain_core.output_parsers import StrOutputParser
from langchain_core.runnables import RunnableConfig, RunnableLambda

from langchain_retro import Assistant, ChatCompletionThread, SQLiteStore, ThreadRunner

TICKETS = (
    "My invoice for March shows two charges for the same plan.",
    "The mobile app logs me out every time I switch networks.",
    "Can I move my subscription to another email address?",
)


def as_request(ticket: str) -> str:
    return f"Summarise this support ticket in at most eight words: {ticket}"


def main() -> None:
    path = database_path()
    print(f"database: {path}")
    with SQLiteStore(path) as store, chat_model() as (llm, _server):
        triage = Assistant.create(
            store, model=MODEL, name="Triage", instructions="Be terse.", temperature=0
        )
        runner = ThreadRunner(store=store, llm=llm, window=20)
        chain = RunnableLambda(as_request) | runner.with_retry() | StrOutputParser()

        configs: list[RunnableConfig] = [
            {
                "configurable": {
                    "thread_id": ChatCompletionThread.create(
                        store, assistant_id=triage.id
                    ).id
                },
                "max_concurrency": 2,
            }
            for _ in TICKETS
        ]

        print("streamed, ticket 1:")
        print("  ", end="")
        for piece in chain.stream(TICKETS[0], configs[0]):
            print(piece, end="", flush=True)
        print()

        print("batched, one thread per ticket:")
        for summary in chain.batch(list(TICKETS[1:]), configs[1:]):
            print(f"  {summary}")

        for config in configs:
            thread_id = config["configurable"]["thread_id"]
            print(f"thread {thread_id}: {store.count_messages(thread_id)} messages")


if __name__ == "__main__":
    main()
