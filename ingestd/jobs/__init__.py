"""Jobs the daemon runs on its sinks: database maintenance and the logs retention."""
