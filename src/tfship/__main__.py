from tfship.cli import entry

raise SystemExit(entry())
