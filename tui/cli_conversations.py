"""``llm-pessoal chat`` through the conversation service, and ``llm-pessoal conversations``.

``chat "MSG"`` sends one message and prints the reply (nothing is saved);
``chat --conversation ID|last "MSG"`` goes on with a saved conversation and saves to it;
``--regenerate`` writes a new version of its last reply (the earlier one is kept).
``conversations list | show ID | export ID | rm ID`` read and manage the saved ones, each
with ``--json`` where it prints.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tui.cli_base import (
    EXIT_FAIL,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    UsageError,
    command_store,
    err,
    open_command_store,
    read_stdin_text,
)
from tui.cli_hosts import chosen
from tui.text import visible

if TYPE_CHECKING:
    from engines.config import Settings
    from engines.conversations import ReplyEvent
    from engines.hosts import HostRegistry
    from engines.ollama_client import ChatEngine
    from engines.store import Conversation, Store


def add_chat_options(chat: argparse.ArgumentParser) -> None:
    chat.add_argument(
        "--conversation",
        "-c",
        metavar="ID|last",
        help="go on with a saved conversation (its id, or 'last' for the newest) and save to it",
    )
    chat.add_argument(
        "--regenerate",
        action="store_true",
        help="write a new version of the conversation's last reply (needs --conversation; "
        "the earlier version is kept)",
    )
    from engines.chat_options import SPECS

    chat.add_argument(
        "--option",
        "-o",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a generation option, repeatable (stop adds a sequence each time); with "
        "--conversation it is saved to it. Keys: "
        + "; ".join(f"{s.key}: {s.allowed()}" for s in SPECS if s.key != "system"),
    )
    chat.add_argument(
        "--preset",
        "-p",
        metavar="NAME",
        help="start from a preset's system prompt, options and model (`llm-pessoal presets "
        "list` shows them); --model, --system and --option override it",
    )
    chat.add_argument(
        "--image",
        "-i",
        action="append",
        default=[],
        metavar="FILE",
        help="attach an image for a vision model, repeatable (scaled to [chat] image_max_side "
        "for the request)",
    )
    chat.add_argument(
        "--file",
        "-f",
        action="append",
        default=[],
        metavar="FILE",
        help="add a text file to the message as context, in a fenced block under its name, "
        "repeatable ([chat] file_max_kb)",
    )


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    conversations = sub.add_parser(
        "conversations", help="the saved conversations: list, show, export or delete one"
    )
    actions = conversations.add_subparsers(dest="conversations_command", metavar="ACTION")
    listing = actions.add_parser("list", help="the conversations, newest first")
    listing.add_argument("--search", metavar="TEXT", help="only those whose title or text has it")
    listing.add_argument("--json", action="store_true", help="print JSON")
    show = actions.add_parser("show", help="a conversation's messages, as it reads now")
    show.add_argument("id", metavar="ID|last")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.add_argument(
        "--all", action="store_true", help="every version and branch, not only the current path"
    )
    export = actions.add_parser("export", help="a conversation as Markdown, on stdout")
    export.add_argument("id", metavar="ID|last")
    export.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    rm = actions.add_parser("rm", help="delete a conversation (asks first on a terminal)")
    rm.add_argument("id", metavar="ID|last")
    rm.add_argument("--yes", "-y", action="store_true", help="do not ask (needed off a terminal)")


def _find(store: Store, ref: str) -> Conversation:
    if ref == "last":
        newest = store.conversations()
        if not newest:
            raise UsageError("there is no saved conversation yet")
        return newest[0]
    try:
        conversation_id = int(ref)
    except ValueError:
        raise UsageError(
            f"{ref!r} is not a conversation: give its id (a number) or 'last'"
        ) from None
    conversation = store.conversation(conversation_id)
    if conversation is None:
        raise UsageError(
            f"there is no conversation {conversation_id}: `llm-pessoal conversations list` "
            "shows them"
        )
    return conversation


# -- chat ------------------------------------------------------------------------------------


async def run_chat(
    settings: Settings,
    engine: ChatEngine,
    args: argparse.Namespace,
    hosts: HostRegistry | None = None,
) -> int:
    """``chat``: one reply, streamed to stdout as it comes (or printed whole); with several
    Ollama servers, from ``--host``, else the conversation's, else the rule's."""
    import tempfile

    from engines.attachments import (
        AttachmentError,
        VisionRequired,
        load_image,
        read_text_file,
        require_vision,
        with_files,
    )
    from engines.chat_options import OptionError, apply, defaults_from_settings, parse_assignments
    from engines.chat_types import ChatError, ModelNotFound, OllamaUnavailable
    from engines.conversations import ConversationError, ConversationService, ReplyText
    from engines.presets import PresetError, Presets
    from engines.store import Store, StoreError

    message: str | None = args.message
    if args.regenerate and not args.conversation:
        err("--regenerate needs --conversation ID|last: which conversation's reply to redo")
        return EXIT_USAGE
    if args.regenerate and message:
        err("--regenerate writes a new version of the last reply: give no message with it")
        return EXIT_USAGE
    if message == "-":
        message = read_stdin_text("message")
    if not args.regenerate and not (message or "").strip():
        err("the message is empty: give the text to send (or '-' to read it from stdin)")
        return EXIT_USAGE
    try:
        store = open_command_store(settings) if args.conversation else Store.memory()
    except StoreError as exc:
        err(str(exc))
        return EXIT_FAIL
    scratch = tempfile.TemporaryDirectory(prefix="llm-pessoal-")  # an unsaved chat's images
    engine.image_max_side = settings.chat.image_max_side
    try:
        host = chosen(hosts, getattr(args, "host", None)) if hosts is not None else None
        several = hosts if hosts is not None and hosts.multi else None
        service = ConversationService(
            store, engine, save_interval=settings.chat.save_interval, hosts=several
        )
        changes = parse_assignments(args.option, base=Path.cwd())
        if args.system is not None:
            changes["system"] = args.system
        preset = None
        if args.preset:
            saved = store if args.conversation else open_command_store(settings)
            try:
                preset = Presets(saved, defaults_from_settings(settings)).get(args.preset)
            finally:
                if saved is not store:
                    saved.close()
        if args.conversation:
            conversation = _find(store, args.conversation)
            model = args.model or (preset.model if preset and preset.model else "")
            options = preset.options if preset else conversation.options
            if (model and model != conversation.model) or changes or preset:
                store.update_settings(
                    conversation.id,
                    model or conversation.model,
                    apply(options, changes, base=Path.cwd()),
                )
                conversation = store.conversation(conversation.id) or conversation
            if several is not None and host and host != conversation.host:
                store.set_host(conversation.id, host)
                conversation = store.conversation(conversation.id) or conversation
        else:
            options = preset.options if preset else defaults_from_settings(settings)
            options = apply(options, changes, base=Path.cwd())
            model = args.model or (preset.model if preset and preset.model else "")
            model = model or settings.ollama.default_model
            conversation = service.new_conversation(
                model, options, message or "", host=(host or "") if several else ""
            )
        if several is not None and several.find(conversation.host) is None:
            await several.check_all()  # the rule needs to know who has what (each in its timeout)
        files = [read_text_file(f, settings.chat.file_max_kb * 1000, Path.cwd()) for f in args.file]
        images = [
            load_image(
                f,
                settings.paths.attachments if args.conversation else Path(scratch.name),
                settings.chat.image_max_mb * 1_000_000,
                Path.cwd(),
            )
            for f in args.image
        ]
        if images:
            seeing = engine
            if several is not None:  # ask the server the reply will go to
                known = conversation.host if several.find(conversation.host) else None
                seeing = several.route(conversation.model, known).engine
            await require_vision(seeing, conversation.model)
        if args.regenerate:
            reply = service.regenerate(conversation)
        else:
            reply = service.send(conversation, with_files(message or "", files), images)
        show = visible if sys.stdout.isatty() else (lambda text: text)
        out = sys.stdout
        task = asyncio.current_task()
        reader_gone = False

        def write(event: ReplyEvent) -> None:
            nonlocal reader_gone
            if isinstance(event, ReplyText) and not args.no_stream and not reader_gone:
                try:
                    out.write(show(event.text))
                    out.flush()
                except BrokenPipeError:  # `| head`: stop the reply, and the server with it
                    reader_gone = True
                    if task is not None:
                        task.cancel()

        service.subscribe(write)
        try:
            finished = await service.run(reply)
        except asyncio.CancelledError:
            if reader_gone:
                raise BrokenPipeError from None
            raise
    except (UsageError, ConversationError, OptionError, AttachmentError, PresetError) as exc:
        err(str(exc))
        return EXIT_USAGE
    except VisionRequired as exc:
        err(str(exc))
        return EXIT_USAGE
    except ChatError as exc:
        err(str(exc))
        return EXIT_UNAVAILABLE if isinstance(exc, OllamaUnavailable | ModelNotFound) else EXIT_FAIL
    except StoreError as exc:
        err(str(exc))
        return EXIT_FAIL
    finally:
        store.close()
        scratch.cleanup()
    written = finished.content
    if args.no_stream:  # printed whole, and only when whole
        written = finished.content if finished.status == "done" else ""
        out.write(show(written))
    if written and not written.endswith("\n"):
        out.write("\n")
    out.flush()
    if finished.error:
        err(finished.error)
        return (
            EXIT_UNAVAILABLE if finished.failure in ("unreachable", "model-missing") else EXIT_FAIL
        )
    if args.stats and finished.stats is not None:
        print(finished.stats.summary(), file=sys.stderr)
    return EXIT_OK


# -- conversations ---------------------------------------------------------------------------


def run_conversations(settings: Settings, args: argparse.Namespace) -> int:
    from engines.store import StoreError

    if not args.conversations_command:
        args.conversations_command, args.search, args.json = "list", None, False
    store = command_store(settings)
    if store is None:
        return EXIT_FAIL
    try:
        command = args.conversations_command
        if command == "list":
            return _list(store, args.search or "", args.json)
        conversation = _find(store, args.id)
        if command == "show":
            return _show(store, conversation, args.json, args.all)
        if command == "export":
            return _export(store, conversation, args.json)
        return _rm(store, conversation, args.yes)
    except UsageError as exc:
        err(str(exc))
        return EXIT_USAGE
    except StoreError as exc:
        err(str(exc))
        return EXIT_FAIL
    finally:
        store.close()


def _when(t: float) -> str:
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M")


def _conversation_json(c: Conversation) -> dict[str, Any]:
    return {
        "id": c.id,
        "title": c.title,
        "model": c.model,
        "options": c.options.to_dict(),
        "created_at": datetime.fromtimestamp(c.created_at).isoformat(),
        "updated_at": datetime.fromtimestamp(c.updated_at).isoformat(),
    }


def _list(store: Store, search: str, as_json: bool) -> int:
    rows = store.conversations(search)
    if as_json:
        print(json.dumps({"conversations": [_conversation_json(c) for c in rows]}, indent=2))
        return EXIT_OK
    if not rows:
        print("No conversations" + (f" with {visible(search)!r}." if search else " yet."))
        return EXIT_OK
    width = max(len(str(c.id)) for c in rows)
    for c in rows:
        print(f"{c.id:>{width}}  {_when(c.updated_at)}  {visible(c.model)}  {visible(c.title)}")
    return EXIT_OK


def _show(store: Store, conversation: Conversation, as_json: bool, every: bool) -> int:
    messages = store.all_messages(conversation.id) if every else store.messages(conversation.id)
    if as_json:
        body = _conversation_json(conversation)
        body["messages"] = [
            {
                "id": m.id,
                "parent_id": m.parent_id,
                "role": m.role,
                "content": m.content,
                "status": m.status,
                "model": m.model,
                "error": m.error,
                "stats": m.stats.to_dict() if m.stats else None,
                "versions": store.siblings(m.id),
                "created_at": datetime.fromtimestamp(m.created_at).isoformat(),
            }
            for m in messages
        ]
        print(json.dumps(body, indent=2, ensure_ascii=False))
        return EXIT_OK
    show = visible if sys.stdout.isatty() else (lambda text: text)
    print(f"# {show(conversation.title)}  ({show(conversation.model)})")
    for m in messages:
        versions = store.siblings(m.id)
        tag = f"  [{versions.index(m.id) + 1}/{len(versions)}]" if len(versions) > 1 else ""
        state = f"  ({m.status})" if m.status != "done" else ""
        print(f"\n## {'You' if m.role == 'user' else show(m.model or m.role)}{tag}{state}")
        print(show(m.content))
    return EXIT_OK


def _export(store: Store, conversation: Conversation, as_json: bool) -> int:
    from engines.store import export_markdown

    if as_json:
        return _show(store, conversation, True, False)
    text = export_markdown(conversation, store.messages(conversation.id))
    sys.stdout.write(visible(text) if sys.stdout.isatty() else text)
    return EXIT_OK


def _rm(store: Store, conversation: Conversation, yes: bool) -> int:
    what = f"conversation {conversation.id} ({conversation.title!r})"
    if not yes and not sys.stdin.isatty():
        err(f"not deleting {what}: add --yes to delete without being asked (no terminal)")
        return EXIT_USAGE
    if not yes:
        print(f"Delete {visible(what)} and all its messages? [y/N] ", end="", file=sys.stderr)
        sys.stderr.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            print("Kept it.", file=sys.stderr)
            return EXIT_OK
    store.delete(conversation.id)
    print(f"Deleted {visible(what)}.", file=sys.stderr)
    return EXIT_OK
