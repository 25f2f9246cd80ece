"""What ``agent_worker.py`` is built from: the task's git workspace, its log file, the leash on a
CLI's process group and the container's health file."""
