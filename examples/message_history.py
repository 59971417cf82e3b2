"""A thread as LangChain chat message history, then continued by ThreadRunner.

``RunnableWithMessageHistory`` keeps its conversation in an Assistants-style thread
through ``AssistantThreadChatMessageHistory``. The thread is an ordinary
ChatCompletionThread: ThreadRunner can take the same conversation over.

Runs as is. With OPENAI_API_KEY set it talks to that endpoint through ChatOpenAI
(OPENAI_BASE_URL points it at any OpenAI-compatible server, OPENAI_MODEL names the
model, default gpt-4o-mini). Without a key it starts the package's offline echo model
and says so. Data goes to LANGCHAIN_RETRO_DB if set, else to a fresh temporary file.

    .venv/bin/python examples/message_history.py    # or python, with .venv activated
"""

from __future__ import annotations

import warnings

from _setup import MODEL, chat_model, database_path
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.history import RunnableWithMessageHistory

from langchain_retro import (
    Assistant,
    AssistantThreadChatMessageHistory,
    ChatCompletionThread,
    SQLiteStore,
    ThreadRunner,
)

# RunnableWithMessageHistory and BaseChatMessageHistory are deprecated upstream (to go
# in langchain-core 2.0), but they are what LCEL code plugs histories into today.
warnings.filterwarnings("ignore", ".*deprecated", DeprecationWarning)

INSTRUCTIONS = "You are a patient tutor. Answer in two sentences at most."


def main() -> None:
    path = database_path()
    print(f"database: {path}")
    with SQLiteStore(path) as store, chat_model() as (llm, _server):
        tutor = Assistant.create(store, model=MODEL, instructions=INSTRUCTIONS)
        thread = ChatCompletionThread.create(store, assistant_id=tutor.id)

        prompt = ChatPromptTemplate.from_messages(
            [
                ("system", INSTRUCTIONS),
                MessagesPlaceholder("history"),
                ("human", "{question}"),
            ]
        )
        chat = RunnableWithMessageHistory(
            prompt | llm,
            lambda session_id: AssistantThreadChatMessageHistory(store, session_id),
            input_messages_key="question",
            history_messages_key="history",
        )
        session: RunnableConfig = {"configurable": {"session_id": thread.id}}
        for question in ("What is a prime number?", "Is 91 one?"):
            print(f"you> {question}")
            reply = chat.invoke({"question": question}, session)
            print(f"tutor (history)> {reply.content}")

        # The same thread, continued by the runner: it sees the whole conversation.
        runner = ThreadRunner(store=store, llm=llm)
        question = "And 97?"
        print(f"you> {question}")
        reply = runner.invoke(question, {"configurable": {"thread_id": thread.id}})
        print(f"tutor (runner)> {reply.content}")

        history = AssistantThreadChatMessageHistory(store, thread.id)
        print(f"thread {thread.id} holds {len(history.messages)} messages:")
        for message in history.messages:
            print(f"  {message.type:>5}: {message.content}")


if __name__ == "__main__":
    main()
