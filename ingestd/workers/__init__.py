"""The process model: the supervisor, its worker processes, and the cgroup limits they share."""
