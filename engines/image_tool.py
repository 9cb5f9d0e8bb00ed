"""The image engine as a tool (issue 14): ``generate_image``, offered to the models that can
call tools, run through the persistent image queue.

A call is checked (bad arguments are refused with the reason, which the model reads), asked
about when the user wants to be asked, queued with the conversation and the reply it came
from, and awaited: the answer the model gets is the saved file's path and seed, or why
there is no image (the pipeline failed, the job was stopped). No Textual here.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from engines.conversations import ToolAnswer, ToolRequest
from engines.store import StoreError

if TYPE_CHECKING:
    from engines.config import DiffusionSettings
    from engines.diffusion import GenerationRequest, SizeLimits
    from engines.ollama_client import ChatEngine
    from engines.queue import ImageQueue, JobEnded, QueueEvent

log = logging.getLogger(__name__)

OFFER_TIMEOUT_S = 5.0
"""How long a reply waits to learn whether its model can call tools (``/api/show``)."""

Approve = Callable[["GenerationRequest", ToolRequest], Awaitable[bool]]
"""Asks the user whether to queue a job a model asked for: True to queue it."""


def answer_of(event: JobEnded) -> ToolAnswer:
    """What the model is told of a job that ended."""
    if event.error:
        return ToolAnswer(f"error: the image could not be made: {event.error}", "failed")
    result = event.result
    if result is None or not result.images:
        why = "the job was stopped before the image was finished"
        return ToolAnswer(f"error: {why}; no image was made", "failed")
    image = result.images[-1]
    p = image.parameters
    answer = {
        "status": "done",
        "path": str(image.path),
        "seed": p.seed,
        "width": p.width,
        "height": p.height,
        "steps": p.steps,
        "prompt": p.prompt,
    }
    return ToolAnswer(json.dumps(answer, ensure_ascii=False), "done", str(image.path))


class ImageTool:
    """``generate_image`` for the conversation service (``engines.conversations.Tools``)."""

    def __init__(
        self,
        queue: Callable[[], ImageQueue],
        defaults: DiffusionSettings,
        model: Callable[[], str],
        run_queue: Callable[[], None],
        *,
        limits: Callable[[], SizeLimits] | None = None,
        approve: Approve | None = None,
        enabled: bool = True,
    ) -> None:
        self.queue = queue
        """The app's image queue (made on first use)."""
        self.defaults = defaults
        self.model = model
        """The image model a job is queued for (the Image screen's)."""
        self.run_queue = run_queue
        """Makes sure a worker runs the queued jobs."""
        self.limits = limits
        self.approve = approve
        """None: a call is queued at once."""
        self.enabled = enabled
        self._capable: dict[tuple[str, str], bool] = {}

    async def offer(self, engine: ChatEngine, model: str) -> list[dict[str, Any]]:
        """The tool, for a model whose capabilities include ``tools`` (asked once)."""
        if not self.enabled:
            return []
        from engines.image_requests import tool_schema

        key = (engine.host, model)
        if key not in self._capable:
            details = engine.known(model)  # asked already (the header, the context meter)
            try:  # a server slow to answer gets the reply without the tool, not later
                if details is None:
                    details = await asyncio.wait_for(engine.show(model), OFFER_TIMEOUT_S)
            except TimeoutError:
                log.warning("no tools offered: %s did not say what %s can do", engine.host, model)
                return []
            self._capable[key] = "tools" in details.capabilities
        return [tool_schema()] if self._capable[key] else []

    async def call(self, request: ToolRequest) -> ToolAnswer:
        from engines.image_requests import TOOL_NAME, ToolArgumentError, request_from_arguments

        name = request.call.name
        if name != TOOL_NAME:
            return ToolAnswer(
                f"refused: there is no tool called {name!r}; the tool is {TOOL_NAME}", "refused"
            )
        try:
            job_request = request_from_arguments(
                request.call.arguments, self.defaults, self.limits() if self.limits else None
            )
        except ToolArgumentError as exc:
            log.info("tool call refused: %s", exc)
            return ToolAnswer(f"refused: {exc}", "refused")
        if self.approve is not None and not await self.approve(job_request, request):
            return ToolAnswer(
                "refused: the user declined to generate this image; do not ask again unless "
                "they say so",
                "refused",
            )
        return await self._run(job_request, request)

    async def _run(self, job_request: GenerationRequest, request: ToolRequest) -> ToolAnswer:
        from engines.queue import JobEnded

        queue = self.queue()
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[JobEnded] = loop.create_future()
        ours: list[int] = []

        def settle(event: JobEnded) -> None:
            if not ended.done():
                ended.set_result(event)

        def listener(event: QueueEvent) -> None:  # from the queue's worker thread
            # a job paused as it ran is the app quitting: the reply is stopped with it
            if not isinstance(event, JobEnded) or not ours or event.job.id != ours[0]:
                return
            if event.job.state != "paused":
                loop.call_soon_threadsafe(settle, event)

        queue.subscribe(listener)
        try:
            job = queue.add(
                job_request, self.model(), origin=(request.conversation_id, request.reply_id)
            )
            ours.append(job.id)
            queue.claim()
            self.run_queue()
            return answer_of(await ended)
        except StoreError as exc:
            return ToolAnswer(f"error: the image job could not be queued: {exc}", "failed")
        finally:
            queue.unsubscribe(listener)
