"""Shared runtime every Tashi service imports: config, server bootstrap, auth, client."""
