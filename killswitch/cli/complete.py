"""Shell completion: what TAB offers for each selector and id (killswitch/completion.py),
and ``killswitch completion bash|zsh|fish``, the script a shell sources to ask for it.

Underneath is click's protocol: the shell runs ``killswitch`` with
``_KILLSWITCH_COMPLETE=bash_complete`` (or ``zsh_complete``, ``fish_complete``) and the
words typed so far. Bash gets a script of our own: bash splits the word being completed
at ``:`` (``-r not:us-``, ``--target aws:aws-prod/…``), so ours sends the line as typed
(``COMP_LINE`` up to ``COMP_POINT``) and answers with what bash will put after the last
``:``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import click
from click.shell_completion import (
    BashComplete,
    CompletionItem,
    add_completion_class,
    get_completion_class,
    split_arg_string,
)

COMPLETE_VAR = "_KILLSWITCH_COMPLETE"
SHELLS = ("bash", "zsh", "fish")
Complete = Callable[[click.Context, click.Parameter, str], list[CompletionItem]]

_BASH = """\
%(complete_func)s() {
    local IFS=$'\\n'
    local response

    response=$(env COMP_WORDS="${COMP_WORDS[*]}" COMP_CWORD=$COMP_CWORD \\
COMP_LINE="$COMP_LINE" COMP_POINT=$COMP_POINT COMP_WORDBREAKS="$COMP_WORDBREAKS" \\
%(complete_var)s=bash_complete $1 2>/dev/null)

    for completion in $response; do
        IFS=',' read type value <<< "$completion"

        if [[ $type == 'dir' ]]; then
            COMPREPLY=()
            compopt -o dirnames
        elif [[ $type == 'file' ]]; then
            COMPREPLY=()
            compopt -o default
        elif [[ $type == 'plain' ]]; then
            COMPREPLY+=("$value")
        fi
    done

    return 0
}

%(complete_func)s_setup() {
    complete -o nosort -F %(complete_func)s %(prog_name)s
}

%(complete_func)s_setup;
"""


class Bash(BashComplete):
    """click's bash completion, told the line as typed rather than bash's split words."""

    source_template = _BASH
    _cut = ""  # what bash keeps of the word being completed (up to its last break)

    def get_completion_args(self) -> tuple[list[str], str]:
        line, point = os.environ.get("COMP_LINE"), os.environ.get("COMP_POINT", "")
        if line is None or not point.isdigit():
            return super().get_completion_args()  # click's own: COMP_WORDS, COMP_CWORD
        typed = line[: int(point)]
        words = split_arg_string(typed)
        incomplete = words.pop() if words and typed and not typed[-1].isspace() else ""
        raw = re.split(r"\s", typed)[-1]
        breaks = set(os.environ.get("COMP_WORDBREAKS", ":=")) - set(" \t\n\"'")
        if not any(quote in raw for quote in "\"'"):
            cut = max((raw.rfind(c) for c in breaks), default=-1)
            self._cut = raw[: cut + 1]
        return words[1:], incomplete

    def format_completion(self, item: CompletionItem[Any]) -> str:
        value = str(item.value)
        if self._cut and value.startswith(self._cut):
            value = value[len(self._cut) :]
        return f"{item.type},{value}"


def register() -> None:
    """Our bash script in place of click's, before click reads the completion request."""
    add_completion_class(Bash, "bash")


def script(shell: str, cli: click.Command) -> str:
    """The script ``shell`` sources to complete ``cli`` (``killswitch``)."""
    register()
    found = get_completion_class(shell)
    assert found is not None
    return str(found(cli, {}, "killswitch", COMPLETE_VAR).source())


# -- what TAB offers ------------------------------------------------------------


def _inventory(ctx: click.Context) -> Path:
    """--inventory as typed after the command, else before it, else the default."""
    from killswitch.inventory import resolve_path

    root = ctx.find_root()
    typed = getattr(root.obj, "inventory_path", None) or root.params.get("inventory_path")
    return resolve_path(typed if isinstance(typed, str) else None)


def _offer(find: Callable[[Path], Iterable[str]], *, store: bool = False) -> Complete:
    """A shell_complete callback offering what ``find`` finds for the inventory. With
    ``store``, ``find`` reads the state store, which may not answer: it is bounded."""

    def complete(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[Any]:
        try:
            from killswitch import completion, logs

            logs.silence()  # a log line would land among the candidates
            path = _inventory(ctx)
            found = completion.bounded(lambda: list(find(path))) if store else list(find(path))
            return [CompletionItem(c) for c in completion.matching(found, incomplete)]
        except Exception:  # a shell completing a word shows no error: no candidates
            return []

    return complete


def _models(path: Path) -> list[str]:
    from killswitch.completion import names

    found = names(path).models
    return ["all", *found] if found else []


def _regions(path: Path) -> list[str]:
    from killswitch.completion import names

    found = names(path).regions
    return ["all", *found] if found else []


def _providers(path: Path) -> tuple[str, ...]:
    from killswitch.completion import names

    return names(path).providers


def _scopes(path: Path) -> tuple[str, ...]:
    from killswitch.completion import names

    return names(path).scopes


def _targets(path: Path) -> list[str]:
    from killswitch.completion import target_ids

    return target_ids(path)


def _all_ops(path: Path) -> list[str]:
    from killswitch.completion import ops

    return ops(path, lambda _op: True)


def _resumable_ops(path: Path) -> list[str]:
    from killswitch.completion import ops, resumable

    return ops(path, resumable)


def _ops_awaiting_approval(path: Path) -> list[str]:
    from killswitch.completion import awaiting_approval, ops

    return ops(path, awaiting_approval)


def _runs(path: Path) -> list[str]:
    from killswitch.completion import run_ids

    return run_ids(path)


models = _offer(_models)
regions = _offer(_regions)
providers = _offer(_providers)
scopes = _offer(_scopes)
targets = _offer(_targets)
any_op = _offer(_all_ops, store=True)
resumable_op = _offer(_resumable_ops, store=True)
op_awaiting_approval = _offer(_ops_awaiting_approval, store=True)
runbook_run = _offer(_runs, store=True)


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the script that makes TAB complete killswitch in SHELL.

    TAB then offers the inventory's models, regions, providers, scopes and target
    ids, and the store's op and run ids. Install it once:

    \b
    bash:  eval "$(killswitch completion bash)"     # in ~/.bashrc (bash 4.4+)
    zsh:   eval "$(killswitch completion zsh)"      # in ~/.zshrc, after compinit
    fish:  killswitch completion fish > ~/.config/fish/completions/killswitch.fish
    """
    click.echo(script(shell, ctx.find_root().command), nl=False)
