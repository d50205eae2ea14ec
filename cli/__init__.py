"""The `tashi` command: Tashi's command names over the typed cluster client."""
