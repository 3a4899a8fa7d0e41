"""The ``killswitch`` command, one module per command family. Thin: parse, call the
engine, render, exit with the code. Nothing here imports a provider or a cloud SDK at
start-up: ``--help`` stays fast.

  session.py    options, who acts, the engine on the inventory's store, exit codes
  app.py        the group and main()
  changes.py    plan, revoke, restrict, restore, approve, decline, status
  drift.py      drift (and its heal)
  ops.py        ops list | show | resume
  audit.py      audit list | verify | anchor | export
  state.py      state init | migrate | sync, lock status | break
  runbooks.py   runbook list | validate | show | run | resume
  inventory.py  inventory validate
  providers.py  provider NAME policy (and the aws / kubernetes spellings of it)
  complete.py   what TAB offers, and `completion bash|zsh|fish`
  progress.py   an op's progress: bars on a terminal, lines elsewhere
"""

from killswitch.cli import (  # noqa: F401  (each module registers its commands)
    audit,
    changes,
    drift,
    inventory,
    ops,
    providers,
    runbooks,
    state,
)
from killswitch.cli.app import cli, main
from killswitch.cli.complete import completion

cli.add_command(completion)

__all__ = ["cli", "main"]
