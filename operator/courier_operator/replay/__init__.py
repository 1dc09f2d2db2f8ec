"""A ReplayRequest: the Job that replays dead letters once, and how its progress is reported."""
