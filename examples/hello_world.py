"""Hello world: an assistant, a thread, and two runs through Chat Completions.

Runs as is. With OPENAI_API_KEY set it talks to that endpoint through ChatOpenAI
(OPENAI_BASE_URL points it at any OpenAI-compatible server, OPENAI_MODEL names the
model, default gpt-4o-mini). Without a key it starts the package's offline echo model
and says so. Data goes to LANGCHAIN_RETRO_DB if set, else to a fresh temporary file;
with RETRO_BASE_URL (and RETRO_API_KEY) set, to that `langchain-retro serve` through
an AssistantsAPIStore, the runs still completed here.

    .venv/bin/python examples/hello_world.py    # or python, with .venv activated
"""

from __future__ import annotations

from _setup import MODEL, chat_model, open_store
from langchain_core.runnables import RunnableConfig

from langchain_retro import Assistant, ChatCompletionThread, ThreadRunner


def main() -> None:
    with open_store() as store, chat_model() as (llm, _server):
        assistant = Assistant.create(
            store,
            model=MODEL,
            name="Greeter",
            instructions="Answer in one short sentence.",
        )
        thread = ChatCompletionThread.create(store, assistant_id=assistant.id)
        print(f"assistant {assistant.id}, thread {thread.id}")

        runner = ThreadRunner(store=store, llm=llm)
        config: RunnableConfig = {"configurable": {"thread_id": thread.id}}
        for question in ("Hello! Who are you?", "What did I just ask you?"):
            print(f"you> {question}")
            reply = runner.invoke(question, config)
            print(f"assistant> {reply.content}")

        thread = ChatCompletionThread.retrieve(store, thread.id)
        count = store.count_messages(thread.id)
        print(f"thread {thread.id}: {count} messages, hwm {thread.hwm}")


if __name__ == "__main__":
    main()
