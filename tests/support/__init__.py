"""What the tests share: the ladder command run as a user runs it, private redis-servers,
the processes a command left behind, polling, a headless browser. Nothing is imported
here, so that a child of the fork server imports no more than the module it asks for."""
