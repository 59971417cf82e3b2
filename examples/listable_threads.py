"""Listable, typed threads: what the Assistants API had and its successor lacks.

Runs as is on the embedded default store (SQLite): set LANGCHAIN_RETRO_DB to keep the
data in a file of your choice; otherwise a fresh temporary file is used, so every run
starts clean. No API key is needed: nothing here calls a model. With RETRO_BASE_URL
(and RETRO_API_KEY) set, the same code keeps its data on that `langchain-retro serve`
through an AssistantsAPIStore.

    .venv/bin/python examples/listable_threads.py    # or python, with .venv activated
"""

from __future__ import annotations

from datetime import UTC, datetime

from _setup import look_inside, open_store
from pydantic import Field

from langchain_retro import Assistant, ChatCompletionThread


class SupportThread(ChatCompletionThread):
    """A support conversation; every field below is kept in the thread's metadata."""

    customer: str
    priority: int = 0
    tags: list[str] = Field(default_factory=list)
    opened: datetime


def show(title: str, threads: list[SupportThread]) -> None:
    print(f"\n{title}:")
    for t in threads:
        print(f"  {t.id}  {t.customer:<8} priority={t.priority} tags={t.tags}")


def main() -> None:
    with open_store() as store:
        support = Assistant.create(
            store, model="gpt-4o-mini", name="Support", instructions="Be brief."
        )
        sales = Assistant.create(store, model="gpt-4o-mini", name="Sales")
        print(f"assistants: {support.id} (Support), {sales.id} (Sales)")

        customers = [("acme", 2), ("globex", 0), ("initech", 2), ("umbrella", 1)]
        for i, (customer, priority) in enumerate(customers):
            SupportThread.create(
                store,
                assistant_id=support.id,
                customer=customer,
                priority=priority,
                tags=["billing"] if i % 2 == 0 else ["login", "mobile"],
                opened=datetime(2026, 9, 1 + i, 9, 30, tzinfo=UTC),
                metadata={"region": "eu" if i < 2 else "us"},
            )
        SupportThread.create(
            store,
            assistant_id=sales.id,
            customer="hooli",
            opened=datetime(2026, 9, 9, tzinfo=UTC),
        )

        show(
            "threads of the Support assistant (newest first)",
            SupportThread.list(store, assistant_id=support.id).data,
        )
        show(
            "filtered on a typed field: priority=2",
            SupportThread.list(store, priority=2).data,
        )
        show(
            "filtered on free metadata: region=eu",
            SupportThread.list(store, metadata={"region": "eu"}).data,
        )

        print("\npaginated, two per page, oldest first:")
        after: str | None = None
        number = 1
        while True:
            page = SupportThread.list(store, order="asc", limit=2, after=after)
            names = ", ".join(t.customer for t in page.data)
            print(f"  page {number}: {names}  (has_more={page.has_more})")
            if not page.has_more:
                break
            after, number = page.last_id, number + 1

        first = SupportThread.list(store, customer="acme").data[0]
        print("\nthreads come back typed:")
        for name in ("customer", "priority", "tags", "opened"):
            value = getattr(first, name)
            text = value.isoformat() if isinstance(value, datetime) else repr(value)
            print(f"  {name:<9}{type(value).__name__:<9}{text}")
        print(f"  free metadata: {first.metadata}")

        first.delete(store)
        remaining = len(SupportThread.list(store, assistant_id=support.id).data)
        print(f"\ndeleted {first.id}; Support now has {remaining} threads")

        deleted = support.delete(store, threads="delete")
        print(f"deleted assistant {support.id} with its {deleted} threads")
        left = [t.customer for t in SupportThread.list(store).data]
        print(f"threads left in the store: {left}")
        print(f"\nlook inside: {look_inside(store)}")


if __name__ == "__main__":
    main()
