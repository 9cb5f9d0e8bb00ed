"""``llm-pessoal completion bash|zsh``: a completion script made from the parser itself,
so it always knows every command and option."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    completion = sub.add_parser(
        "completion",
        help="print a shell completion script",
        description='Print a completion script. Bash: eval "$(llm-pessoal completion bash)" '
        'in ~/.bashrc. Zsh: eval "$(llm-pessoal completion zsh)" in ~/.zshrc.',
    )
    completion.add_argument("shell", choices=("bash", "zsh"))


def _options(parser: argparse.ArgumentParser) -> list[str]:
    return sorted(
        opt for action in parser._actions for opt in action.option_strings if opt.startswith("--")
    )


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    commands = _subparsers(parser)
    cases = []
    for name, sub in commands.items():
        words = _options(sub) + list(_subparsers(sub))
        cases.append(f'        {name}) opts="{" ".join(words)}" ;;')
    top = " ".join(_options(parser) + list(commands))
    body = "\n".join(cases)
    bash = f"""_llm_pessoal() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}" opts
    case "$prev" in
        --screen) COMPREPLY=($(compgen -W "chat image monitor" -- "$cur")); return ;;
        --config|--out|--model) COMPREPLY=($(compgen -f -- "$cur")); return ;;
    esac
    case "${{COMP_WORDS[1]}}" in
{body}
        *) opts="{top}" ;;
    esac
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
}}
complete -o default -F _llm_pessoal llm-pessoal
"""
    if shell == "zsh":
        return "autoload -U +X bashcompinit && bashcompinit\n" + bash
    return bash
