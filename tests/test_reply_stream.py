"""The hand-over of a streamed reply from its reading thread to the event loop."""

from __future__ import annotations

import asyncio
import threading

from engines.reply_stream import Feed


async def test_items_put_together_are_taken_together_and_in_order() -> None:
    feed = Feed(asyncio.get_running_loop())
    done = threading.Event()

    def produce() -> None:
        for i in range(200):
            feed.put(i)
        done.set()

    threading.Thread(target=produce).start()
    await asyncio.to_thread(done.wait)
    got: list[object] = []
    batches = 0
    while len(got) < 200:
        got += await asyncio.wait_for(feed.get(), 5)
        batches += 1
    assert got == list(range(200))
    assert batches < 10, "one wake-up of the loop takes what has come, not one per item"


async def test_an_urgent_item_comes_at_once_with_those_before_it() -> None:
    loop = asyncio.get_running_loop()
    feed = Feed(loop)
    feed.put("first", urgent=True)
    assert await asyncio.wait_for(feed.get(), 5) == ["first"]
    # a batched wake-up is now due only after BATCH_S: an urgent item overtakes it
    await asyncio.to_thread(feed.put, "middle")
    await asyncio.to_thread(feed.put, "last", urgent=True)
    got: list[object] = []
    while len(got) < 2:
        got += await asyncio.wait_for(feed.get(), 5)
    assert got == ["middle", "last"]


async def test_a_closed_loop_tells_the_thread_to_stop() -> None:
    other = asyncio.new_event_loop()
    feed = Feed(other)
    other.close()
    assert feed.put("late") is False
