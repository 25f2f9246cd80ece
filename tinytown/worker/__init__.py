"""What ``agent_worker.py`` is built from; the lifecycle itself (register, idle read, claim, run,
finish, drain, exit) stays in that one file.

- ``task_run``: one claimed task's run — its workspace, its CLI started and waited for, its final
  state; ``outcome``: how a run ended and the inbox it carried.
- ``cli_process``: the CLI's process group (signal it, stop it with grace, feed it the prompt);
  ``orphan_cli``: the leash, and stopping a CLI a dead worker left running.
- ``heartbeat``: the heartbeat thread; ``controls``: the control check, nudges and signals.
- ``retry``: calls to Redis that outlast a restart; ``dead_workers``: an idle worker's share in
  recovering dead workers' work.
- ``workspace`` (git), ``tasklog`` (the task's log file), ``health_file`` (a container's proof
  of life).
"""
